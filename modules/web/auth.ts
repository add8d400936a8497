/**
 * The web module's side of the token gate (the gate itself is the interface kit's, shared with
 * grpc): where a token is found in an HTTP request, and which route a request is judged on.
 */
import type { IncomingMessage } from 'node:http';
import { type Access, bearerToken, type Principal, type TokenGate } from '../shared/interface-kit/token-gate.js';

/**
 * What the gate needs of a route: fastify's `request.routeOptions.config`, or null when no route
 * matched. Every route declares `access` (server.ts refuses to start otherwise).
 */
export interface RouteAccessConfig {
  access?: Access;
}

/** `Authorization: Bearer <token>`, or (WebSocket only: browsers cannot set headers there) `?token=`. */
export function presentedToken(req: IncomingMessage, allowQuery: boolean): string | null {
  const fromHeader = bearerToken(req.headers.authorization);
  if (fromHeader !== null) return fromHeader;
  if (allowQuery && req.url) {
    const q = req.url.indexOf('?');
    if (q >= 0) return new URLSearchParams(req.url.slice(q + 1)).get('token');
  }
  return null;
}

/**
 * The one auth decision of the HTTP server. It is taken on the route the router matched (the
 * router decodes the path: `/%61pi/...` is `/api/...` here), never on the raw URL text, so no
 * spelling of a path can reach a protected handler without the token. A route that declares
 * nothing, and a request the router matched to no route at all (404, bad URL), needs the token:
 * the gate fails closed. Null: refuse with 401.
 */
export function admitRequest(
  gate: TokenGate,
  route: RouteAccessConfig | null | undefined,
  req: IncomingMessage,
): Principal | null {
  return gate.admit(presentedToken(req, false), route?.access === 'public' ? 'public' : 'read');
}
