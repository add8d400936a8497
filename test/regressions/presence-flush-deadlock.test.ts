/**
 * Regression (issue 11, found by `npm run scale` under load): three instances flushing presence
 * deadlocked in PostgreSQL ("presence flush failed", 40P01). Each flush is one transaction that
 * upserts heartbeat rows and then applies transitions, each instance in its own order, so two
 * instances with overlapping projects locked the same rows in opposite orders. A deadlock is not
 * a lost write (the batch is retried at the next flush), but under load the retries delayed
 * heartbeats past the silence timeout and projects that were online were called offline.
 *
 * Here two writers flush the same projects at once, one in ascending order, one in descending,
 * with transitions in the opposite order of their heartbeat rows: no flush may fail. A batch of
 * heartbeat rows alone takes its row locks through its UPSERT statements, without a lock
 * statement first: two such batches, in opposite orders and larger than one statement's rows,
 * may not deadlock either, with each other or with a batch that has transitions.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { writeBatch } from '../../modules/status/persist.js';
import { type Batch, Presence, type PresenceEntry, type Transition } from '../../modules/status/presence.js';
import { presenceDbForSuite } from '../modules/status/pg-presence-db.js';

const PROJECTS = 1000;

/** A transition that always applies (no expectation). */
const alwaysApplies = (e: PresenceEntry, at: number): Transition => ({
  project_id: e.project_id,
  to: 'offline',
  at,
  steps: [],
  expect: {},
  set: { handshake: null },
});
const ROUNDS = 10;

describe('regression: concurrent presence flushes never deadlock (PostgreSQL)', () => {
  const database = presenceDbForSuite(4);

  test('two instances flushing the same projects in opposite orders', async () => {
    const db = database();
    const ids = Array.from({ length: PROJECTS }, (_, i) => `dl-${String(i).padStart(3, '0')}`);
    const presence = new Presence({ now: () => Date.now() }, () => undefined);
    const entries = ids.map((id) => presence.ensure(id));
    // the rows exist, as they do once a project is created
    await writeBatch(db, { rows: entries, ops: [] });

    const batch = (order: PresenceEntry[], at: number): Batch => ({
      rows: order.map((e) => ({ ...e, last_heartbeat_at: at, updated_at: at })),
      // in the opposite order of the rows
      ops: [...order].reverse().map((e) => alwaysApplies(e, at)),
    });
    const failures: string[] = [];
    for (let round = 0; round < ROUNDS; round++) {
      const at = Date.now() + round;
      const results = await Promise.allSettled([
        writeBatch(db, batch(entries, at)),
        writeBatch(db, batch([...entries].reverse(), at)),
      ]);
      for (const r of results) {
        if (r.status === 'rejected') failures.push(String((r.reason as { code?: string }).code ?? r.reason));
      }
    }
    assert.deepEqual(failures, [], `flushes failed: ${failures.join(', ')}`);
  });

  test('heartbeat rows alone, in opposite orders, over more than one statement, beside transitions', async () => {
    const db = database();
    // more rows than one UPSERT statement takes (5 000), so a batch is written in several
    const many = 6_500;
    const ids = Array.from({ length: many }, (_, i) => `hb-${String(i).padStart(5, '0')}`);
    const presence = new Presence({ now: () => Date.now() }, () => undefined);
    const entries = ids.map((id) => presence.ensure(id));
    await writeBatch(db, { rows: entries, ops: [] });
    const rows = (order: PresenceEntry[], at: number) =>
      order.map((e) => ({ ...e, last_heartbeat_at: at, updated_at: at, metrics: { at } }));
    const failures: string[] = [];
    let lastAt = 0;
    for (let round = 0; round < 4; round++) {
      const at = Date.now() + round;
      lastAt = at;
      const results = await Promise.allSettled([
        writeBatch(db, { rows: rows(entries, at), ops: [] }),
        writeBatch(db, { rows: rows([...entries].reverse(), at), ops: [] }),
        writeBatch(db, {
          rows: rows(entries.slice(0, 3000).reverse(), at),
          ops: entries.slice(2000, 5500).map((e) => alwaysApplies(e, at)),
        }),
      ]);
      for (const r of results) {
        if (r.status === 'rejected') failures.push(String((r.reason as { code?: string }).code ?? r.reason));
      }
    }
    assert.deepEqual(failures, [], `flushes failed: ${failures.join(', ')}`);
    // and every row holds the last round's heartbeat
    const latest = await db('project_status')
      .whereIn('project_id', ids)
      .max('last_heartbeat_at as max')
      .min('last_heartbeat_at as min');
    assert.equal(new Date(latest[0].min).getTime(), lastAt);
    assert.equal(new Date(latest[0].max).getTime(), lastAt);
  });
});
