/**
 * Rollouts at size, through real hub processes on PostgreSQL and Mosquitto with a fleet of
 * simulated agents in a child process: 1 000 targets within max_in_flight 50 (sampled all along,
 * at the hub and at the agents), an abort when the failure ratio crosses its threshold, a cancel
 * under a per-minute rate, a hub killed mid-job that resumes without a second send, and two
 * instances on one database with one driver per job (and a takeover when the driver dies).
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { after, before, describe, test } from 'node:test';
import type { Json } from '../../e2e/harness.js';
import { withPgSchema } from '../../helpers/db.js';
import { scaled } from '../../helpers/wait.js';
import { Fleet, JobsHub, poll, provision } from './fleet-harness.js';

const FLEET = 1_000;
const TERMINAL = ['completed', 'failed', 'timeout', 'cancelled'];

describe('job rollouts (PostgreSQL + Mosquitto, 1 000 simulated agents)', () => {
  let drop: () => Promise<void>;
  let a: JobsHub;
  let b: JobsHub | undefined;
  let fleet: Fleet;
  let projects: Array<{ project_id: string; secret: string }>;
  const tag = `jf-${randomBytes(3).toString('hex')}`;
  const group = `jobs-${randomBytes(3).toString('hex')}`;
  let db: Record<string, unknown>;
  // The lease is renewed every 100 ms tick, so 2 s (×GMQ_TEST_TIME_SCALE) leaves a live driver a
  // wide margin; it is also how long a killed driver's job waits to be taken over, twice below.
  const jobsSettings = { tick_ms: 100, reconcile_ms: 1_000, lease_ms: scaled(2_000) };

  before(async () => {
    const s = await withPgSchema();
    drop = s.drop;
    db = { ...s.config };
    a = new JobsHub('hub-a', db, group, jobsSettings);
    await a.start();
    projects = await provision(a, FLEET, tag);
    fleet = new Fleet(projects, 20);
    await poll(
      () => fleet.registered,
      120_000,
      () => `the fleet registered (stderr: ${fleet.stderr.join('\n')})`,
    );
    await poll(
      async () => (await a.api('GET', '/projects/online')).json.items.length >= FLEET,
      60_000,
      () => 'every fleet project online',
    );
  });

  after(async () => {
    await fleet?.dispose();
    await b?.dispose();
    await a?.dispose();
    await drop?.();
  });

  async function create(hub: JobsHub, body: unknown): Promise<Json> {
    const r = await hub.api('POST', '/jobs', body);
    assert.equal(r.status, 201, JSON.stringify(r.json));
    return r.json;
  }

  async function commandsOf(hub: JobsHub, jobId: string): Promise<Json[]> {
    const out: Json[] = [];
    for (let offset = 0; ; offset += 500) {
      const page = (await hub.api('GET', `/commands?job_id=${jobId}&limit=500&offset=${offset}`)).json;
      out.push(...page.items);
      if (page.items.length < 500) return out;
    }
  }

  async function waitJob(hub: () => JobsHub, jobId: string, pred: (j: Json) => boolean, what: string, ms = 120_000) {
    let last: Json;
    await poll(
      async () => {
        last = (await hub().api('GET', `/jobs/${jobId}`)).json;
        return pred(last);
      },
      ms,
      () => `job ${jobId} ${what} (last: ${JSON.stringify(last)})`,
    );
    return last;
  }

  const sum = (c: Json) => c.pending + c.in_flight + c.completed + c.failed + c.timeout + c.cancelled;

  test('1 000 targets with max_in_flight 50: every target accounted for, never more than 50 in flight', async () => {
    const job = await create(a, {
      targets: { metadata: { fleet: tag } },
      command_type: 'echo',
      payload: { n: 1 },
      rollout: { max_in_flight: 50 },
    });
    assert.equal(job.counts.total, FLEET);
    let samples = 0;
    let maxSeen = 0;
    let maxLive = 0;
    let last: Json;
    await poll(
      async () => {
        last = (await a.api('GET', `/jobs/${job.job_id}`)).json;
        samples++;
        maxSeen = Math.max(maxSeen, last.counts.in_flight);
        assert.ok(last.counts.in_flight <= 50, `in flight ${last.counts.in_flight} > 50`);
        assert.equal(sum(last.counts), FLEET);
        if (samples % 3 === 0) {
          // the command module's own view: commands of the job not terminal yet
          const live = (await a.api('GET', `/commands?job_id=${job.job_id}&status=pending,sent,acked&limit=1`)).json;
          maxLive = Math.max(maxLive, live.total);
          assert.ok(live.total <= 50, `${live.total} commands of the job live at once`);
        }
        return last.status === 'completed';
      },
      300_000,
      () => `the job completed (last: ${JSON.stringify(last)})`,
    );
    assert.deepEqual(last.counts, {
      total: FLEET,
      pending: 0,
      in_flight: 0,
      completed: FLEET,
      failed: 0,
      timeout: 0,
      cancelled: 0,
    });
    assert.ok(samples >= 5, `only ${samples} samples`);
    assert.ok(maxSeen > 0 && maxLive > 0, 'the samples saw the rollout under way');
    const cmds = await commandsOf(a, job.job_id);
    assert.equal(cmds.length, FLEET);
    assert.equal(new Set(cmds.map((c) => c.project_id)).size, FLEET);
    assert.ok(cmds.every((c) => c.status === 'completed' && c.job_id === job.job_id));
    // at the agents: each command ran once, and never more than 50 at once
    assert.ok(cmds.every((c) => fleet.executed.has(c.command_id)));
    assert.ok(fleet.stats.max_running <= 50, `the fleet ran ${fleet.stats.max_running} at once`);
  });

  test('a job whose failure ratio crosses its threshold aborts, says so, and never sends the rest', async () => {
    const ids = projects.slice(0, 200).map((p) => p.project_id);
    const job = await create(a, {
      targets: { project_ids: ids },
      command_type: 'echo',
      payload: { fail: true },
      rollout: { max_in_flight: 5 },
      abort: { failure_ratio: 0.5, min_done: 10 },
    });
    const aborted = await waitJob(
      () => a,
      job.job_id,
      (j) => j.status === 'aborted',
      'aborted',
    );
    assert.match(aborted.reason, /failure ratio .* reached the abort threshold 0\.5/);
    const settled = await waitJob(
      () => a,
      job.job_id,
      (j) => j.counts.in_flight === 0,
      'no target in flight',
    );
    const c = settled.counts;
    assert.equal(sum(c), 200);
    assert.ok(c.failed >= 10, `failed ${c.failed}`);
    assert.ok(c.cancelled > 100, `cancelled ${c.cancelled}`);
    assert.equal(c.pending, 0);
    const cmds = await commandsOf(a, job.job_id);
    const cancelledCommands = cmds.filter((x) => x.status === 'cancelled').length;
    assert.equal(cmds.length, 200 - (c.cancelled - cancelledCommands), 'targets cancelled unsent have no command');
    assert.ok(cmds.every((x) => TERMINAL.includes(x.status)));
  });

  test('cancel under max_per_minute: pending targets are never sent, and no more than 60 go in a minute', async () => {
    const ids = projects.slice(200, 500).map((p) => p.project_id);
    const job = await create(a, {
      targets: { project_ids: ids },
      command_type: 'echo',
      rollout: { max_in_flight: 50, max_per_minute: 60 },
    });
    await waitJob(
      () => a,
      job.job_id,
      (j) => j.counts.completed >= 10,
      '10 completed',
    );
    const r = await a.api('POST', `/jobs/${job.job_id}/cancel`, {});
    assert.equal(r.status, 200);
    assert.equal(r.json.status, 'cancelled');
    assert.equal(r.json.counts.pending, 0);
    const settled = await waitJob(
      () => a,
      job.job_id,
      (j) => j.counts.in_flight === 0,
      'nothing in flight',
    );
    assert.equal(settled.status, 'cancelled');
    assert.equal(sum(settled.counts), 300);
    const sent = (await commandsOf(a, job.job_id)).length;
    assert.ok(sent <= 60, `${sent} sent within the first minute`);
    assert.ok(settled.counts.cancelled >= 240);
    // a barrier: another job runs to its end, so the driver made passes since the cancel
    const barrier = await create(a, { targets: { project_ids: [ids[0]] }, command_type: 'echo' });
    await waitJob(
      () => a,
      barrier.job_id,
      (j) => j.status === 'completed',
      'completed',
    );
    assert.equal((await commandsOf(a, job.job_id)).length, sent, 'nothing sent after the cancel');
  });

  test('a hub killed mid-job: the restarted hub resumes it and no target is sent twice', async () => {
    const ids = projects.slice(500, 900).map((p) => p.project_id);
    const job = await create(a, {
      targets: { project_ids: ids },
      command_type: 'echo',
      rollout: { max_in_flight: 20 },
    });
    await waitJob(
      () => a,
      job.job_id,
      (j) => j.counts.completed >= 100,
      '100 completed',
    );
    await a.proc.kill9();
    await a.start();
    const done = await waitJob(
      () => a,
      job.job_id,
      (j) => j.status === 'completed',
      'completed after the restart',
    );
    assert.equal(done.counts.completed, 400);
    assert.equal(sum(done.counts), 400);
    const cmds = await commandsOf(a, job.job_id);
    assert.equal(cmds.length, 400);
    assert.equal(new Set(cmds.map((c) => c.project_id)).size, 400);
    assert.equal(
      a.runs.at(-1)!.lines.filter((l) => l.msg === 'job driver took the lease' && l.job_id === job.job_id).length,
      1,
    );
  });

  test('two hub instances on one database: one driver per job; the other takes over when it dies', async () => {
    b = new JobsHub('hub-b', db, group, jobsSettings);
    await b.start();
    const one = await create(b, {
      targets: { project_ids: projects.slice(0, 300).map((p) => p.project_id) },
      command_type: 'echo',
      rollout: { max_in_flight: 30 },
    });
    await waitJob(
      () => b!,
      one.job_id,
      (j) => j.status === 'completed',
      'completed',
    );
    const leases = [
      ...a.logs('job driver took the lease', one.job_id),
      ...b.logs('job driver took the lease', one.job_id),
    ];
    assert.equal(leases.length, 1, JSON.stringify(leases));
    assert.equal((await commandsOf(a, one.job_id)).length, 300);

    const two = await create(a, {
      targets: { project_ids: projects.slice(300, 700).map((p) => p.project_id) },
      command_type: 'echo',
      rollout: { max_in_flight: 10 },
    });
    await poll(
      () =>
        a.logs('job driver took the lease', two.job_id).length +
          b!.logs('job driver took the lease', two.job_id).length >
        0,
      30_000,
      () => 'a driver for the second job',
    );
    const holder = a.logs('job driver took the lease', two.job_id).length > 0 ? a : b;
    const other = holder === a ? b : a;
    await waitJob(
      () => other,
      two.job_id,
      (j) => j.counts.completed >= 30,
      '30 completed',
    );
    await holder.proc.kill9();
    await poll(
      () => other.logs('job driver took the lease', two.job_id).length === 1,
      60_000,
      () => `${other.name} took over the second job`,
    );
    const done = await waitJob(
      () => other,
      two.job_id,
      (j) => j.status === 'completed',
      'completed after the takeover',
    );
    assert.equal(done.counts.completed, 400);
    const cmds = await commandsOf(other, two.job_id);
    assert.equal(cmds.length, 400);
    assert.equal(new Set(cmds.map((c) => c.project_id)).size, 400);
    assert.ok(fleet.stats.max_running <= 50);
  });
});
