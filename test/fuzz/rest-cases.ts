/**
 * Requests for the REST fuzzer, generated with fast-check from the hub's own /openapi.json:
 * one documented operation each, with valid-ish or hostile path parameters, query strings,
 * bodies, content types and tokens, and a path mutation (percent-encoding tricks, `..`, `//`,
 * fragments, raw bytes, overlong segments …). A case is data; `render()` turns it into the exact
 * bytes of the request once the run's pool of known ids is at hand.
 */
import fc from 'fast-check';
import type { OpenApiOracle, Operation } from '../modules/web/openapi-oracle.js';

// biome-ignore lint/suspicious/noExplicitAny: JSON Schema read as plain JSON
type Schema = any;

/** Ids the run has seen: values that reach the handlers instead of stopping at validation. */
export interface Pool {
  projects: string[];
  commands: string[];
  /** Module names that may be restarted with the token (none of the real ones: see rest-fuzz.ts). */
  modules: string[];
}

/** How a value is chosen at render time: from the pool, or given. */
type Value = { pool: 'projects' | 'commands' | 'modules'; i: number } | { v: unknown };

export type TokenVariant =
  | 'valid'
  | 'valid-lowercase-scheme'
  | 'valid-extra-spaces'
  | 'none'
  | 'wrong'
  | 'prefix'
  | 'suffixed'
  | 'basic'
  | 'empty-bearer'
  | 'query-only'
  | 'raw-token';
const AUTHORIZED: ReadonlySet<TokenVariant> = new Set(['valid', 'valid-lowercase-scheme', 'valid-extra-spaces']);
const TOKENLESS: TokenVariant[] = [
  'none',
  'wrong',
  'prefix',
  'suffixed',
  'basic',
  'empty-bearer',
  'query-only',
  'raw-token',
];

/** Path mutations that keep the router on the same route, and those that may not. */
const KEEPS_ROUTE = ['none', 'encode-static', 'fragment'] as const;
const MAY_CHANGE_ROUTE = [
  'double-slash',
  'dot-segment',
  'trailing-slash',
  'upper-case',
  'bad-percent',
  'overlong',
  'raw-byte',
  'semicolon',
  'encoded-slash',
  'backslash',
] as const;
export type Mutation = (typeof KEEPS_ROUTE)[number] | (typeof MAY_CHANGE_ROUTE)[number];

export interface Case {
  op: number;
  method: string | null;
  params: Record<string, Value | { raw: string }>;
  query: Array<[string, Value | { raw: string }]> | { raw: string };
  body: { json: unknown } | { text: string } | { bytes: number[] } | { repeat: string; times: number } | null;
  contentType: string | null;
  token: TokenVariant;
  mutation: Mutation;
  mutationSeed: number;
  extraHeaders: Array<[string, string]>;
  /** When set and the body names a project_id, a project the run knows replaces it (send, sync). */
  poolProject: number | null;
}

export interface Rendered {
  method: string;
  path: string;
  headers: Record<string, string>;
  body: Buffer | undefined;
  op: Operation;
  authorized: boolean;
  /** The router still lands on `op` (only then must the answer be one `op` documents). */
  keepsRoute: boolean;
  /** The path still names `op`'s route, whatever the method (HEAD of a GET route is that route). */
  keepsPath: boolean;
}

// ─── values ───────────────────────────────────────────────────────────────────────────────

const LONE = fc.integer({ min: 0xd800, max: 0xdfff }).map((c) => String.fromCharCode(c));

/** Strings an attacker tries: NUL, lone surrogates, control and RTL characters, MQTT wildcards, paths, huge. */
export const hostileString: fc.Arbitrary<string> = fc.oneof(
  fc.constantFrom(
    '',
    ' ',
    '\u0000',
    'a\u0000b',
    '\ud800',
    '\udfff',
    'x\ud83d',
    '\u202e',
    '$SYS',
    '#',
    '+',
    '/',
    'a/b',
    '../../etc/passwd',
    '..',
    '.',
    '%00',
    '%2e%2e',
    '<script>alert(1)</script>',
    "' OR 1=1 --",
    '__proto__',
    'constructor',
    'null',
    '\n',
    '\r\n',
    '🙂',
    'é'.repeat(65),
    'x'.repeat(129),
    'x'.repeat(4096),
  ),
  fc.string({ unit: 'binary', maxLength: 40 }),
  fc.string({ unit: fc.oneof(LONE, fc.constantFrom('a', '\u0000', '/')), maxLength: 8 }),
);

/** `{"a":{"a":…}}` as a value (modest depths: JSON.stringify recurses) */
const nestedValue = (depth: number): unknown => {
  let v: unknown = 1;
  for (let i = 0; i < depth; i++) v = { a: v };
  return v;
};

export const hostileValue: fc.Arbitrary<unknown> = fc.oneof(
  hostileString,
  fc.constantFrom(
    null,
    true,
    false,
    0,
    -1,
    -0,
    1.5,
    1e308,
    -1e308,
    2 ** 53 + 2,
    Number.MAX_SAFE_INTEGER,
    [],
    {},
    [null],
    { __proto__: null, x: 1 },
    nestedValue(33),
    nestedValue(200),
  ),
  fc.jsonValue({ maxDepth: 3 }),
);

// ─── JSON Schema → arbitrary ──────────────────────────────────────────────────────────────

/** A value the schema accepts (or nearly: patterns and ranges are honoured, formats are not). */
function fromSchema(oracle: OpenApiOracle, schema: Schema, depth = 0): fc.Arbitrary<unknown> {
  const s = oracle.resolve(schema) ?? {};
  if (s.anyOf || s.oneOf) return fc.oneof(...(s.anyOf ?? s.oneOf).map((x: Schema) => fromSchema(oracle, x, depth)));
  if (s.enum) return fc.constantFrom(...s.enum);
  if ('const' in s) return fc.constant(s.const);
  switch (s.type) {
    case 'string':
      if (s.pattern) return fc.stringMatching(new RegExp(s.pattern));
      return fc.string({ maxLength: Math.min(s.maxLength ?? 40, 40) });
    case 'integer': {
      const min = s.minimum ?? (s.exclusiveMinimum !== undefined ? s.exclusiveMinimum + 1 : -1_000_000);
      const max = Math.min(s.maximum ?? 1_000_000_000, 1_000_000_000);
      return fc.oneof(fc.integer({ min, max: Math.min(max, min + 1000) }), fc.integer({ min, max }));
    }
    case 'number':
      return fc.double({ noNaN: true, noDefaultInfinity: true });
    case 'boolean':
      return fc.boolean();
    case 'array':
      return depth > 3 ? fc.constant([]) : fc.array(fromSchema(oracle, s.items ?? {}, depth + 1), { maxLength: 3 });
    case 'object': {
      const props = (s.properties ?? {}) as Record<string, Schema>;
      const required = (s.required ?? []) as string[];
      if (Object.keys(props).length === 0) {
        return s.additionalProperties === false || depth > 3
          ? fc.constant({})
          : fc.dictionary(fc.string({ maxLength: 8 }), fc.jsonValue({ maxDepth: 2 }), { maxKeys: 4 });
      }
      const rec: Record<string, fc.Arbitrary<unknown>> = {};
      for (const [k, v] of Object.entries(props)) rec[k] = fromSchema(oracle, v, depth + 1);
      return fc.record(rec, { requiredKeys: required });
    }
    default:
      return fc.jsonValue({ maxDepth: 3 });
  }
}

/** A body value: schema-valid, then perhaps spoiled (a field hostile, one missing, one unknown). */
function bodyValue(oracle: OpenApiOracle, op: Operation): fc.Arbitrary<unknown> {
  const schema = op.requestBody ? oracle.resolve(op.requestBody.schema) : { type: 'object' };
  const valid = fromSchema(oracle, schema);
  const keys = Object.keys(schema.properties ?? {});
  return fc.oneof(
    { weight: 5, arbitrary: valid },
    {
      weight: 3,
      arbitrary: fc
        .tuple(valid, fc.constantFrom(...(keys.length ? keys : ['x'])), hostileValue)
        .map(([v, k, h]) => ({ ...(v as object), [k]: h })),
    },
    {
      weight: 1,
      arbitrary: fc
        .tuple(valid, fc.constantFrom('status', 'signature', 'command_id', 'secret', 'is_sync', '__proto__', 'x'))
        .map(([v, k]) => ({ ...(v as object), [k]: 'x' })),
    },
    { weight: 1, arbitrary: hostileValue },
  );
}

/** Bodies as text or bytes the JSON parser must refuse cleanly. */
const RAW_BODIES: fc.Arbitrary<Case['body']> = fc.oneof(
  fc.constantFrom<Case['body']>(
    { text: '' },
    { text: '{' },
    { text: 'null' },
    { text: '[]' },
    { text: '"str"' },
    { text: '1' },
    { text: '{"a":1,}' },
    { text: '{"__proto__":{"polluted":1}}' },
    { text: '{"constructor":{"prototype":{"polluted":1}}}' },
    { text: '\ufeff{}' },
    { text: '{"project_id":"\\ud800"}' },
    { text: '{"name":"\\u0000"}' },
    { text: '{"payload":"\\udfff","project_id":"fz-1","command_type":"x"}' },
    { text: '{"a":1e999999}' },
    { text: '{"a":-0}' },
    { bytes: [0x7b, 0x22, 0x61, 0x22, 0x3a, 0x22, 0xff, 0xfe, 0x22, 0x7d] },
    { bytes: [0x7b, 0x22, 0x61, 0x22, 0x3a, 0x22, 0xed, 0xa0, 0x80, 0x22, 0x7d] },
    { repeat: '{"a":', times: 10_000 },
    { repeat: '[', times: 100_000 },
    { repeat: 'x', times: 70_000 },
  ),
  fc.string({ unit: 'binary', maxLength: 60 }).map((text) => ({ text })),
);

// ─── paths and queries ────────────────────────────────────────────────────────────────────

function paramValue(name: string, schema: Schema, oracle: OpenApiOracle): fc.Arbitrary<Value | { raw: string }> {
  const pool =
    name === 'project_id' ? 'projects' : name === 'command_id' ? 'commands' : name === 'name' ? 'modules' : null;
  return fc.oneof(
    ...(pool ? [{ weight: 5, arbitrary: fc.nat().map((i): Value => ({ pool, i })) }] : []),
    { weight: 3, arbitrary: fromSchema(oracle, schema).map((v): Value => ({ v })) },
    { weight: 2, arbitrary: hostileValue.map((v): Value => ({ v: typeof v === 'string' ? v : JSON.stringify(v) })) },
    {
      weight: 1,
      arbitrary: fc
        .constantFrom('%2F', '%00', '%ED%A0%80', '%C0%AF', '%25', '%2e%2e', '..', '.', '%20', 'a%2Fb', '%E2%80%AE')
        .map((raw) => ({ raw })),
    },
  );
}

function queryArb(op: Operation, oracle: OpenApiOracle): fc.Arbitrary<Case['query']> {
  const qs = op.parameters.filter((p) => p.in === 'query');
  const entry = (p: Operation['parameters'][number]) =>
    fc.oneof(
      { weight: 4, arbitrary: fromSchema(oracle, p.schema).map((v): Value => ({ v: String(v) })) },
      {
        weight: 2,
        arbitrary: fc
          .constantFrom(
            '8640000000000000',
            '+275760-09-13T00:00:00.000Z',
            '-271821-04-20T00:00:00.000Z',
            '0001-01-01T00:00:00Z',
            '9999-12-31T23:59:59.999Z',
            '2026-01-01',
            'yesterday',
            '-1',
            '0',
            '1e3',
            '9007199254740993',
            '',
          )
          .map((v): Value => ({ v })),
      },
      { weight: 2, arbitrary: hostileString.map((v): Value => ({ v })) },
      ...(p.name === 'project_id'
        ? [{ weight: 2, arbitrary: fc.nat().map((i): Value => ({ pool: 'projects', i })) }]
        : []),
    );
  const structured = fc
    .tuple(
      fc.subarray(qs),
      fc.array(fc.tuple(fc.constantFrom('x', 'token', '__proto__', 'limit', 'a[b]', ''), hostileString), {
        maxLength: 1,
      }),
    )
    .chain(([chosen, junk]) =>
      fc
        .tuple(...chosen.map((p) => entry(p).map((v): [string, Value] => [p.name, v])))
        .map((pairs) => [...pairs, ...junk.map(([k, v]): [string, Value] => [k, { v }])]),
    );
  return fc.oneof(
    { weight: 8, arbitrary: structured },
    {
      weight: 1,
      arbitrary: fc
        .constantFrom('&&', '=', '%', '%zz=1', 'limit=1&limit=2', 'limit[]=1', '?', 'a=%ED%A0%80', 'since=%00')
        .map((raw) => ({ raw })),
    },
  );
}

const CONTENT_TYPES = [
  'application/json',
  'application/json; charset=utf-8',
  'APPLICATION/JSON',
  'text/plain',
  'application/x-www-form-urlencoded',
  'multipart/form-data; boundary=x',
  'application/json; charset=latin1',
  'application/jsonx',
];

// ─── a whole case ─────────────────────────────────────────────────────────────────────────

export function caseArb(oracle: OpenApiOracle, mode: 'mixed' | 'tokenless'): fc.Arbitrary<Case> {
  const perOp = oracle.operations.map((op, index) => {
    const params = op.parameters.filter((p) => p.in === 'path');
    const paramsArb = fc
      .tuple(...params.map((p) => paramValue(p.name, p.schema, oracle)))
      .map((vs) => Object.fromEntries(vs.map((v, i) => [params[i].name, v])));
    const body: fc.Arbitrary<Case['body']> =
      op.method === 'GET'
        ? fc.oneof({ weight: 9, arbitrary: fc.constant(null) }, { weight: 1, arbitrary: RAW_BODIES })
        : fc.oneof(
            { weight: 6, arbitrary: bodyValue(oracle, op).map((json) => ({ json })) },
            { weight: 1, arbitrary: fc.constant(null) },
            { weight: 2, arbitrary: RAW_BODIES },
          );
    return fc.record({
      op: fc.constant(index),
      method: fc.oneof(
        { weight: 19, arbitrary: fc.constant(null) },
        { weight: 1, arbitrary: fc.constantFrom('PUT', 'DELETE', 'PATCH', 'OPTIONS', 'HEAD', 'GET', 'POST', 'FOO') },
      ),
      params: paramsArb,
      query: queryArb(op, oracle),
      body,
      contentType: fc.oneof(
        { weight: 8, arbitrary: fc.constant('application/json') },
        { weight: 1, arbitrary: fc.constant(null) },
        { weight: 2, arbitrary: fc.constantFrom(...CONTENT_TYPES) },
      ),
      token:
        mode === 'tokenless'
          ? fc.constantFrom(...TOKENLESS)
          : fc.oneof(
              { weight: 6, arbitrary: fc.constant<TokenVariant>('valid') },
              { weight: 1, arbitrary: fc.constantFrom<TokenVariant>('valid-lowercase-scheme', 'valid-extra-spaces') },
              { weight: 3, arbitrary: fc.constantFrom(...TOKENLESS) },
            ),
      mutation: fc.oneof(
        { weight: 10, arbitrary: fc.constant<Mutation>('none') },
        { weight: 4, arbitrary: fc.constantFrom<Mutation>('encode-static', 'fragment') },
        { weight: 4, arbitrary: fc.constantFrom<Mutation>(...MAY_CHANGE_ROUTE) },
      ),
      mutationSeed: fc.nat(),
      extraHeaders: fc.array(
        fc.constantFrom<[string, string]>(
          ['accept', 'text/html'],
          ['accept-version', '1.0.0'],
          ['x-forwarded-for', '10.0.0.1'],
          ['x-http-method-override', 'DELETE'],
          ['origin', 'http://evil.example'],
          ['cookie', 'token=x'],
          ['content-encoding', 'gzip'],
          ['authorization-extra', 'Bearer x'],
          ['idempotency-key', 'fz-key-1'],
          ['idempotency-key', 'fz-key-2'],
          ['idempotency-key', ''],
          ['idempotency-key', 'k'.repeat(300)],
          ['idempotency-key', 'a key, with: spaces'],
        ),
        { maxLength: 2 },
      ),
      poolProject: fc.option(fc.nat(), { freq: 3 }),
    });
  });
  return fc.oneof(...perOp);
}

// ─── rendering ────────────────────────────────────────────────────────────────────────────

/** Percent-encodes a string's UTF-8 bytes, leaving RFC 3986 unreserved characters as they are. */
export function pct(s: string): string {
  let out = '';
  for (const b of Buffer.from(s, 'utf8')) {
    const c = String.fromCharCode(b);
    out += /[A-Za-z0-9\-._~]/.test(c) ? c : `%${b.toString(16).toUpperCase().padStart(2, '0')}`;
  }
  return out;
}

function resolve(v: Value, pool: Pool): string {
  if ('pool' in v) {
    const list = pool[v.pool];
    return list.length ? list[v.i % list.length] : 'none';
  }
  return typeof v.v === 'string' ? v.v : JSON.stringify(v.v);
}

/** A small deterministic generator for the mutation's choices (position, byte, …). */
function rng(seed: number): () => number {
  let x = seed | 0 || 1;
  return () => {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    return (x >>> 0) / 2 ** 32;
  };
}

function mutate(path: string, m: Mutation, seed: number): string {
  const r = rng(seed);
  const pick = (n: number) => Math.floor(r() * n);
  const slashes = [...path.matchAll(/\//g)].map((x) => x.index);
  switch (m) {
    case 'none':
      return path;
    case 'encode-static': {
      // encode some letters of the route's fixed text (never inside a %XX already there)
      let out = '';
      for (let i = 0; i < path.length; i++) {
        const c = path[i];
        const inEscape = path[i - 1] === '%' || path[i - 2] === '%';
        if (/[a-z]/i.test(c) && !inEscape && r() < 0.3) {
          const hex = c.charCodeAt(0).toString(16);
          out += `%${r() < 0.5 ? hex.toUpperCase() : hex}`;
        } else out += c;
      }
      return out;
    }
    case 'fragment':
      return `${path}#${['', 'x', '/../metrics', '?a=b'][pick(4)]}`;
    case 'double-slash': {
      const at = slashes[pick(slashes.length)];
      return `${path.slice(0, at)}/${path.slice(at)}`;
    }
    case 'dot-segment': {
      const at = slashes[pick(slashes.length)];
      return `${path.slice(0, at)}${['/.', '/x/..', '/%2e', '/%2e%2e', '/..'][pick(5)]}${path.slice(at)}`;
    }
    case 'trailing-slash':
      return `${path}/`;
    case 'upper-case':
      return path.toUpperCase();
    case 'bad-percent': {
      const at = slashes[pick(slashes.length)] + 1;
      return `${path.slice(0, at)}${['%', '%zz', '%E0%A4%A', '%ED%A0%80', '%C0%80', '%%'][pick(6)]}${path.slice(at)}`;
    }
    case 'overlong': {
      const at = slashes[pick(slashes.length)] + 1;
      return `${path.slice(0, at)}${'a'.repeat(1000 + pick(5000))}${path.slice(at)}`;
    }
    case 'raw-byte': {
      const at = 1 + pick(path.length);
      const bytes = ['\u0000', '\u0001', '\t', ' ', '\u007f', '\u00ff', '\u0085', '"', '<', '\\'];
      return `${path.slice(0, at)}${bytes[pick(bytes.length)]}${path.slice(at)}`;
    }
    case 'semicolon':
      return `${path};jsessionid=1`;
    case 'encoded-slash': {
      const at = slashes.length > 1 ? slashes[1 + pick(slashes.length - 1)] : slashes[0];
      return `${path.slice(0, at)}%2F${path.slice(at + 1)}`;
    }
    case 'backslash': {
      const at = slashes[pick(slashes.length)];
      return `${path.slice(0, at)}\\${path.slice(at + 1)}`;
    }
  }
}

export function render(c: Case, oracle: OpenApiOracle, pool: Pool, token: string): Rendered {
  const op = oracle.operations[c.op];
  let keepsRoute = (KEEPS_ROUTE as readonly string[]).includes(c.mutation);
  let path = op.path.replace(/\{([^}]+)\}/g, (_, name: string) => {
    const v = c.params[name];
    const text = 'raw' in v ? v.raw : pct(resolve(v, pool));
    // an empty or dot segment, or one past the router's 1024 limit, lands on another route
    if (text === '' || text === '.' || text === '..' || text.length > 1024) keepsRoute = false;
    return text;
  });
  path = mutate(path, c.mutation, c.mutationSeed);
  let query: string;
  if ('raw' in c.query) query = c.query.raw;
  else query = c.query.map(([k, v]) => `${pct(k)}=${'raw' in v ? v.raw : pct(resolve(v, pool))}`).join('&');
  const headers: Record<string, string> = {};
  switch (c.token) {
    case 'valid':
      headers.authorization = `Bearer ${token}`;
      break;
    case 'valid-lowercase-scheme':
      headers.authorization = `bearer ${token}`;
      break;
    case 'valid-extra-spaces':
      headers.authorization = `Bearer   ${token}  `;
      break;
    case 'wrong':
      headers.authorization = 'Bearer wrong-token';
      break;
    case 'prefix':
      headers.authorization = `Bearer ${token.slice(0, -1)}`;
      break;
    case 'suffixed':
      headers.authorization = `Bearer ${token}x`;
      break;
    case 'basic':
      headers.authorization = `Basic ${Buffer.from(`u:${token}`).toString('base64')}`;
      break;
    case 'empty-bearer':
      headers.authorization = 'Bearer ';
      break;
    case 'raw-token':
      headers.authorization = token;
      break;
    case 'query-only':
      query = query ? `${query}&token=${token}` : `token=${token}`;
      break;
    case 'none':
      break;
  }
  for (const [k, v] of c.extraHeaders) headers[k] = v;
  let body: Buffer | undefined;
  if (c.body) {
    let json = 'json' in c.body ? c.body.json : undefined;
    // send/sync: mostly a project the run knows, so the request gets past "unknown project"
    if (json && typeof json === 'object' && 'project_id' in json && c.poolProject !== null && pool.projects.length) {
      json = { ...json, project_id: pool.projects[c.poolProject % pool.projects.length] };
    }
    if ('json' in c.body) body = Buffer.from(JSON.stringify(json) ?? 'null', 'utf8');
    else if ('text' in c.body) body = Buffer.from(c.body.text, 'utf8');
    else if ('bytes' in c.body) body = Buffer.from(c.body.bytes);
    else body = Buffer.from(c.body.repeat.repeat(c.body.times), 'utf8');
  }
  if (c.contentType && body !== undefined) headers['content-type'] = c.contentType;
  const method = c.method ?? op.method;
  const keepsPath = keepsRoute;
  if (method !== op.method) keepsRoute = false;
  // a query string after a fragment is part of the fragment for the router but not for the query parser
  return {
    method,
    path: query ? `${path}?${query}` : path,
    headers,
    body,
    op,
    authorized: AUTHORIZED.has(c.token),
    keepsRoute,
    keepsPath,
  };
}
