import { createHash, timingSafeEqual } from 'node:crypto';

/** What a caller may do. Every principal is `admin` until roles are added (issue 14). */
export type Role = 'admin';

/**
 * Who is calling, as the gate admitted them. `token_id` names the configured token that matched
 * (its place in the settings: `tokens[0]`, `token`), never the token itself, so it can be logged;
 * `loopback` when no token is configured (the API is open on loopback only) and `public` on a
 * route or method declared public.
 */
export interface Principal {
  readonly token_id: string;
  readonly role: Role;
}

/**
 * Who may call an operation, declared on the operation itself (a fastify route's `config.access`;
 * every gRPC ExchangeHub method is `token`). Only `public` answers without the token.
 */
export type Access = 'public' | 'token';

/** A configured token and the name it is known by in logs and principals. */
export interface TokenEntry {
  readonly id: string;
  readonly token: string;
}

const LOOPBACK_PRINCIPAL: Principal = Object.freeze({ token_id: 'loopback', role: 'admin' });
const PUBLIC_PRINCIPAL: Principal = Object.freeze({ token_id: 'public', role: 'admin' });

const digest = (s: string) => createHash('sha256').update(s, 'utf8').digest();

/**
 * The bearer-token gate of the interface modules (web: REST and WebSocket; grpc). Tokens are
 * compared as SHA-256 digests with timingSafeEqual, so neither the content nor the length of a
 * configured token leaks through response timing; every configured token is compared, matched or
 * not. Without a token configured every caller is admitted: the modules then listen on loopback
 * only (listen-host.ts), which is what makes that safe.
 *
 * @example
 *   const gate = new TokenGate(tokenEntries(cfg));
 *   const who = gate.admit(bearerToken(req.headers.authorization), route.access);
 *   if (!who) return unauthorized();
 */
export class TokenGate {
  private readonly known: ReadonlyArray<{ id: string; digest: Buffer }>;

  // A changed token list restarts the module that holds the gate (config reload): no swap here.
  constructor(tokens: readonly TokenEntry[]) {
    this.known = tokens.map((t) => ({ id: t.id, digest: digest(t.token) }));
  }

  /** Whether any token is configured (otherwise the API is open, on loopback only). */
  get enabled(): boolean {
    return this.known.length > 0;
  }

  /** The principal of a presented token, or null when it matches none (or none was presented). */
  authenticate(presented: string | null | undefined): Principal | null {
    if (!this.enabled) return LOOPBACK_PRINCIPAL;
    if (!presented) return null;
    const d = digest(presented);
    let match: string | null = null;
    for (const k of this.known) {
      // no early exit: the time taken does not say which token (or whether one) matched
      if (timingSafeEqual(k.digest, d) && match === null) match = k.id;
    }
    return match === null ? null : { token_id: match, role: 'admin' };
  }

  /**
   * The one admission decision: a public operation is answered without looking at the token;
   * any other needs a configured token (unless none is configured). Null means "refuse: 401 /
   * UNAUTHENTICATED".
   */
  admit(presented: string | null | undefined, access: Access = 'token'): Principal | null {
    if (access === 'public') return PUBLIC_PRINCIPAL;
    return this.authenticate(presented);
  }
}

/**
 * The token of an `Authorization: Bearer <token>` header (HTTP) or metadata value (gRPC); null for
 * anything else. Surrounding whitespace is not part of the token.
 */
export function bearerToken(header: unknown): string | null {
  if (typeof header !== 'string') return null;
  const m = /^Bearer\s+(.+)$/i.exec(header.trim());
  return m ? m[1].trim() : null;
}
