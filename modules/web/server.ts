/**
 * The fastify server: the route table with zod validation, one auth gate on the matched route
 * (every route needs the token unless it is declared public), error mapping (framework and
 * client errors included, always in the documented `{error:{code,message}}` shape), 503 while
 * stopping, static dashboard files, and the WebSocket upgrade.
 */
import Fastify, { type FastifyInstance, type FastifyReply, type FastifyRequest } from 'fastify';
import type { z } from 'zod';
import { errorCode, HubError } from '../../core/errors.js';
import type { Logger } from '../../core/log.js';
import type { AuditTrail } from '../audit/contract/trail.js';
import { CallSignals } from '../shared/interface-kit/call-signals.js';
import { closeWithGrace } from '../shared/interface-kit/close-with-grace.js';
import { assertDeclared, forbiddenAction, grants, isAccess } from '../shared/interface-kit/permissions.js';
import type { Access, Principal, TokenGate } from '../shared/interface-kit/token-gate.js';
import { admitRequest, type RouteAccessConfig } from './auth.js';
import type { WebConfig } from './config.js';
import { type ErrorBody, fromZod, toHttpError } from './errors.js';
import type { WebMetrics } from './metrics.js';
import type { MqttWsGate } from './mqtt-ws.js';
import { Answer, type AnyRoute } from './routes.js';
import { DASHBOARD_CSP, type StaticFiles } from './static.js';
import { WS_PATH, type WsHub } from './ws.js';

export interface ServerDeps {
  cfg: WebConfig;
  log: Logger;
  routes: readonly AnyRoute[];
  gate: TokenGate;
  metrics: WebMetrics;
  ws: WsHub;
  /** MQTT over WebSocket (upgrades on cfg.mqtt_ws_path), when on. */
  mqttWs?: MqttWsGate;
  statics: StaticFiles;
  openapi: () => unknown;
  /** Aborted once the module begins to stop: new requests get 503, waits end early. */
  stopping: AbortSignal;
  /** Writes the audit record of a route that declares `audit` (README "Audit trail"). */
  trail: AuditTrail;
}

/**
 * The header gmq-hub's CLI sends on its calls, so the audit trail says `cli` rather than `rest`.
 * A caller's own declaration, not a credential: who acted is the token, whatever it says here.
 */
export const CLIENT_HEADER = 'x-gmq-client';

declare module 'fastify' {
  interface FastifyRequest {
    /** Who the token gate admitted (null when it refused, or before the onRequest hook ran). */
    principal: Principal | null;
  }
}

/** Route config: who may call it (permissions.ts; auth.ts `admitRequest`). Every route declares one. */
const access = (a: Access): RouteAccessConfig => ({ access: a });

const TOKEN_REQUIRED = 'a valid bearer token is required (Authorization: Bearer <token>)';

/** The error code a response carried, kept on the request so onResponse can count refusals by code. */
const refusedWith = new WeakMap<object, string>();

function sendError(reply: FastifyReply, status: number, code: string, message: string, field?: string) {
  refusedWith.set(reply.request, code);
  const body: ErrorBody = { error: { code, message, ...(field ? { field } : {}) } };
  return reply.code(status).type('application/json; charset=utf-8').send(body);
}

/**
 * A request line or header block node's parser refused (raw control bytes in the path, a bad
 * header, …): answered in the documented error shape instead of fastify's own, and counted.
 * No route and no token are involved: nothing but this 400 is ever sent.
 */
function clientErrorBody(code: string, message: string): string {
  return JSON.stringify({ error: { code, message } } satisfies ErrorBody);
}

export function buildServer(d: ServerDeps): FastifyInstance {
  const app = Fastify({
    logger: false,
    bodyLimit: d.cfg.body_limit_bytes,
    // a 128-byte project id, percent-encoded, must reach the handler to get its 400
    routerOptions: { maxParamLength: 1024 },
    // our onRequest hook answers 503 HOST_ERR_STOPPING in the usual error shape while closing
    return503OnClosing: false,
    // Errors the router raises before any route or hook runs (a path that is not valid
    // percent-encoding, a path parameter past maxParamLength): the documented error body, and
    // counted like every other refusal.
    frameworkErrors: (err, req, reply) => {
      // no route was matched: the gate's fail-closed answer comes first, as for a 404
      if (!admitRequest(d.gate, null, req.raw)) {
        d.metrics.httpRefusals.inc({ code: 'AUTH_ERR_TOKEN' });
        d.metrics.httpRequests.inc({ method: req.method, route: 'unmatched', status: '401' });
        return (reply as FastifyReply)
          .code(401)
          .header('www-authenticate', 'Bearer')
          .type('application/json; charset=utf-8')
          .send({ error: { code: 'AUTH_ERR_TOKEN', message: TOKEN_REQUIRED } } satisfies ErrorBody);
      }
      const tooLong = err.code === 'FST_ERR_MAX_PARAM_LENGTH';
      d.metrics.httpRefusals.inc({ code: 'WEB_ERR_INVALID' });
      d.metrics.httpRequests.inc({ method: req.method, route: 'unmatched', status: '400' });
      const message = tooLong
        ? '(path): a path segment is longer than 1024 characters'
        : '(path): not a valid percent-encoded URL path';
      return (reply as FastifyReply)
        .code(400)
        .type('application/json; charset=utf-8')
        .send({ error: { code: 'WEB_ERR_INVALID', message, field: '(path)' } } satisfies ErrorBody);
    },
    clientErrorHandler(err, socket) {
      const e = err as Error & { code?: string };
      if (e.code === 'ECONNRESET' || socket.destroyed || !socket.writable) {
        socket.destroy();
        return;
      }
      const big = e.code === 'HPE_HEADER_OVERFLOW';
      const status = big ? 431 : 400;
      const code = 'WEB_ERR_INVALID';
      d.metrics.httpRefusals.inc({ code });
      d.metrics.httpRequests.inc({ method: 'unknown', route: 'unparsed', status: String(status) });
      const body = clientErrorBody(code, big ? '(headers): too large' : '(request): not a valid HTTP request');
      socket.end(
        `HTTP/1.1 ${status} ${big ? 'Request Header Fields Too Large' : 'Bad Request'}\r\nConnection: close\r\n` +
          `Content-Type: application/json; charset=utf-8\r\nContent-Length: ${Buffer.byteLength(body)}\r\n\r\n${body}`,
      );
    },
  });

  // JSON only: a text/plain POST is what a cross-site form can send without a CORS preflight.
  // An empty body with a JSON content type is "no body" (fetch() sends one for bodiless POSTs);
  // anything else goes through fastify's parser, which refuses __proto__ / constructor poisoning.
  const jsonParser = app.getDefaultJsonParser('error', 'error');
  app.removeAllContentTypeParsers();
  app.addContentTypeParser('application/json', { parseAs: 'string' }, (req, body, done) => {
    const text = typeof body === 'string' ? body : body.toString('utf8');
    if (text.trim() === '') return done(null, undefined);
    jsonParser(req, text, done);
  });

  // A route without a valid access declaration fails the start (so none can go unguarded);
  // fastify's own HEAD twins of GET routes carry their GET's config.
  const undeclared: string[] = [];
  app.addHook('onRoute', (opts) => {
    const cfg = opts.config as RouteAccessConfig | undefined;
    if (!isAccess(cfg?.access)) undeclared.push(`${opts.method} ${opts.url}`);
  });
  app.addHook('onReady', async () => {
    assertDeclared('web (REST)', undeclared, () => undefined);
  });

  app.decorateRequest('principal', null);
  app.addHook('onRequest', async (req, reply) => {
    (req as { t0?: number }).t0 = performance.now();
    if (d.stopping.aborted) {
      reply.header('connection', 'close');
      return sendError(reply, 503, 'HOST_ERR_STOPPING', 'the hub is stopping; try again shortly');
    }
    // The one auth decision: on the route the router matched (decoded path), declared public or
    // not on the route itself; no route matched (404) means the token is needed too.
    req.principal = admitRequest(d.gate, req.is404 ? null : (req.routeOptions.config as RouteAccessConfig), req.raw);
    if (!req.principal) {
      reply.header('www-authenticate', 'Bearer');
      return sendError(reply, 401, 'AUTH_ERR_TOKEN', TOKEN_REQUIRED);
    }
    // Then the role: a matched route's declared action must be granted (a 404 needs only the token).
    if (!req.is404) {
      const need = (req.routeOptions.config as RouteAccessConfig).access;
      if (!isAccess(need) || !grants(req.principal.role, need)) {
        const err = forbiddenAction(
          req.principal,
          isAccess(need) ? need : 'admin',
          `${req.method} ${req.routeOptions.url}`,
        );
        logForbidden(d, req, err.message);
        return sendError(reply, 403, err.code, err.message);
      }
    }
  });

  app.addHook('onResponse', async (req, reply) => {
    const route = req.routeOptions.url ?? 'unmatched';
    const status = reply.statusCode;
    d.metrics.httpRequests.inc({ method: req.method, route, status: String(status) });
    const refused = refusedWith.get(req);
    const t0 = (req as { t0?: number }).t0;
    const ms = t0 === undefined ? 0 : performance.now() - t0;
    if (refused && status >= 400 && status < 500) {
      d.metrics.httpRefusals.inc({ code: refused });
      // a caller's mistake (unknown project, project offline, invalid body) is an answer, not a
      // failure: one info line with its code, never a stack, never the body
      d.log.info(
        { method: req.method, route, status, code: refused, token_id: req.principal?.token_id },
        'request refused',
      );
    }
    d.metrics.httpDuration.observe({ route }, ms / 1000);
    d.log.debug(
      { method: req.method, route, status, ms: Math.round(ms * 10) / 10, token_id: req.principal?.token_id },
      'http request',
    );
  });

  app.setErrorHandler((err: Error & { code?: string; statusCode?: number }, req, reply) => {
    const fst = typeof err.code === 'string' && err.code.startsWith('FST_') ? err.code : undefined;
    if (fst === 'FST_ERR_CTP_BODY_TOO_LARGE') {
      return sendError(reply, 413, 'WEB_ERR_BODY_TOO_LARGE', `body larger than ${d.cfg.body_limit_bytes} bytes`);
    }
    if (fst === 'FST_ERR_CTP_INVALID_MEDIA_TYPE') {
      return sendError(reply, 415, 'WEB_ERR_MEDIA_TYPE', 'bodies must be JSON (Content-Type: application/json)');
    }
    if ((fst || err instanceof SyntaxError) && err.statusCode && err.statusCode >= 400 && err.statusCode < 500) {
      return sendError(reply, err.statusCode, 'WEB_ERR_INVALID', `(body): ${err.message}`, '(body)');
    }
    const { status, body, internal, headers } = toHttpError(err);
    refusedWith.set(req, body.error.code);
    if (body.error.code === 'AUTH_ERR_FORBIDDEN') logForbidden(d, req, body.error.message);
    if (internal) {
      d.log.warn({ err, method: req.method, route: req.routeOptions.url, status }, 'request failed');
    }
    return reply.code(status).headers(headers).type('application/json; charset=utf-8').send(body);
  });

  app.setNotFoundHandler((req, reply) =>
    sendError(reply, 404, 'WEB_ERR_NOT_FOUND', `no route ${req.method} ${shown(req.url.split('?')[0])}`),
  );

  // the requests' "stop waiting" signals, all ended by one listener when the module stops
  const calls = new CallSignals(d.stopping);
  for (const r of d.routes) {
    app.route({
      method: r.method,
      url: r.url,
      config: access(r.access),
      handler: (req, reply) => handle(d, calls, r, req, reply),
    });
  }

  app.get('/metrics', { config: access('read') }, async (_req, reply) => {
    const { contentType, text } = await d.metrics.render();
    return reply.type(contentType).send(text);
  });

  let openapi: unknown;
  app.get('/openapi.json', { config: access('public') }, async (_req, reply) => {
    openapi ??= d.openapi();
    return reply.type('application/json; charset=utf-8').send(openapi);
  });

  // The WebSocket path answered as plain HTTP (no Upgrade header): the upgrade itself never
  // reaches fastify (see ws.ts, which checks the token on its own exact path).
  app.get(WS_PATH, { config: access('read') }, async (_req, reply) =>
    sendError(reply, 426, 'WEB_ERR_UPGRADE_REQUIRED', `${WS_PATH} is a WebSocket: send an Upgrade request`),
  );

  // The dashboard's files, each a public route (the page asks for the token and sends it on its
  // API calls). No catch-all: any other path is the not-found handler's, behind the token.
  // A file never shadows the API or another route (a stray openapi.json in the directory).
  const taken = new Set([...d.routes.filter((r) => r.method === 'GET').map((r) => r.url), '/metrics', '/openapi.json']);
  for (const url of d.statics.list()) {
    if (taken.has(url) || url === '/api' || url.startsWith('/api/')) continue;
    app.get(url, { config: access('public') }, async (_req, reply) => {
      const file = await d.statics.get(url);
      if (!file) return sendError(reply, 404, 'WEB_ERR_NOT_FOUND', `no file ${shown(url)}`);
      return reply
        .header('content-security-policy', DASHBOARD_CSP)
        .header('x-content-type-options', 'nosniff')
        .header('referrer-policy', 'no-referrer')
        .header('cache-control', 'no-cache')
        .type(file.type)
        .send(file.body);
    });
  }

  app.server.on('upgrade', (req, socket, head) => {
    if (d.mqttWs && d.cfg.mqtt_ws_path !== null && (req.url ?? '').split('?')[0] === d.cfg.mqtt_ws_path) {
      d.mqttWs.onUpgrade(req, socket, head);
      return;
    }
    d.ws.onUpgrade(req, socket, head);
  });
  return app;
}

/**
 * A refusal by role or project: a caller's mistake, so info (not an error), with who asked
 * (token_id and role, never the token) and what.
 */
function logForbidden(d: ServerDeps, req: FastifyRequest, message: string): void {
  d.log.info(
    {
      token_id: req.principal?.token_id,
      role: req.principal?.role,
      method: req.method,
      route: req.routeOptions.url,
      code: 'AUTH_ERR_FORBIDDEN',
    },
    message,
  );
}

/** A path fragment for a message: bounded, and JSON-quoted so control characters stay visible. */
function shown(s: string): string {
  const t = s.length > 200 ? `${s.slice(0, 197)}...` : s;
  return JSON.stringify(t).slice(1, -1);
}

async function handle(d: ServerDeps, calls: CallSignals, r: AnyRoute, req: FastifyRequest, reply: FastifyReply) {
  const params = r.params ? parse(r, r.params, req.params, 'params') : undefined;
  const query = r.query ? parse(r, r.query, req.query ?? {}, 'query') : undefined;
  let body: unknown;
  if (r.body && !(r.bodyOptional && req.body === undefined)) body = parse(r, r.body, req.body, 'body');
  const headers = r.headers ? parse(r, r.headers, req.headers, 'headers') : undefined;

  // One signal for "stop waiting": the client went away, or the module is stopping. Made when a
  // handler first reads it (the sync send, as it starts): the others answer without waiting, and
  // an AbortController with its listener was a cost on every call (bench `async`).
  let ac: AbortController | undefined;
  const signal = (): AbortSignal => {
    if (ac) return ac.signal;
    const mine = calls.open();
    ac = mine;
    if (reply.raw.destroyed && !reply.raw.writableFinished) {
      // the client left before the handler asked
      calls.end(mine);
      mine.abort();
    } else {
      reply.raw.once('close', () => {
        calls.end(mine);
        if (!reply.raw.writableFinished) mine.abort();
      });
    }
    return mine.signal;
  };

  const input = {
    params,
    query,
    body,
    headers,
    get signal(): AbortSignal {
      return signal();
    },
    principal: req.principal!,
    // a handler that declares its action done before answering (a sync send, accepted)
    done: (answer: unknown): void => action?.done(answer),
  };
  const action = r.audit
    ? d.trail.action(
        r.audit,
        req.principal ?? { token_id: 'unknown', role: 'unknown' },
        req.headers[CLIENT_HEADER] === 'cli' ? 'cli' : 'rest',
        input,
      )
    : undefined;
  let out: unknown;
  try {
    out = await r.handler(input);
  } catch (err) {
    await action?.failed(errorCode(err) ?? 'WEB_ERR_INTERNAL');
    throw err;
  }
  // done: answered only once its record is committed (AUDIT_ERR_UNAVAILABLE otherwise)
  await action?.answered(out, outcomeOf(out));
  if (out instanceof Answer) {
    if (out.after) reply.raw.once('finish', out.after);
    if (out.headers) reply.headers(out.headers);
    return reply.code(out.status).type('application/json; charset=utf-8').send(out.body);
  }
  return reply
    .code(r.status ?? 200)
    .type('application/json; charset=utf-8')
    .send(out);
}

/** `ok`, or the code of an error answer a handler chose itself (a sync send's 504 CMD_ERR_TIMEOUT). */
function outcomeOf(out: unknown): string {
  if (!(out instanceof Answer) || out.status < 400) return 'ok';
  const code = (out.body as { error?: { code?: unknown } } | null)?.error?.code;
  return typeof code === 'string' ? code : `HTTP_${out.status}`;
}

function parse(
  r: AnyRoute,
  schema: z.ZodType,
  value: unknown,
  where: 'body' | 'query' | 'params' | 'headers',
): unknown {
  const res = schema.safeParse(value);
  if (res.success) return res.data;
  throw fromZod(r.invalid, res.error, where);
}

/** Starts listening; a taken port is one clear error naming the port and its variable. */
export async function listen(
  app: FastifyInstance,
  cfg: WebConfig,
  host: string,
): Promise<{ host: string; port: number }> {
  try {
    await app.listen({ port: cfg.port, host, listenTextResolver: () => '' });
  } catch (err) {
    await app.close().catch(() => undefined);
    const code = (err as { code?: string }).code;
    if (code === 'EADDRINUSE') {
      throw new HubError('HOST_ERR_PORT_IN_USE', `port ${cfg.port} is in use (set ${cfg.port_env})`, {
        port: cfg.port,
        env: cfg.port_env,
      });
    }
    throw err;
  }
  const addr = app.server.address();
  if (!addr || typeof addr === 'string') return { host, port: cfg.port };
  return { host: addr.address, port: addr.port };
}

/** Closes the server: open requests get `graceMs` to finish, then every connection is cut. */
export async function closeServer(app: FastifyInstance, graceMs: number): Promise<void> {
  await closeWithGrace(
    graceMs,
    () => app.close(),
    () => app.server.closeAllConnections(),
  );
}
