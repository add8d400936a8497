/**
 * The status module's tables on a fresh database (a PostgreSQL schema, or a PGlite directory),
 * for tests that drive the module's stores (persist.ts, projects.ts) directly. `close()` ends
 * the pool and drops the schema or directory.
 */
import { after, before } from 'node:test';
import type { Knex } from 'knex';
import { silentLogger } from '../../../core/log.js';
import { DbPool, type Migration } from '../../../core/services/db.js';
import { migrations } from '../../../modules/status/migrations.js';
import { prepareSharedPgliteTemplate, tempPgliteConfig, withPgSchema } from '../../helpers/db.js';

export interface PresenceDb {
  db: Knex;
  close(): Promise<void>;
}

/** `maxConnections`: how many flushes may hold a connection at once (a pool of knex's default otherwise). */
export async function presenceDbOnPg(maxConnections?: number): Promise<PresenceDb> {
  return statusDb('pg', { maxConnections });
}

/**
 * The status module's tables on PostgreSQL for the suite this is called in: made before its first
 * test, dropped after its last. Returns the pool (valid once the suite's tests run).
 */
export function presenceDbForSuite(maxConnections?: number): () => Knex {
  let pdb: PresenceDb | undefined;
  before(async () => {
    pdb = await presenceDbOnPg(maxConnections);
  });
  after(async () => {
    await pdb?.close();
  });
  return () => {
    if (!pdb) throw new Error("presenceDbForSuite: the database is made in the suite's before hook");
    return pdb.db;
  };
}

/** `also`: other modules' migrations to apply beside the status module's (owner, migrations). */
export async function statusDb(
  backend: 'pg' | 'pglite',
  opts: { maxConnections?: number; also?: Array<[string, Migration[]]> } = {},
): Promise<PresenceDb> {
  const { maxConnections } = opts;
  let config: ConstructorParameters<typeof DbPool>[0]['default'];
  let drop: () => Promise<void> | void;
  if (backend === 'pglite') {
    await prepareSharedPgliteTemplate();
    const t = tempPgliteConfig();
    config = t.config;
    drop = t.cleanup;
  } else {
    const s = await withPgSchema();
    config = maxConnections ? { ...s.config, pool: { min: 0, max: maxConnections } } : s.config;
    drop = s.drop;
  }
  const pool = new DbPool({ default: config }, silentLogger());
  try {
    await pool.migrate('status', migrations);
    for (const [owner, more] of opts.also ?? []) await pool.migrate(owner, more);
  } catch (err) {
    await pool.close();
    await drop();
    throw err;
  }
  return {
    db: pool.get(),
    async close() {
      await pool.close();
      await drop();
    },
  };
}
