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

describe('project store cache: full', () => {
  test('past its size it forgets the least recently used entries, one for one', async () => {
    const store = new ProjectStore(
      () => {
        throw new Error('no database in this test');
      },
      clock,
      TTL_MS,
    );
    const s = store as unknown as { remember(id: string, rec: ProjectRecord | null): void };
    const MAX = 100_000;
    for (let i = 0; i < MAX; i++) s.remember(`full-${i}`, null);
    assert.equal(store.cachedCount, MAX);
    assert.equal(store.lookup('full-0'), null, 'answered from memory (known not to exist), and now recently used');
    s.remember('full-new', null);
    assert.equal(store.cachedCount, MAX, 'one in, one out');
    assert.equal(store.lookup('full-0'), null, 'recently used: kept');
    assert.equal(store.lookup('full-new'), null);
    // the least recently used went: looking it up reads the database (here: none, so it fails)
    const gone = store.lookup('full-1');
    assert.ok(gone instanceof Promise, 'not in memory');
    await assert.rejects(gone, /no database in this test/);
    assert.equal(store.lookup('full-2'), null, 'the next one is still there');
  });
});
