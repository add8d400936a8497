/**
 * Regression (found by a clean-clone CI run that hung in test/e2e/outbox.test.ts): the outbox
 * hook for `project.offline` sat in the flusher's write only. The silence sweep (timeouts.ts)
 * writes its transitions itself, so a project that went offline by heartbeat timeout got its
 * history row and no `project.offline` event: consumers never heard of it, and the e2e test,
 * waiting for a crash at that event's publish, waited for ever. Now every presence write goes
 * through the status module's one writer, which adds the domain events of the transitions
 * PostgreSQL applied in the same transaction.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { STATUS } from '../../modules/status/contract/topics.js';
import { until } from '../helpers/wait.js';
import { type Harness, startStatus } from '../modules/status/harness.js';

const TIMEOUT_MS = 30_000;

describe('a project offline by heartbeat timeout has its project.offline event', () => {
  let h: Harness;
  before(async () => {
    h = await startStatus('pg', {
      settings: { heartbeat_timeout_ms: TIMEOUT_MS },
      outbox: {
        routes: {
          watch: {
            events: ['project.online', 'project.offline'],
            // nothing listens there: the events stay in the table, where the test reads them
            destination: { type: 'webhook', url: 'http://127.0.0.1:9/hook', secret: 's'.repeat(16), timeout_ms: 1000 },
            max_attempts: 1000,
          },
        },
      },
    });
  });
  after(() => h.close());

  test('silence → offline → one project.offline row beside the history row', async () => {
    const p = await h.create('silent-1');
    await h.bringOnline('silent-1', p.secret);
    const db = h.host.db.get();
    const events = () => db('status_event_outbox').where({ event_key: 'silent-1' }).orderBy('id').select('event_type');
    await until(async () => (await events()).some((e) => e.event_type === 'project.online'), 10_000, 'project.online');

    const from = h.events.items.length;
    h.clock.advance(TIMEOUT_MS + 1);
    const off = await h.events.wait((e) => e.project_id === 'silent-1' && e.state === 'offline', 'offline', from);
    assert.equal(off.reason, 'heartbeat timeout');
    await until(
      async () => (await events()).some((e) => e.event_type === 'project.offline'),
      10_000,
      'project.offline',
    );
    const offline = (await events()).filter((e) => e.event_type === 'project.offline');
    assert.equal(offline.length, 1, 'one event for the one transition');
    assert.equal((await h.request<{ state: string }>(STATUS.get, { project_id: 'silent-1' })).state, 'offline');
  });
});
