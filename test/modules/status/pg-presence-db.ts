/**
 * The status module's tables on a fresh PostgreSQL schema, for tests that drive the presence
 * writer (persist.ts) directly. `close()` ends the pool and drops the schema.
 */
import type { Knex } from 'knex';
import { silentLogger } from '../../../core/log.js';
import { DbPool } from '../../../core/services/db.js';
import { migrations } from '../../../modules/status/migrations.js';
import { withPgSchema } from '../../helpers/db.js';

export interface PresenceDb {
  db: Knex;
  close(): Promise<void>;
}

/** `maxConnections`: how many flushes may hold a connection at once (a pool of knex's default otherwise). */
export async function presenceDbOnPg(maxConnections?: number): Promise<PresenceDb> {
  const s = await withPgSchema();
  const config = maxConnections ? { ...s.config, pool: { min: 0, max: maxConnections } } : s.config;
  const pool = new DbPool({ default: config }, silentLogger());
  try {
    await pool.migrate('status', migrations);
  } catch (err) {
    await pool.close();
    await s.drop();
    throw err;
  }
  return {
    db: pool.get(),
    async close() {
      await pool.close();
      await s.drop();
    },
  };
}
