/**
 * Regression (found by the memory suite at 10 000 agents, issue 13): the silence sweep judged by
 * the clock while heartbeats the agents had sent in time still waited in the status module's
 * mailbox behind a registration storm. The whole fleet went offline by the hub's own backlog,
 * and each waiting heartbeat was then answered with a `reregister` (2 000 a second into a publish
 * queue already late). Now the sweep takes its place behind the queue (ModuleBus.settled) and
 * judges silence as of that moment.
 *
 * The backlog is made by holding the status mailbox with a handler the test releases; the
 * sweep runs every 100 ms, so several ticks fall inside the hold.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { STATUS } from '../../modules/status/contract/topics.js';
import { scaled } from '../helpers/wait.js';
import { DRIVERS, type Harness, startStatus } from '../modules/status/harness.js';

const TIMEOUT_MS = 30_000;
const HOLD = 'test/hold-status';

for (const driver of DRIVERS) {
  describe(`the silence sweep waits for the heartbeats a backlog holds (${driver})`, () => {
    let h: Harness;
    before(async () => {
      h = await startStatus(driver, { settings: { heartbeat_timeout_ms: TIMEOUT_MS, sweep_interval_ms: 100 } });
    });
    after(() => h.close());

    test('a heartbeat queued before the timeout keeps the project online; real silence still times out', async () => {
      const p = await h.create('backlog-1');
      await h.bringOnline('backlog-1', p.secret);
      const q = await h.create('backlog-2');
      await h.bringOnline('backlog-2', q.secret);
      const from = h.events.items.length;

      // the status mailbox is busy (one handler holds it), as behind a storm of registrations
      let release!: () => void;
      const held = new Promise<void>((r) => {
        release = r;
      });
      let holding = false;
      h.host.bus.mailbox('status').subscribe(HOLD, async () => {
        holding = true;
        await held;
      });
      void h.host.bus.publish(HOLD, {});
      // backlog-1's agent heartbeats in time; the message waits in the queue. backlog-2's is silent.
      h.data('backlog-1', 'heartbeat', {}, { secret: p.secret });
      h.clock.advance(TIMEOUT_MS + 1);
      // several sweep ticks while the queue is held (before the fix, each judged by the clock)
      await new Promise((r) => setTimeout(r, scaled(1_500)));
      assert.ok(holding, 'the hold ran');
      release();

      const off = await h.events.wait(
        (e) => e.project_id === 'backlog-2' && e.state === 'offline',
        'backlog-2 offline',
        from,
      );
      assert.equal(off.reason, 'heartbeat timeout');
      await h.sweepPassed();
      await h.flushed();
      const changes = h.events.items.slice(from).filter((e) => e.project_id === 'backlog-1');
      assert.deepEqual(
        changes.map((e) => e.state),
        [],
        'backlog-1 heartbeated before the timeout: no transition',
      );
      assert.equal((await h.request<{ state: string }>(STATUS.get, { project_id: 'backlog-1' })).state, 'online');
      const s = await h.stats();
      assert.equal(s.reregisters_sent, 0, 'no agent asked to register again');
    });
  });
}
