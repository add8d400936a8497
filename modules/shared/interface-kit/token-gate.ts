import { createHash, timingSafeEqual } from 'node:crypto';

import { ProjectScope } from '../project-scope.js';
import type { Access, Role } from './permissions.js';

export type { Access, Role } from './permissions.js';

/**
 * Who is calling, as the gate admitted them. `token_id` names the configured token that matched
 * (its place in the settings: `tokens[0]`, `token`), never the token itself, so it can be logged;
 * `loopback` when no token is configured (the API is open on loopback only) and `public` on a
 * route or method declared public. `role` says which actions it may take and `projects` which
 * projects it sees (null: all); see permissions.ts.
 */
export interface Principal {
  readonly token_id: string;
  readonly role: Role;
  readonly projects: ProjectScope | null;
}

/** A configured token, the name it is known by in logs and principals, its role and projects. */
export interface TokenEntry {
  readonly id: string;
  readonly token: string;
  readonly role: Role;
  /** Project ids or globs the token is limited to; null: every project. */
  readonly projects: readonly string[] | null;
}

const LOOPBACK_PRINCIPAL: Principal = Object.freeze({ token_id: 'loopback', role: 'admin', projects: null });
const PUBLIC_PRINCIPAL: Principal = Object.freeze({ token_id: 'public', role: 'admin', projects: null });

const digest = (s: string) => createHash('sha256').update(s, 'utf8').digest();

interface Known {
  readonly digest: Buffer;
  readonly principal: Principal;
}

/**
 * The bearer-token gate of the interface modules (web: REST and WebSocket; grpc). Tokens are
 * compared as SHA-256 digests with timingSafeEqual, so neither the content nor the length of a
 * configured token leaks through response timing; every configured token is compared, matched or
 * not. Without a token configured every caller is admitted: the modules then listen on loopback
 * only (listen-host.ts), which is what makes that safe.
 *
 * The table can be swapped in place (`replace`, on a config edit of the tokens only): open
 * WebSocket and gRPC streams stay connected, and `recheck` tells each what its token may do now.
 *
 * @example
 *   const gate = new TokenGate(tokenEntries(cfg));
 *   const who = gate.admit(bearerToken(req.headers.authorization), route.access);
 *   if (!who) return unauthorized();
 */
export class TokenGate {
  private known: readonly Known[] = [];
  /** The digest each admitted principal was matched by (never the token), for `recheck`. */
  private digests = new WeakMap<Principal, Buffer>();
  private readonly listeners = new Set<() => void>();

  constructor(tokens: readonly TokenEntry[]) {
    this.known = table(tokens);
  }

  /** Whether any token is configured (otherwise the API is open, on loopback only). */
  get enabled(): boolean {
    return this.known.length > 0;
  }

  /**
   * Swaps the token table. Whether any token is configured must not change (that moves the
   * listen address: the module restarts instead); callers check `enabled` first. Listeners run
   * after the swap (streams re-check their principals).
   */
  replace(tokens: readonly TokenEntry[]): void {
    const next = table(tokens);
    if (next.length > 0 !== this.enabled) throw new Error('TokenGate.replace cannot turn the token check on or off');
    this.known = next;
    for (const l of this.listeners) l();
  }

  /** Runs `fn` after every `replace`; returns the unsubscribe. */
  onChange(fn: () => void): () => void {
    this.listeners.add(fn);
    return () => this.listeners.delete(fn);
  }

  /** The principal of a presented token, or null when it matches none (or none was presented). */
  authenticate(presented: string | null | undefined): Principal | null {
    if (!this.enabled) return LOOPBACK_PRINCIPAL;
    if (!presented) return null;
    return this.byDigest(digest(presented));
  }

  /**
   * What a principal this gate admitted earlier is now, after a `replace`: the same object when
   * its token's entry did not change, a new one when its role or projects did, null when its token
   * is no longer configured. Principals the gate did not match (loopback, public) are returned as is.
   */
  recheck(p: Principal): Principal | null {
    const d = this.digests.get(p);
    if (!d) return p;
    const now = this.byDigest(d);
    if (now === null) return null;
    return sameGrant(now, p) ? p : now;
  }

  private byDigest(d: Buffer): Principal | null {
    let match: Principal | null = null;
    for (const k of this.known) {
      // no early exit: the time taken does not say which token (or whether one) matched
      if (timingSafeEqual(k.digest, d) && match === null) match = k.principal;
    }
    if (match) this.digests.set(match, d);
    return match;
  }

  /**
   * The one admission decision: a public operation is answered without looking at the token;
   * any other needs a configured token (unless none is configured). Null means "refuse: 401 /
   * UNAUTHENTICATED". Whether the principal's role grants the operation is the caller's next
   * step (permissions.ts `requireAction`).
   */
  admit(presented: string | null | undefined, access: Access = 'read'): Principal | null {
    if (access === 'public') return PUBLIC_PRINCIPAL;
    return this.authenticate(presented);
  }
}

function table(tokens: readonly TokenEntry[]): Known[] {
  return tokens.map((t) => ({
    digest: digest(t.token),
    principal: Object.freeze({
      token_id: t.id,
      role: t.role,
      projects: t.projects === null ? null : new ProjectScope(t.projects),
    }),
  }));
}

function sameGrant(a: Principal, b: Principal): boolean {
  if (a.token_id !== b.token_id || a.role !== b.role) return false;
  const pa = a.projects?.patterns;
  const pb = b.projects?.patterns;
  if (pa === undefined || pb === undefined) return pa === pb;
  return pa.length === pb.length && pa.every((x, i) => x === pb[i]);
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
