/**
 * The fastify server: the route table with zod validation, token auth on /api and /metrics,
 * error mapping, 503 while stopping, static dashboard files, and the WebSocket upgrade.
 */
import Fastify, { type FastifyInstance, type FastifyReply, type FastifyRequest } from 'fastify';
import type { z } from 'zod';
import { HubError } from '../../core/errors.js';
import type { Logger } from '../../core/log.js';
import type { TokenGate } from './auth.js';
import type { WebConfig } from './config.js';
import { type ErrorBody, fromZod, toHttpError } from './errors.js';
import type { WebMetrics } from './metrics.js';
import type { MqttWsGate } from './mqtt-ws.js';
import { Answer, type AnyRoute, API } from './routes.js';
import { DASHBOARD_CSP, type StaticFiles } from './static.js';
import type { WsHub } from './ws.js';

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
}

const needsToken = (path: string) => path === '/api' || path.startsWith('/api/') || path === '/metrics';

function sendError(reply: FastifyReply, status: number, code: string, message: string, field?: string) {
  const body: ErrorBody = { error: { code, message, ...(field ? { field } : {}) } };
  return reply.code(status).type('application/json; charset=utf-8').send(body);
}

export function buildServer(d: ServerDeps): FastifyInstance {
  const app = Fastify({
    logger: false,
    bodyLimit: d.cfg.body_limit_bytes,
    // a 128-byte project id, percent-encoded, must reach the handler to get its 400
    routerOptions: { maxParamLength: 1024 },
    // our onRequest hook answers 503 HOST_ERR_STOPPING in the usual error shape while closing
    return503OnClosing: false,
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

  app.addHook('onRequest', async (req, reply) => {
    (req as { t0?: number }).t0 = performance.now();
    if (d.stopping.aborted) {
      reply.header('connection', 'close');
      return sendError(reply, 503, 'HOST_ERR_STOPPING', 'the hub is stopping; try again shortly');
    }
    const path = req.url.split('?')[0];
    if (needsToken(path) && !d.gate.check(d.gate.fromRequest(req.raw, false))) {
      reply.header('www-authenticate', 'Bearer');
      return sendError(
        reply,
        401,
        'AUTH_ERR_TOKEN',
        'a valid bearer token is required (Authorization: Bearer <token>)',
      );
    }
  });

  app.addHook('onResponse', async (req, reply) => {
    const route = req.routeOptions.url ?? 'unmatched';
    const status = reply.statusCode;
    d.metrics.httpRequests.inc({ method: req.method, route, status: String(status) });
    const t0 = (req as { t0?: number }).t0;
    const ms = t0 === undefined ? 0 : performance.now() - t0;
    d.metrics.httpDuration.observe({ route }, ms / 1000);
    d.log.debug({ method: req.method, route, status, ms: Math.round(ms * 10) / 10 }, 'http request');
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
    const { status, body, internal } = toHttpError(err);
    if (internal) {
      d.log.warn({ err, method: req.method, route: req.routeOptions.url, status }, 'request failed');
    }
    return reply.code(status).type('application/json; charset=utf-8').send(body);
  });

  app.setNotFoundHandler((req, reply) =>
    sendError(reply, 404, 'WEB_ERR_NOT_FOUND', `no route ${req.method} ${req.url.split('?')[0]}`),
  );

  for (const r of d.routes) {
    app.route({ method: r.method, url: r.url, handler: (req, reply) => handle(d, r, req, reply) });
  }

  app.get('/metrics', async (_req, reply) => {
    const { contentType, text } = await d.metrics.render();
    return reply.type(contentType).send(text);
  });

  let openapi: unknown;
  app.get('/openapi.json', async (_req, reply) => {
    openapi ??= d.openapi();
    return reply.type('application/json; charset=utf-8').send(openapi);
  });

  app.get('/*', async (req, reply) => {
    const path = req.url.split('?')[0];
    if (path === API || path.startsWith(`${API}/`) || path.startsWith('/api/')) {
      return sendError(reply, 404, 'WEB_ERR_NOT_FOUND', `no route GET ${path}`);
    }
    const file = await d.statics.get(path);
    if (!file) return sendError(reply, 404, 'WEB_ERR_NOT_FOUND', `no file ${path}`);
    return reply
      .header('content-security-policy', DASHBOARD_CSP)
      .header('x-content-type-options', 'nosniff')
      .header('referrer-policy', 'no-referrer')
      .header('cache-control', 'no-cache')
      .type(file.type)
      .send(file.body);
  });

  app.server.on('upgrade', (req, socket, head) => {
    if (d.mqttWs && d.cfg.mqtt_ws_path !== null && (req.url ?? '').split('?')[0] === d.cfg.mqtt_ws_path) {
      d.mqttWs.onUpgrade(req, socket, head);
      return;
    }
    d.ws.onUpgrade(req, socket, head);
  });
  return app;
}

async function handle(d: ServerDeps, r: AnyRoute, req: FastifyRequest, reply: FastifyReply) {
  const params = r.params ? parse(r, r.params, req.params, 'params') : undefined;
  const query = r.query ? parse(r, r.query, req.query ?? {}, 'query') : undefined;
  let body: unknown;
  if (r.body && !(r.bodyOptional && req.body === undefined)) body = parse(r, r.body, req.body, 'body');
  const headers = r.headers ? parse(r, r.headers, req.headers, 'headers') : undefined;

  // One signal for "stop waiting": the client went away, or the module is stopping.
  const ac = new AbortController();
  const abort = () => ac.abort();
  d.stopping.addEventListener('abort', abort, { once: true });
  reply.raw.once('close', () => {
    d.stopping.removeEventListener('abort', abort);
    if (!reply.raw.writableFinished) ac.abort();
  });

  const out = await r.handler({ params, query, body, headers, signal: ac.signal });
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
  const timer = setTimeout(() => app.server.closeAllConnections(), graceMs);
  try {
    await app.close();
  } finally {
    clearTimeout(timer);
  }
}
