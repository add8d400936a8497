/**
 * The sends' INSERT in its two texts (modules/command/insert-batch.ts): a group without
 * idempotency keys is written by INSERT_PLAIN_SQL, which leaves out the key table's step; a group
 * with a key by INSERT_SQL. Both must store the same rows for the same sends, and a keyed send in
 * a mixed group must still get its key row. Runs on PostgreSQL and PGlite.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import type { Knex } from 'knex';
import { newRow } from '../../../bench/statements.js';
import { silentLogger } from '../../../core/log.js';
import { DbPool } from '../../../core/services/db.js';
import { run } from '../../../core/services/statement.js';
import { INSERT_PLAIN_SQL, INSERT_SQL, InsertBatch } from '../../../modules/command/insert-batch.js';
import { migrations } from '../../../modules/command/migrations.js';
import { tempPgliteConfig, withPgSchema } from '../../helpers/db.js';

const PROJECT = 'insert-p';

for (const driver of ['pg', 'pglite'] as const) {
  describe(`the sends' INSERT, keyed and plain (${driver})`, () => {
    let pool: DbPool;
    let db: Knex;
    let cleanup: () => Promise<void>;

    before(async () => {
      if (driver === 'pg') {
        const schema = await withPgSchema();
        pool = new DbPool({ default: schema.config }, silentLogger());
        cleanup = schema.drop;
      } else {
        const lite = tempPgliteConfig();
        pool = new DbPool({ default: lite.config }, silentLogger());
        cleanup = async () => lite.cleanup();
      }
      await pool.migrate('command', migrations);
      db = pool.get();
    });

    after(async () => {
      await pool?.close();
      await cleanup?.();
    });

    const stored = async (id: string) => {
      const [t] = (await db.raw('SELECT * FROM command_tracker WHERE command_id = ?', [id])).rows;
      const [o] = (await db.raw('SELECT * FROM command_outbox WHERE command_id = ?', [id])).rows;
      // what differs between two sends by nature: ids and the row's own serial ids
      for (const r of [t, o]) {
        delete r.id;
        delete r.command_id;
      }
      return { t, o };
    };

    test('both texts store the same tracker and outbox rows for a send without a key', async () => {
      const a = newRow(PROJECT);
      const b = {
        ...newRow(PROJECT),
        created_at: a.created_at,
        timeout_at: a.timeout_at,
        next_attempt_at: a.next_attempt_at,
      };
      const [ra] = await run<{ command_id: string; outbox_id: unknown }>(db, INSERT_SQL, [JSON.stringify([a])]);
      const [rb] = await run<{ command_id: string; outbox_id: unknown }>(db, INSERT_PLAIN_SQL, [JSON.stringify([b])]);
      assert.equal(ra.command_id, a.command_id);
      assert.equal(rb.command_id, b.command_id);
      assert.ok(ra.outbox_id !== null && rb.outbox_id !== null);
      assert.deepEqual(await stored(b.command_id), await stored(a.command_id));
      // a second send of a stored id comes back empty from either text
      assert.deepEqual(await run(db, INSERT_PLAIN_SQL, [JSON.stringify([b])]), []);
      assert.deepEqual(await run(db, INSERT_SQL, [JSON.stringify([b])]), []);
    });

    test('a group with one keyed send writes its key row; a group without keys writes none', async () => {
      const batch = new InsertBatch(() => db);
      const keys = async () => Number((await db.raw('SELECT count(*) AS n FROM command_idempotency')).rows[0].n);
      const before = await keys();
      const plain = [newRow(PROJECT), newRow(PROJECT)];
      const keyed = { ...newRow(PROJECT), idempotency_key: `k-${Date.now()}`, request_hash: 'h' };
      const mixed = await Promise.all([plain[0], keyed].map((r) => batch.add(r)));
      assert.deepEqual(
        mixed.map((r) => r?.command_id),
        [plain[0].command_id, keyed.command_id],
      );
      assert.equal(await keys(), before + 1);
      const alone = await batch.add(plain[1]);
      assert.equal(alone?.command_id, plain[1].command_id);
      assert.equal(await keys(), before + 1);
      // the key now held: the same key again writes nothing
      const again = await batch.add({ ...newRow(PROJECT), idempotency_key: keyed.idempotency_key, request_hash: 'h' });
      assert.equal(again, null);
    });
  });
}
