/**
 * Every heartbeat rewrites its project's presence row. The table leaves room on each page
 * (migration 005, fillfactor 70) so that the new version of a row fits beside the old one: a HOT
 * update, no new primary-key entry, the old version pruned in place. With full pages almost none
 * were (1 % measured) and the table grew by a dead copy of every row at every flush.
 *
 * Measured inside one transaction (PostgreSQL's per-transaction counters), so no vacuum, pruning or
 * other session's snapshot can change the answer: the first rewrite of freshly written rows is
 * HOT exactly when their pages have room. Within one transaction nothing is pruned, so a page
 * 70 % full takes new versions of about 30/70 of its rows (43 %); between flushes the old versions
 * are pruned and the room comes back. With full pages none fit (0 of 2 000 measured).
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { writeBatch } from '../../../modules/status/persist.js';
import { Presence } from '../../../modules/status/presence.js';
import { presenceDbForSuite } from './pg-presence-db.js';

const PROJECTS = 2_000;

describe('presence rows: a heartbeat flush rewrites rows in place (PostgreSQL)', () => {
  const database = presenceDbForSuite();

  test('the table keeps room on its pages', async () => {
    const db = database();
    const r = await db.raw(
      `SELECT reloptions FROM pg_class WHERE oid = to_regclass(current_schema() || '.project_status')`,
    );
    assert.deepEqual(r.rows[0]?.reloptions, ['fillfactor=70']);
  });

  test('the rows of a heartbeat flush are updated HOT', async () => {
    const db = database();
    const presence = new Presence({ now: () => Date.now() }, () => undefined);
    const ids = Array.from({ length: PROJECTS }, (_, i) => `hot-${String(i).padStart(4, '0')}`);
    const entries = ids.map((id) => presence.ensure(id));
    // the rows as a first heartbeat leaves them (inserted: the pages filled to the fillfactor)
    const now = Date.now();
    await writeBatch(db, {
      rows: entries.map((e) => ({
        ...e,
        last_heartbeat_at: now,
        metrics: { cpu_percent: 12.5, mem_total_bytes: 8_589_934_592, disks: [{ mount: '/', used: 0.42 }] },
        metrics_at: now,
        updated_at: now,
      })),
      ops: [],
    });
    const at = now + 1_000;
    const heartbeats = entries.map((e) => ({
      ...e,
      last_heartbeat_at: at,
      metrics: { cpu_percent: 50, mem_total_bytes: 8_589_934_592, disks: [{ mount: '/', used: 0.43 }] },
      metrics_at: at,
      updated_at: at,
    }));
    await db.transaction(async (trx) => {
      // writeBatch's own transaction is a savepoint inside this one
      await writeBatch(trx, { rows: heartbeats, ops: [] });
      const r = await trx.raw(
        `SELECT pg_stat_get_xact_tuples_updated(c.oid)::int AS updated, pg_stat_get_xact_tuples_hot_updated(c.oid)::int AS hot
           FROM pg_class c WHERE c.oid = to_regclass(current_schema() || '.project_status')`,
      );
      const { updated, hot } = r.rows[0] as { updated: number; hot: number };
      assert.equal(updated, PROJECTS, 'every row rewritten once');
      assert.ok(
        hot >= PROJECTS * 0.3,
        `${hot} of ${updated} updates HOT (a full page has no room for the new version)`,
      );
    });
  });
});
