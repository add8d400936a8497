import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { Knex } from 'knex';
import { silentLogger } from '../../../core/log.js';
import type { WriteResult } from '../../../modules/status/persist.js';
import type { Presence, PresenceEntry, Transition } from '../../../modules/status/presence.js';
import { Timeouts } from '../../../modules/status/timeouts.js';

/** One project silent for far longer than the timeout, and a sweep whose queue the test releases. */
function sweeper() {
  let now = 1_000_000;
  const silent = { project_id: 'quiet-1', state: 'online', state_since: 0, last_heartbeat_at: 0, pending: 0 };
  const writes: Transition[][] = [];
  let release: () => void = () => {};
  const queue = new Promise<void>((r) => {
    release = r;
  });
  const timeouts = new Timeouts(
    {
      db: () => ({}) as Knex,
      presence: { all: () => [silent as unknown as PresenceEntry], decided: () => {} } as unknown as Presence,
      clock: { now: () => now },
      log: silentLogger(),
      timeoutMs: 10_000,
      channel: () => null,
      settled: () => queue,
      reread: () => {},
      write: async (_db, batch): Promise<WriteResult> => {
        writes.push(batch.ops);
        return { applied: new Map(batch.ops.map((o) => [o, 1])) };
      },
    },
    0,
  );
  now += 60_000;
  return { timeouts, writes, release };
}

test('a sweep takes the silent project offline once the queue ahead of it is handled', async () => {
  const { timeouts, writes, release } = sweeper();
  const done = timeouts.sweep();
  release();
  await done;
  assert.equal(writes.length, 1);
  assert.deepEqual(
    writes[0].map((o) => [o.project_id, o.to]),
    [['quiet-1', 'offline']],
  );
  assert.equal(timeouts.timed_out, 1);
});

test('a sweep waiting behind the queue when its module stops decides nothing', async () => {
  const { timeouts, writes, release } = sweeper();
  const done = timeouts.sweep();
  await timeouts.stop();
  // the queue is handled by the next instance; the stopped one wakes up after its stop
  release();
  await done;
  assert.equal(writes.length, 0, 'a stopped instance wrote a presence transition');
  assert.equal(timeouts.timed_out, 0);
});
