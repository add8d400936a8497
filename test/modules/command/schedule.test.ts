/**
 * Scheduled sends in the command module (issue 14 item 2), on both drivers: a send with a future
 * schedule_at is `scheduled` until its time and nothing is published before it; then it goes the
 * normal way (sent, queued or failed per offline_policy) with its timeout counted from then; a
 * cancel before the time means it is never published; a module restart in between still starts
 * it once; refusals carry CMD_ERR_INVALID with field schedule_at and change nothing; an
 * idempotency key covers schedule_at. On PostgreSQL, two hub instances on one schema start each
 * scheduled command exactly once.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { errorCode } from '../../../core/errors.js';
import { COMMAND, type CommandView, type SentCommand } from '../../../modules/command/contract/topics.js';
import { scaled, until } from '../../helpers/wait.js';
import { DRIVERS, type Driver, type Hub, startHub } from './harness.js';

type Page = { items: CommandView[]; total: number };
type Stats = { rejected: number; scheduled_started: number; scheduled_failed: number };

async function refusal(p: Promise<unknown>): Promise<{ code: string | undefined; field: unknown; message: string }> {
  try {
    await p;
  } catch (err) {
    return {
      code: errorCode(err),
      field: (err as { details?: { field?: unknown } }).details?.field,
      message: (err as Error).message,
    };
  }
  assert.fail('expected a refusal');
}

/** An ISO time `ms` from now. */
const inMs = (ms: number) => new Date(Date.now() + ms).toISOString();
/** Far enough ahead that the checks made right after the send run before it on a busy machine. */
const AHEAD_MS = scaled(1_500);
const THIRTY_DAYS_MS = 30 * 24 * 3600 * 1000;

for (const driver of DRIVERS) {
  describe(`scheduled sends (${driver.name})`, () => {
    let hub: Hub;
    before(async () => {
      hub = await startHub(driver);
    });
    after(async () => {
      await hub?.stop();
    });

    const send = (r: Record<string, unknown>) => hub.req<SentCommand>(COMMAND.send, r);
    const stats = () => hub.req<Stats>(COMMAND.stats, {});
    const statesOf = (id: string) =>
      hub.w.events
        .filter((e) => e.kind === 'state' && e.command.command_id === id)
        .map((e) => e.kind === 'state' && e.command.status);

    // Each of these waits for its command's time, on a project of its own: side by side, the
    // suite waits once for the longest instead of once for each (the rest count refusals or
    // restart the module, so they run after, one at a time).
    describe('commands that wait for their times, side by side', { concurrency: true }, () => {
      test('scheduled until its time, published only then, its timeout counted from the start', async () => {
        hub.project('s-run');
        // a timeout shorter than the wait for the start: counted from the acceptance it would have
        // run out; long enough for the delivery after the start on a busy machine (400 ms was not:
        // published 0.5 s after its start beside two suites, it timed out before its result)
        const timeoutMs = scaled(2_500);
        const at = inMs(timeoutMs + AHEAD_MS);
        const v = await send({ project_id: 's-run', command_type: 'echo', schedule_at: at, timeout_ms: timeoutMs });
        assert.equal(v.status, 'scheduled');
        assert.equal(v.schedule_at, at);
        const listed = await hub.req<Page>(COMMAND.list, { project_id: 's-run', status: ['scheduled'] });
        assert.deepEqual(
          listed.items.map((c) => c.command_id),
          [v.command_id],
        );
        const d = await hub.waitStatus(v.command_id, (c) => c.status === 'completed', 'completed', 20_000);
        const pubs = hub.publishedFor(v.command_id);
        assert.ok(pubs.length >= 1);
        for (const p of pubs)
          assert.ok(p.at >= Date.parse(at), `published at ${new Date(p.at).toISOString()}, before ${at}`);
        // signed at the start, not at the acceptance
        assert.ok(pubs[0].msg.timestamp >= Date.parse(at) - 1000, `signed at ${pubs[0].msg.timestamp}`);
        assert.ok(
          Date.parse(d.timeout_at) >= Date.parse(at) + timeoutMs,
          `timeout_at ${d.timeout_at} counts from the start`,
        );
        // The stored status can be read back before the watcher's mailbox has its event (a busy
        // machine, beside another suite: "scheduled pending sent"), so wait for the event itself.
        await until(() => statesOf(v.command_id).includes('completed'), 10_000, 'the completed event').catch(
          (err: Error) => {
            throw new Error(`${err.message}: states ${statesOf(v.command_id).join(' ')}`);
          },
        );
        const states = statesOf(v.command_id);
        assert.equal(states[0], 'scheduled');
        assert.ok(states.indexOf('pending') > 0, `states ${states.join(' ')}`);
        // Known, not yet explained: a clean CI run here once saw this command's `sent` event after
        // its `completed` one on PostgreSQL, which the version gate (events.ts) should refuse; the
        // stored status is right (checked above). Written up in the closing note of this stop.
      });

      test('cancelled before its time: never published; a started one cannot be cancelled', async () => {
        hub.project('s-cancel');
        const at = inMs(AHEAD_MS);
        const v = await send({ project_id: 's-cancel', command_type: 'echo', schedule_at: at });
        const c = await hub.req<CommandView>(COMMAND.cancel, { command_id: v.command_id });
        assert.equal(c.status, 'cancelled');
        // a later command on the same project has started, so the scheduler went past the first one's time
        const later = await send({ project_id: 's-cancel', command_type: 'echo', schedule_at: inMs(AHEAD_MS + 200) });
        await hub.waitStatus(later.command_id, (d) => d.status === 'completed', 'later completed', 20_000);
        assert.equal(hub.publishedFor(v.command_id).length, 0, 'a cancelled scheduled command is never published');
        const d = await hub.get(v.command_id);
        assert.equal(d.status, 'cancelled');
        assert.equal(d.sent_at, null);
        const again = await refusal(hub.req(COMMAND.cancel, { command_id: later.command_id }));
        assert.equal(again.code, 'CMD_ERR_NOT_CANCELLABLE');
      });

      test('offline_policy applies at the time: fail → failed (dead, replayable); queue → waits, then runs', async () => {
        hub.project('s-off-fail', 'offline');
        hub.project('s-off-queue', 'offline');
        const at = inMs(AHEAD_MS);
        // accepted although the project is offline now: what counts is its state at the time
        const f = await send({ project_id: 's-off-fail', command_type: 'echo', schedule_at: at });
        const q = await send({
          project_id: 's-off-queue',
          command_type: 'echo',
          schedule_at: at,
          offline_policy: 'queue',
          // the longest allowed: more than a 32-bit integer of milliseconds
          queue_ttl_ms: THIRTY_DAYS_MS,
        });
        assert.equal(f.status, 'scheduled');
        const failed = await hub.waitStatus(f.command_id, (d) => d.status === 'failed', 'failed at its time', 20_000);
        assert.match(failed.error ?? '', /offline at the scheduled time \(offline_policy fail\)/);
        const dead = await hub.req<Page>(COMMAND.deadList, { limit: 500 });
        assert.ok(
          dead.items.some((c) => c.command_id === f.command_id),
          'its outbox row is dead (replayable)',
        );
        const queued = await hub.waitStatus(q.command_id, (d) => d.status === 'pending', 'queued at its time', 20_000);
        assert.equal(hub.publishedFor(q.command_id).length, 0);
        // the queued wait and then the timeout count from the start
        assert.ok(Date.parse(queued.timeout_at) >= Date.parse(at) + THIRTY_DAYS_MS, queued.timeout_at);
        hub.setState('s-off-queue', 'online');
        await hub.waitStatus(q.command_id, (d) => d.status === 'completed', 'released and completed', 20_000);
        assert.equal(hub.publishedFor(f.command_id).length, 0);
      });

      test('a project disabled before the time: the command fails then', async () => {
        hub.project('s-disabled');
        const v = await send({ project_id: 's-disabled', command_type: 'echo', schedule_at: inMs(AHEAD_MS) });
        hub.project('s-disabled', 'online', 'auto', false);
        const d = await hub.waitStatus(v.command_id, (c) => c.status === 'failed', 'failed', 20_000);
        assert.match(d.error ?? '', /disabled at the scheduled time/);
        assert.equal(hub.publishedFor(v.command_id).length, 0);
      });

      test('a time already past starts at once', async () => {
        hub.project('s-past');
        const v = await send({
          project_id: 's-past',
          command_type: 'echo',
          schedule_at: new Date(Date.now() - 3_600_000).toISOString(),
        });
        assert.notEqual(v.status, 'scheduled');
        await hub.waitStatus(v.command_id, (d) => d.status === 'completed', 'completed');
      });
    });

    test('refusals: sync, unreadable or zoneless times, too far ahead; counted, nothing stored', async () => {
      hub.project('s-bad');
      const before = (await stats()).rejected;
      const cases: Array<[string, Record<string, unknown>]> = [
        ['sync', { is_sync: true, schedule_at: inMs(60_000) }],
        ['no zone', { schedule_at: '2030-01-01T10:00:00' }],
        ['words', { schedule_at: 'tomorrow at noon' }],
        ['no such day', { schedule_at: '2030-02-31T10:00:00Z' }],
        ['a number', { schedule_at: Date.now() + 60_000 }],
        ['too far ahead', { schedule_at: inMs(31 * 24 * 3600 * 1000) }],
      ];
      for (const [what, extra] of cases) {
        const r = await refusal(send({ project_id: 's-bad', command_type: 'echo', ...extra }));
        assert.equal(r.code, 'CMD_ERR_INVALID', `${what}: ${r.message}`);
        assert.equal(r.field, 'schedule_at', `${what}: ${r.message}`);
        assert.match(r.message, /^schedule_at: /, what);
      }
      assert.equal((await stats()).rejected - before, cases.length);
      assert.equal((await hub.req<Page>(COMMAND.list, { project_id: 's-bad' })).total, 0);
    });

    test('an idempotency key covers schedule_at (the instant, not its spelling)', async () => {
      hub.project('s-key');
      const at = new Date(Date.now() + 3_600_000);
      at.setUTCMilliseconds(0);
      const base = { project_id: 's-key', command_type: 'echo', idempotency_key: `sched-${driver.name}` };
      const first = await send({ ...base, schedule_at: at.toISOString() });
      const again = await send({ ...base, schedule_at: at.toISOString().replace('.000Z', '+00:00') });
      assert.equal(again.command_id, first.command_id);
      assert.equal(again.idempotent_replayed, true);
      const other = await refusal(send({ ...base, schedule_at: new Date(at.getTime() + 1000).toISOString() }));
      assert.equal(other.code, 'CMD_ERR_IDEMPOTENCY_MISMATCH');
      const none = await refusal(send(base));
      assert.equal(none.code, 'CMD_ERR_IDEMPOTENCY_MISMATCH');
      await hub.req(COMMAND.cancel, { command_id: first.command_id });
    });

    test('a module restart between acceptance and start: started once after it', async () => {
      hub.project('s-restart');
      const at = inMs(AHEAD_MS);
      const ids: string[] = [];
      for (let i = 0; i < 5; i++) {
        ids.push((await send({ project_id: 's-restart', command_type: 'echo', schedule_at: at })).command_id);
      }
      await hub.h.host.restartModule('command');
      for (const id of ids) await hub.waitStatus(id, (d) => d.status === 'completed', 'completed', 20_000);
      for (const id of ids) {
        const states = statesOf(id).filter((s) => s === 'pending');
        assert.equal(states.length, 1, `${id} started once: ${statesOf(id).join(' ')}`);
        assert.ok(hub.w.executed.has(id));
      }
    });
  });
}

const pg = DRIVERS.find((d) => d.name === 'pg')!;

describe('scheduled sends across two hub instances on one PostgreSQL (pg)', () => {
  const hubs: Hub[] = [];
  let drop: (() => Promise<void>) | undefined;
  before(async () => {
    const db = await pg.db();
    drop = db.cleanup;
    const shared: Driver = { name: 'pg', db: async () => ({ config: db.config, cleanup: async () => undefined }) };
    hubs.push(await startHub(shared));
    hubs.push(await startHub(shared));
  });
  after(async () => {
    for (const h of hubs) await h.stop();
    await drop?.();
  });

  test('every command due at one moment is started by exactly one instance', async () => {
    for (const h of hubs) h.project('s-two');
    const at = inMs(AHEAD_MS);
    const N = 300;
    const ids = new Set<string>();
    // on a slow machine the last sends can be made after `at`: those start at once (a past time),
    // so the scheduler's count is checked against the sends accepted as scheduled
    let scheduled = 0;
    for (let i = 0; i < N; i++) {
      const v = await hubs[i % 2].req<SentCommand>(COMMAND.send, {
        project_id: 's-two',
        command_type: 'echo',
        schedule_at: at,
      });
      ids.add(v.command_id);
      if (v.status === 'scheduled') scheduled++;
    }
    assert.ok(scheduled > 0, 'some sends were accepted as scheduled');
    await until(
      async () =>
        (await hubs[0].req<Page>(COMMAND.list, { project_id: 's-two', status: ['completed'], limit: 1 })).total === N,
      scaled(30_000),
      `${N} completed`,
    );
    // each start is one local scheduled → pending change on one instance only
    const starts = new Map<string, number>();
    for (const h of hubs) {
      for (const e of h.w.events) {
        if (e.kind === 'state' && !e.remote && e.command.status === 'pending' && ids.has(e.command.command_id)) {
          starts.set(e.command.command_id, (starts.get(e.command.command_id) ?? 0) + 1);
        }
      }
    }
    const twice = [...starts].filter(([, n]) => n > 1).map(([id]) => id);
    assert.deepEqual(twice, [], 'started by more than one instance');
    // the instances' counters agree with what was accepted as scheduled: read until they do,
    // within a bound (a run beside another suite read 290 of 300 right after the completions);
    // a failure names the counters and the start events, which tell a late count from a lost one
    let stats: Stats[] = [];
    await until(
      async () => {
        stats = await Promise.all(hubs.map((h) => h.req<Stats>(COMMAND.stats, {})));
        return stats[0].scheduled_started + stats[1].scheduled_started === scheduled;
      },
      scaled(10_000),
      `the scheduler counted ${scheduled} starts`,
    ).catch((err: Error) => {
      throw new Error(
        `${err.message}; counters ${JSON.stringify(stats.map((s) => s.scheduled_started))}, start events ${starts.size}`,
      );
    });
    assert.equal(starts.size, N);
    assert.ok([...starts.values()].every((n) => n === 1));
  });
});
