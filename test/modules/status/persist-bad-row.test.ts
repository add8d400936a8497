/**
 * A bad row never blocks a presence batch: rows the database refuses for their data (NUL in a
 * JSON string, which PostgreSQL's text cannot hold; a value nested deeper than anything can
 * serialize) are found by bisection, counted, logged once in a short line, and the rest of the
 * batch is written — on a real PostgreSQL, with values that get past the edge check only because
 * this test puts them in memory directly (as a row stored before the check, or a future bug,
 * would).
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { silentLogger } from '../../../core/log.js';
import { Flusher } from '../../../modules/status/persist.js';
import { Presence } from '../../../modules/status/presence.js';
import { captureLog, LEVEL } from '../../fixtures/capture-log.js';
import { presenceDbForSuite } from './pg-presence-db.js';

describe('presence flush with bad rows (PostgreSQL)', () => {
  const database = presenceDbForSuite();

  test('good rows are written, each bad one counted and logged once without its data', async () => {
    const db = database();
    const presence = new Presence({ now: () => Date.now() }, () => undefined);
    const cap = captureLog();
    const flusher = new Flusher(() => db, presence, cap.log);
    let deep: Record<string, unknown> = { leaf: 1 };
    for (let i = 0; i < 20_000; i++) deep = { d: deep };
    const ids: string[] = [];
    for (let i = 0; i < 40; i++) {
      const e = presence.ensure(`row-${i}`);
      if (i === 7) e.metrics = { cpu: 'a\u0000b'.repeat(1000) };
      else if (i === 23) e.metrics = deep;
      else if (i === 31) presence.transition(e, 'online', 'reason with \u0000 in it');
      else e.metrics = { cpu: i };
      ids.push(e.project_id);
    }
    await flusher.flush();
    const rows: Array<{ project_id: string }> = await db('project_status').select('project_id');
    const written = new Set(rows.map((r) => r.project_id));
    for (const id of ids) {
      if (id === 'row-7' || id === 'row-23') assert.ok(!written.has(id), `${id} should have been refused`);
      else assert.ok(written.has(id), `${id} missing`);
    }
    // row-31's presence row is fine; its history row (the reason holds NUL) is the bad one
    const hist: Array<{ project_id: string }> = await db('project_status_history').select('project_id');
    assert.ok(!hist.some((h) => h.project_id === 'row-31'));
    assert.equal(flusher.stats.bad_rows, 3);
    assert.equal(flusher.stats.rows_written, 38);
    assert.equal(flusher.stats.failures, 0);
    assert.equal(presence.pendingWrites, 0, 'nothing is put back to fail again');
    const refused = cap.find('presence row refused by the database; written the batch without it');
    assert.equal(refused.length, 3);
    for (const l of cap.lines) {
      assert.ok(JSON.stringify(l).length < 1_000, `a long log line: ${JSON.stringify(l).slice(0, 200)}`);
      assert.ok(l.level < LEVEL.error);
    }

    // the next batch is not held up by anything left over
    presence.ensure('after');
    await flusher.flush();
    assert.ok(await db('project_status').where({ project_id: 'after' }).first());
  });

  test('a database that is down keeps the whole batch for the next flush', async () => {
    const db = database();
    const presence = new Presence({ now: () => Date.now() }, () => undefined);
    const down = Object.assign(new Error('connect ECONNREFUSED'), { code: 'ECONNREFUSED' });
    let fail = true;
    const flusher = new Flusher(
      () => db,
      presence,
      silentLogger(),
      async (d, batch) => {
        if (fail) throw down;
        const { writeBatch } = await import('../../../modules/status/persist.js');
        await writeBatch(d, batch);
      },
    );
    for (let i = 0; i < 5; i++) presence.ensure(`down-${i}`);
    await flusher.flush();
    assert.equal(flusher.stats.failures, 1);
    assert.equal(flusher.stats.bad_rows, 0);
    assert.equal(presence.pendingWrites, 5);
    fail = false;
    await flusher.flush();
    assert.equal(presence.pendingWrites, 0);
    assert.equal((await db('project_status').where('project_id', 'like', 'down-%')).length, 5);
  });
});
