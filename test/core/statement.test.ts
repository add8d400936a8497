/**
 * Hot statements (core/services/statement.ts): prepared once per PostgreSQL session, unnamed when
 * `prepared_statements: false`, plain queries on PGlite, and a session whose prepared copy went
 * stale under a migration recovers instead of failing that statement for good.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { silentLogger } from '../../core/log.js';
import { type DbConfig, DbPool } from '../../core/services/db.js';
import { run, statement } from '../../core/services/statement.js';
import { preparePgliteTemplate, tempPgliteConfig, withPgSchema } from '../helpers/db.js';

const PICK = statement('SELECT id, note FROM notes WHERE id <= ? ORDER BY id');
const EVERYTHING = statement('SELECT * FROM notes ORDER BY id');

/** The session's prepared statements (pool of one: every query runs on the same session). */
async function preparedNames(pool: DbPool): Promise<string[]> {
  const r = (await pool.get().raw('SELECT name FROM pg_prepared_statements ORDER BY name')) as {
    rows: { name: string }[];
  };
  return r.rows.map((x) => x.name);
}

async function withNotes(config: DbConfig, fn: (pool: DbPool) => Promise<void>): Promise<void> {
  const pool = new DbPool({ default: config }, silentLogger());
  try {
    await pool.get().raw('CREATE TABLE notes (id int PRIMARY KEY, note text)');
    await pool.get().raw("INSERT INTO notes VALUES (1, 'a'), (2, 'b'), (3, 'c')");
    await fn(pool);
  } finally {
    await pool.close();
  }
}

describe('hot statements on PostgreSQL', () => {
  let schema: Awaited<ReturnType<typeof withPgSchema>>;
  const one = (extra: Partial<DbConfig> = {}): DbConfig => ({ ...schema.config, pool: { min: 1, max: 1 }, ...extra });
  before(async () => {
    schema = await withPgSchema();
  });
  after(async () => {
    await schema.drop();
  });

  test('a statement is prepared once per session under its own name and answers like a plain query', async () => {
    await withNotes(one(), async (pool) => {
      assert.deepEqual(await run(pool.get(), PICK, [2]), [
        { id: 1, note: 'a' },
        { id: 2, note: 'b' },
      ]);
      assert.deepEqual(await run(pool.get(), PICK, [1]), [{ id: 1, note: 'a' }]);
      assert.match(PICK.name, /^gmq_[0-9a-f]{24}$/);
      assert.deepEqual(await preparedNames(pool), [PICK.name]);
      await pool.get().raw('DROP TABLE notes');
    });
  });

  test('prepared_statements: false sends it unnamed (nothing is kept on the session)', async () => {
    await withNotes(one({ prepared_statements: false }), async (pool) => {
      assert.equal((await run(pool.get(), PICK, [3])).length, 3);
      assert.deepEqual(await preparedNames(pool), []);
      await pool.get().raw('DROP TABLE notes');
    });
  });

  test('a migration that changes a prepared result type: the session drops its stale copy and answers', async () => {
    await withNotes(one(), async (pool) => {
      const db = pool.get();
      assert.deepEqual(Object.keys((await run<object>(db, EVERYTHING))[0]), ['id', 'note']);
      await db.raw('ALTER TABLE notes ADD COLUMN tag text');
      // without the recovery: "cached plan must not change result type" (0A000) on every call
      const rows = await run<object>(db, EVERYTHING);
      assert.deepEqual(Object.keys(rows[0]), ['id', 'note', 'tag']);
      assert.equal(rows.length, 3);
      assert.deepEqual(await preparedNames(pool), [EVERYTHING.name]);
      await db.raw('DROP TABLE notes');
    });
  });

  test('a plan made on a small table is made again as the session runs it 64, 128, … times: it looks ids up once the table has grown', async () => {
    await withNotes(one(), async (pool) => {
      const db = pool.get();
      // the hot statements' id-list form (core/services/sql-lists.ts), on a table of 5 known rows
      await db.raw('CREATE TABLE items (id text PRIMARY KEY, body text NOT NULL)');
      await db.raw("INSERT INTO items SELECT 'i' || g, repeat('x', 200) FROM generate_series(1, 5) AS g");
      await db.raw('ANALYZE items');
      const BY_IDS = statement(
        'SELECT id FROM items WHERE id = ANY(ARRAY(SELECT jsonb_array_elements_text(?::jsonb)))',
      );
      const ids = JSON.stringify(['i1', 'i2']);
      const plan = async () => {
        const r = await db.raw(`EXPLAIN (COSTS OFF) EXECUTE ${BY_IDS.name}('${ids}')`);
        return (r.rows as { 'QUERY PLAN': string }[]).map((x) => x['QUERY PLAN']).join('\n');
      };
      try {
        for (let i = 0; i < 10; i++) assert.equal((await run(db, BY_IDS, [ids])).length, 2);
        assert.match(await plan(), /Seq Scan on items/, 'the generic plan made on 5 rows');
        // No ANALYZE follows (autovacuum off, or not yet): PostgreSQL keeps that plan as the table
        // grows (unless something else resets the session's plans, as a busy server's overflowing
        // invalidation queue does: so the plan in between is not asserted).
        await db.raw("INSERT INTO items SELECT 'j' || g, repeat('x', 200) FROM generate_series(1, 20000) AS g");
        for (let i = 10; i < 80; i++) assert.equal((await run(db, BY_IDS, [ids])).length, 2);
        assert.match(await plan(), /Index/, 'planned again at the 64th run, for 20 005 rows');
        assert.ok((await preparedNames(pool)).includes(BY_IDS.name), 'prepared again under its name');
      } finally {
        await db.raw('DROP TABLE notes, items');
      }
    });
  });

  test('inside a transaction the stale statement fails that transaction alone; the next one succeeds', async () => {
    await withNotes(one(), async (pool) => {
      const db = pool.get();
      await run(db, EVERYTHING);
      await db.raw('ALTER TABLE notes ADD COLUMN tag text');
      await assert.rejects(
        db.transaction((trx) => run(trx, EVERYTHING)),
        (err: { code?: string }) => err.code === '0A000',
      );
      // the session was retired: a fresh one prepares the statement against the new table
      const rows = await db.transaction((trx) => run<object>(trx, EVERYTHING));
      assert.deepEqual(Object.keys(rows[0]), ['id', 'note', 'tag']);
      await db.raw('DROP TABLE notes');
    });
  });
});

describe('hot statements on PGlite', () => {
  before(async () => {
    await preparePgliteTemplate();
  });

  test('run as plain queries, in and out of transactions', async () => {
    const t = tempPgliteConfig();
    try {
      await withNotes(t.config, async (pool) => {
        assert.deepEqual(await run(pool.get(), PICK, [1]), [{ id: 1, note: 'a' }]);
        assert.equal((await pool.get().transaction((trx) => run(trx, PICK, [3]))).length, 3);
      });
    } finally {
      t.cleanup();
    }
  });
});
