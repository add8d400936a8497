import type { Knex } from 'knex';
import { HubError } from '../errors.js';
import type { Logger } from '../log.js';

/**
 * A database migration a module owns. `up` is PostgreSQL-dialect SQL (several statements
 * allowed) or a function given the migration's transaction.
 *
 * @example
 *   { id: '001_create_tracker', up: 'CREATE TABLE command_tracker (id text primary key); CREATE INDEX ...' }
 */
export interface Migration {
  id: string;
  up: string | ((db: Knex) => Promise<void>);
}

export interface MigrateOptions {
  /** The database name, for log lines and error details. */
  db: string;
  log: Logger;
  /**
   * Runs a SQL script (several statements allowed) inside `trx`, verbatim: not through
   * `trx.raw`, which would take jsonb's `?` operators for bindings. See DbPool.migrate.
   */
  execScript(trx: Knex.Transaction, sql: string): Promise<void>;
}

// One key for every hub instance on a server: migrations are rare, so a global lock is cheap and
// makes "two instances start at once" safe without any coordination beyond PostgreSQL itself.
const LOCK_SQL = "SELECT pg_advisory_xact_lock(hashtext('hub_migrations'))";

// Unqualified on purpose: it lands in the database's schema through search_path.
const CREATE_TABLE_SQL = `CREATE TABLE IF NOT EXISTS hub_migrations (
  owner text NOT NULL,
  id text NOT NULL,
  applied_at timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (owner, id)
)`;

/**
 * Applies the migrations of `owner` that `hub_migrations` does not list yet, in id order, each in
 * its own transaction together with its bookkeeping row, and returns the ids applied now.
 * A failure stops the run with DB_ERR_MIGRATION; the migrations before it stay applied.
 */
export async function runMigrations(
  knex: Knex,
  owner: string,
  migrations: Migration[],
  opts: MigrateOptions,
): Promise<string[]> {
  const sorted = checkMigrations(owner, migrations, opts.db);

  // CREATE TABLE IF NOT EXISTS is not race-free in PostgreSQL (two sessions can both pass the
  // check and one fails on pg_type's unique index), so it runs under the same lock.
  await knex.transaction(async (trx) => {
    await trx.raw(LOCK_SQL);
    await trx.raw(CREATE_TABLE_SQL);
  });

  // Read without the lock to skip the common "nothing to do" case cheaply; each migration
  // re-checks under the lock, because another instance may have applied it in between.
  const done = new Set<string>(await knex('hub_migrations').where({ owner }).pluck('id'));
  const applied: string[] = [];
  for (const m of sorted) {
    if (done.has(m.id)) continue;
    const started = Date.now();
    let ran: boolean;
    try {
      ran = await knex.transaction(async (trx) => {
        await trx.raw(LOCK_SQL);
        const row = await trx('hub_migrations').where({ owner, id: m.id }).first('id');
        if (row) return false;
        if (typeof m.up === 'string') await opts.execScript(trx, m.up);
        else await m.up(trx);
        await trx('hub_migrations').insert({ owner, id: m.id });
        return true;
      });
    } catch (err) {
      const reason = err instanceof Error ? err.message : String(err);
      throw new HubError(
        'DB_ERR_MIGRATION',
        `migration ${owner}/${m.id} failed on database "${opts.db}": ${reason}`,
        { owner, id: m.id, db: opts.db },
        { cause: err },
      );
    }
    if (ran) {
      applied.push(m.id);
      opts.log.info({ db: opts.db, owner, id: m.id, ms: Date.now() - started }, 'migration applied');
    }
  }
  return applied;
}

/** Rejects lists that cannot be applied deterministically; returns them sorted by id. */
function checkMigrations(owner: string, migrations: Migration[], db: string): Migration[] {
  if (!owner) throw new HubError('DB_ERR_MIGRATION', 'migration owner must be a non-empty string', { db });
  const seen = new Set<string>();
  for (const m of migrations) {
    if (!m.id || typeof m.id !== 'string') {
      throw new HubError('DB_ERR_MIGRATION', `migration of ${owner} has an empty id`, { owner, db });
    }
    if (seen.has(m.id)) {
      throw new HubError('DB_ERR_MIGRATION', `migration ${owner}/${m.id} is listed twice`, { owner, id: m.id, db });
    }
    seen.add(m.id);
  }
  // Code-unit order, not localeCompare: '010' after '009' regardless of the machine's locale.
  return [...migrations].sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
}
