/**
 * The project store's cache on both backends: lookups of uncached projects made at one moment
 * share one database read (ten thousand agents connecting at once must not mean ten thousand
 * reads, one after another: bench `memory` saw the broker's logins time out behind them), the
 * answers are the same as one read each would give, and a failed read rejects its waiters
 * without leaving them stuck.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { type ProjectRecord, ProjectStore } from '../../../modules/status/projects.js';
import { type PresenceDb, statusDb } from './pg-presence-db.js';

const clock = { now: () => Date.now() };
const TTL_MS = 60_000;

for (const backend of ['pglite', 'pg'] as const) {
  describe(`project store cache (${backend})`, () => {
    let h: PresenceDb;
    const ids = Array.from({ length: 120 }, (_, i) => `store-${backend}-${i}`);
    const secrets = new Map<string, string>();
    before(async () => {
      h = await statusDb(backend);
      const writer = new ProjectStore(() => h.db, clock, TTL_MS);
      for (const id of ids) secrets.set(id, (await writer.create({ project_id: id })).created.secret);
    });
    after(async () => {
      await h?.close();
    });

    test('the misses of one moment are read in one query; the next lookups are answered from memory', async () => {
      const reader = new ProjectStore(() => h.db, clock, TTL_MS); // a cold cache, as after a start
      const projectReads: string[] = [];
      const count = (q: { sql: string }) => {
        if (/from "project"/i.test(q.sql)) projectReads.push(q.sql);
      };
      h.db.on('query', count);
      try {
        const unknown = ['store-unknown-1', 'store-unknown-2'];
        const asked = [...ids, ...unknown, ids[0], ids[1]]; // twice the same id: one entry
        const got = await Promise.all(asked.map((id) => reader.lookup(id)));
        assert.equal(projectReads.length, 1, `one read for ${asked.length} lookups: ${projectReads.join(' | ')}`);
        asked.forEach((id, i) => {
          const rec = got[i] as ProjectRecord | null;
          if (unknown.includes(id)) assert.equal(rec, null, id);
          else {
            assert.equal(rec?.project_id, id);
            assert.equal(rec?.secret, secrets.get(id));
          }
        });
        const again = ids.map((id) => reader.lookup(id));
        assert.ok(
          again.every((r) => !(r instanceof Promise)),
          'cached: answered without a promise',
        );
        assert.equal(projectReads.length, 1);
      } finally {
        h.db.off('query', count);
      }
    });

    test('a failed read rejects every waiter of its moment; the next lookup reads again', async () => {
      let down = true;
      const reader = new ProjectStore(
        () => {
          if (down) throw new Error('database unreachable');
          return h.db;
        },
        clock,
        TTL_MS,
      );
      const failed = await Promise.allSettled(ids.slice(0, 10).map((id) => reader.lookup(id)));
      assert.deepEqual(
        failed.map((r) => (r.status === 'rejected' ? (r.reason as Error).message : 'resolved')),
        Array(10).fill('database unreachable'),
      );
      down = false;
      const back = await Promise.all(ids.slice(0, 10).map((id) => reader.lookup(id)));
      assert.deepEqual(
        back.map((r) => r?.project_id),
        ids.slice(0, 10),
      );
    });
  });
}
