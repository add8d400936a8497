/**
 * A project's metrics are kept in a json column (migration 006): PostgreSQL checks the text's
 * syntax and keeps it, instead of parsing every heartbeat's metrics into jsonb, which was half of
 * its CPU a heartbeat. What a flush writes must come back as the same object, on a server and on
 * PGlite, whatever the agent put in it: nesting, arrays, large and fractional numbers, escapes,
 * text outside the BMP, keys that sort differently.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { readPresence, writeBatch } from '../../../modules/status/persist.js';
import { Presence } from '../../../modules/status/presence.js';
import { type PresenceDb, statusDb } from './pg-presence-db.js';

const METRICS: Array<Record<string, unknown>> = [
  {
    cpu_percent: 12.34,
    rss_bytes: 52_428_800,
    heap_used_bytes: 8_589_934_592,
    event_loop_lag_ms: 0.1,
    uptime_s: 3600,
  },
  { z: 1, a: 2, m: { nested: [1, 'two', { three: 3 }, null, true] } },
  { text: 'quote " backslash \\ newline \n tab \t é 日本 😀', empty: {}, list: [] },
  { big: 1e21, small: -1.5e-7, max: Number.MAX_SAFE_INTEGER, zero: 0 },
  {},
];

/** The stored metrics of `ids`, read back as the status module reads presence rows. */
async function metricsById(db: PresenceDb['db'], ids: string[]): Promise<Map<string, unknown>> {
  return new Map((await readPresence(db, ids)).map((e) => [e.project_id, e.metrics]));
}

for (const backend of ['pg', 'pglite'] as const) {
  describe(`presence metrics as json (${backend})`, () => {
    let pdb: PresenceDb | undefined;
    before(async () => {
      pdb = await statusDb(backend);
    });
    after(async () => {
      await pdb?.close();
    });

    test('the column is json', async () => {
      const r = await pdb!.db.raw(
        `SELECT data_type FROM information_schema.columns
          WHERE table_schema = current_schema() AND table_name = 'project_status' AND column_name = 'metrics'`,
      );
      assert.equal(r.rows[0]?.data_type, 'json');
    });

    test('metrics written by a flush read back as the same objects, and only newer ones replace them', async () => {
      const db = pdb!.db;
      const presence = new Presence({ now: () => Date.now() }, () => undefined);
      const t0 = Date.now();
      const rows = METRICS.map((metrics, i) => ({
        ...presence.ensure(`mj-${i}`),
        last_heartbeat_at: t0,
        metrics,
        metrics_at: t0,
        updated_at: t0,
      }));
      const ids = rows.map((r) => r.project_id);
      await writeBatch(db, { rows, ops: [] });
      const read = await metricsById(db, ids);
      for (const [i, metrics] of METRICS.entries()) assert.deepEqual(read.get(`mj-${i}`), metrics);

      // an older sample (another instance flushing late) leaves the newer one; a newer one replaces it
      const older = rows.map((r) => ({ ...r, metrics: { stale: true }, metrics_at: t0 - 1_000 }));
      await writeBatch(db, { rows: older, ops: [] });
      const newer = rows.map((r) => ({ ...r, metrics: { fresh: r.project_id }, metrics_at: t0 + 1_000 }));
      await writeBatch(db, { rows: newer.slice(0, 2), ops: [] });
      const reread = await metricsById(db, ids);
      assert.deepEqual(reread.get('mj-0'), { fresh: 'mj-0' });
      assert.deepEqual(reread.get('mj-1'), { fresh: 'mj-1' });
      for (let i = 2; i < METRICS.length; i++) assert.deepEqual(reread.get(`mj-${i}`), METRICS[i]);
    });
  });
}
