/**
 * /openapi.json (OpenAPI 3.1), generated from the route table and the very zod schemas the
 * routes validate with (zod v4 `z.toJSONSchema`), so the document cannot drift from the code.
 */
import { z } from 'zod';
import { type AnyRoute, API } from './routes.js';
import { errorSchema } from './schemas.js';
import { WS_PATH } from './ws.js';

type Json = Record<string, unknown>;

const STATUS_TEXT: Record<number, string> = {
  400: 'Invalid request: `error.field` names the field',
  401: 'Missing or wrong bearer token (AUTH_ERR_TOKEN)',
  403:
    'The token’s role does not grant this operation’s action (`x-access`), or its `projects` do not include ' +
    'the project asked for or the command’s project (AUTH_ERR_FORBIDDEN)',
  413: 'Body larger than the limit (WEB_ERR_BODY_TOO_LARGE)',
  415: 'Body not sent as JSON (WEB_ERR_MEDIA_TYPE)',
  503: 'The module that answers is not running, or the hub is stopping',
};

export function buildOpenApi(routes: readonly AnyRoute[], opts: { auth: boolean; version: string }): Json {
  const schemas: Record<string, unknown> = {};

  /** JSON Schema of a zod schema, its named parts hoisted into components.schemas. */
  const convert = (schema: z.ZodType, io: 'input' | 'output'): Json => {
    const js = z.toJSONSchema(schema, { io, unrepresentable: 'any', target: 'draft-2020-12' }) as Json;
    delete js.$schema;
    const defs = (js.$defs ?? {}) as Record<string, unknown>;
    delete js.$defs;
    for (const [id, def] of Object.entries(defs)) schemas[id] = relink(def);
    return relink(js) as Json;
  };
  const errorRef = convert(errorSchema, 'output');
  const json = (schema: Json) => ({ 'application/json': { schema } });

  const paths: Record<string, Record<string, unknown>> = {};
  for (const r of routes) {
    const path = r.url.replace(/:([A-Za-z_]+)/g, '{$1}');
    const parameters: Json[] = [];
    for (const [where, schema] of [
      ['path', r.params],
      ['query', r.query],
      ['header', r.headers],
    ] as const) {
      if (!schema) continue;
      const js = convert(schema, 'input');
      const required = new Set((js.required as string[] | undefined) ?? []);
      for (const [name, prop] of Object.entries((js.properties ?? {}) as Record<string, Json>)) {
        const { description, ...rest } = prop;
        parameters.push({
          // header names as callers write them (Idempotency-Key); they match in any case
          name: where === 'header' ? headerName(name) : name,
          in: where,
          required: where === 'path' || required.has(name),
          ...(description ? { description } : {}),
          schema: rest,
        });
      }
    }
    const status = r.status ?? 200;
    const responseHeaders = Object.entries(r.responseHeaders ?? {}).map(([name, description]) => [
      name,
      { description, schema: { type: 'string' } },
    ]);
    const responses: Record<string, unknown> = {
      [status]: {
        description: r.summary,
        ...(responseHeaders.length ? { headers: Object.fromEntries(responseHeaders) } : {}),
        ...(r.response ? { content: json(convert(r.response, 'output')) } : {}),
      },
    };
    // The same declaration the server's auth gate reads (server.ts): only routes declared public are open.
    const secured = opts.auth && r.access !== 'public';
    const errors = new Set<number>();
    if (r.params || r.query || r.body) errors.add(400);
    if (secured) {
      errors.add(401);
      errors.add(403);
    }
    if (r.body) {
      errors.add(413);
      errors.add(415);
    }
    // every request gets 503 HOST_ERR_STOPPING while the hub stops (server.ts onRequest)
    errors.add(503);
    for (const code of errors) responses[code] = { description: STATUS_TEXT[code], content: json(errorRef) };
    if (r.audit) {
      responses[503] = {
        description: `${STATUS_TEXT[503]}; or AUDIT_ERR_UNAVAILABLE: the action was done, but its audit record could not be written`,
        content: json(errorRef),
      };
    }
    for (const [code, a] of Object.entries(r.answers ?? {})) {
      const [description, schema] = typeof a === 'string' ? [a, null] : a;
      // a route's own body for a status the server may also answer with the plain error (a 503
      // while stopping): either may come
      const own = schema ? convert(schema, 'output') : errorRef;
      const both = schema && errors.has(Number(code)) ? { anyOf: [own, errorRef] } : own;
      responses[code] = { description, content: json(both) };
    }
    paths[path] ??= {};
    paths[path][r.method.toLowerCase()] = {
      operationId: operationId(r),
      summary: r.summary,
      tags: [r.tag],
      // the action a token's role must grant (permissions.ts): public, read, operate or admin
      'x-access': r.access,
      ...(parameters.length ? { parameters } : {}),
      ...(r.body ? { requestBody: { required: !r.bodyOptional, content: json(convert(r.body, 'input')) } } : {}),
      responses,
      // the audit trail's action name of an operator action (README "Audit trail")
      ...(r.audit ? { 'x-audit-action': r.audit.action } : {}),
      ...(secured ? {} : { security: [] }),
    };
  }

  paths['/metrics'] = {
    get: {
      operationId: 'metrics',
      summary: 'Prometheus metrics (text exposition format)',
      tags: ['system'],
      'x-access': 'read',
      responses: {
        200: { description: 'Metrics', content: { 'text/plain': { schema: { type: 'string' } } } },
        ...(opts.auth
          ? {
              401: { description: STATUS_TEXT[401], content: json(errorRef) },
              403: { description: STATUS_TEXT[403], content: json(errorRef) },
            }
          : {}),
        503: { description: STATUS_TEXT[503], content: json(errorRef) },
      },
      ...(opts.auth ? {} : { security: [] }),
    },
  };
  paths['/openapi.json'] = {
    get: {
      operationId: 'openapi',
      summary: 'This document',
      tags: ['system'],
      'x-access': 'public',
      security: [],
      responses: {
        200: { description: 'OpenAPI 3.1', content: { 'application/json': { schema: { type: 'object' } } } },
        503: { description: STATUS_TEXT[503], content: json(errorRef) },
      },
    },
  };
  paths[WS_PATH] = {
    get: {
      operationId: 'websocket',
      summary: 'WebSocket upgrade: live command and project events (see the module docs for the protocol)',
      description:
        'Send {"op":"subscribe","all":true} or {"op":"subscribe","projects":[…],"commands":[…]}; ' +
        'resume after a reconnect with {"op":"resume","epoch":…,"last_event_id":…}. Token: Authorization header or ?token=.',
      tags: ['system'],
      'x-access': 'read',
      parameters: [{ name: 'token', in: 'query', required: false, schema: { type: 'string' } }],
      responses: {
        101: { description: 'Switching protocols' },
        ...(opts.auth
          ? {
              401: { description: STATUS_TEXT[401], content: json(errorRef) },
              403: { description: STATUS_TEXT[403], content: json(errorRef) },
            }
          : {}),
        426: {
          description: 'Not an Upgrade request (WEB_ERR_UPGRADE_REQUIRED)',
          content: json(errorRef),
        },
        503: { description: STATUS_TEXT[503], content: json(errorRef) },
      },
      ...(opts.auth ? {} : { security: [] }),
    },
  };

  return {
    openapi: '3.1.0',
    info: {
      title: 'gmq-hub exchange hub API',
      version: opts.version,
      description:
        'Signed commands to remote agents over MQTT, their tracking and results, project provisioning and presence. ' +
        'Errors are `{ "error": { "code", "message", "field"? } }` with a stable code.',
    },
    servers: [{ url: '/' }],
    tags: [
      { name: 'commands', description: 'Send, wait, follow and list commands' },
      { name: 'projects', description: 'Provisioning and presence' },
      { name: 'jobs', description: 'One command to many projects: rollout, abort threshold, schedule, progress' },
      { name: 'outbox', description: 'Domain events for the systems around the hub: dead events and their replay' },
      { name: 'system', description: 'Modules, health, metrics' },
    ],
    paths,
    components: { schemas, securitySchemes: { bearer: { type: 'http', scheme: 'bearer' } } },
    ...(opts.auth ? { security: [{ bearer: [] }] } : {}),
  };
}

/** `idempotency-key` → `Idempotency-Key`. */
function headerName(name: string): string {
  return name.replace(/(^|-)([a-z])/g, (_m, dash: string, c: string) => dash + c.toUpperCase());
}

function operationId(r: AnyRoute): string {
  if (r.operationId) return r.operationId;
  const words = r.url
    .replace(API, '')
    .split('/')
    .filter((w) => w && !w.startsWith(':'));
  return [r.method.toLowerCase(), ...words].map((w, i) => (i ? w[0].toUpperCase() + w.slice(1) : w)).join('');
}

/** `#/$defs/X` → `#/components/schemas/X`, everywhere in a converted schema. */
function relink(v: unknown): unknown {
  if (Array.isArray(v)) return v.map(relink);
  if (v && typeof v === 'object') {
    const out: Json = {};
    for (const [k, x] of Object.entries(v)) {
      out[k] = k === '$ref' && typeof x === 'string' ? x.replace('#/$defs/', '#/components/schemas/') : relink(x);
    }
    return out;
  }
  return v;
}
