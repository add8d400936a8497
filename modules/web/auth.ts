import { createHash, timingSafeEqual } from 'node:crypto';
import type { IncomingMessage } from 'node:http';

const digest = (s: string) => createHash('sha256').update(s, 'utf8').digest();

/**
 * Bearer-token check. Tokens are compared as SHA-256 digests with timingSafeEqual, so neither
 * the content nor the length of a configured token leaks through response timing; every
 * configured token is compared, matched or not.
 */
export class TokenGate {
  private readonly digests: Buffer[];

  constructor(tokens: readonly string[]) {
    this.digests = tokens.map(digest);
  }

  get enabled(): boolean {
    return this.digests.length > 0;
  }

  check(candidate: string | undefined | null): boolean {
    if (!this.enabled) return true;
    if (!candidate) return false;
    const d = digest(candidate);
    let ok = false;
    for (const t of this.digests) ok = timingSafeEqual(t, d) || ok;
    return ok;
  }

  /** `Authorization: Bearer <token>`, or (WebSocket only: browsers cannot set headers there) `?token=`. */
  fromRequest(req: IncomingMessage, allowQuery: boolean): string | null {
    const h = req.headers.authorization;
    if (typeof h === 'string') {
      const m = /^Bearer\s+(.+)$/i.exec(h.trim());
      if (m) return m[1].trim();
    }
    if (allowQuery && req.url) {
      const q = req.url.indexOf('?');
      if (q >= 0) return new URLSearchParams(req.url.slice(q + 1)).get('token');
    }
    return null;
  }
}

const LOOPBACK = new Set(['127.0.0.1', '::1', 'localhost', '::ffff:127.0.0.1']);

export function isLoopback(host: string): boolean {
  return LOOPBACK.has(host) || /^127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(host);
}

/**
 * Who may call a route, declared on the route itself (fastify route `config.access`). Only
 * `public` routes answer without the token; a route that declares nothing, and any request the
 * router matched to no route at all (404, bad URL), is `token`: the gate fails closed.
 */
export type RouteAccess = 'public' | 'token';

/** What the gate needs of a route: fastify's `request.routeOptions.config`, or null when no route matched. */
export interface RouteAccessConfig {
  access?: RouteAccess;
}

/**
 * The one auth decision of the HTTP server. It is taken on the route the router matched (the
 * router decodes the path: `/%61pi/...` is `/api/...` here), never on the raw URL text, so no
 * spelling of a path can reach a protected handler without the token.
 */
export function mayPass(gate: TokenGate, route: RouteAccessConfig | null | undefined, req: IncomingMessage): boolean {
  if (!gate.enabled || route?.access === 'public') return true;
  return gate.check(gate.fromRequest(req, false));
}
