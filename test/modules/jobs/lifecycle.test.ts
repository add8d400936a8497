/**
 * Jobs through the real hub (a process) with real agents (processes), on both backends: a job
 * to projects chosen by metadata completes and its commands are listed by job_id; an offline
 * target counts as failed; job.progress reaches a WebSocket; an Idempotency-Key answers the
 * same job or 409; a scheduled job waits as `scheduled`, starts at its time, and can be
 * cancelled before; bad requests get a stable code and are counted in /metrics.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import WebSocket from 'ws';
import { type Agent, BACKEND_TITLE, BACKENDS, Hub, type Json, uniqueId } from '../../e2e/harness.js';
import { scaled } from '../../helpers/wait.js';

/** Asks again every 100 ms (each ask is a REST call: polling faster would load the hub under test) until `cond` holds. */
export async function poll(cond: () => boolean | Promise<boolean>, quietMs: number, what: () => string): Promise<void> {
  const deadline = Date.now() + scaled(quietMs);
  while (!(await cond())) {
    if (Date.now() > deadline) throw new Error(`timed out after ${scaled(quietMs)} ms waiting for ${what()}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

const JOBS = { tick_ms: 100, reconcile_ms: 1_000 };
/**
 * No test here waits for an agent to be found silent (the offline target never had an agent),
 * so the silence bound is stretched like every other bound. With the harness's 3 s, a hub starved
 * for 3 s beside another suite marks both agents offline, and a job dispatched in that moment
 * counts its targets failed (offline_policy fail): right for the product, wrong for this test,
 * and the likeliest cause of a side-by-side run whose scheduled job completed with 0 of 2.
 */
const STATUS = { heartbeat_timeout_ms: scaled(3_000) };

async function post(hub: Hub, p: string, body: unknown, headers: Record<string, string> = {}) {
  const res = await fetch(`${hub.base}/api/exchange-hub${p}`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', ...headers },
    body: JSON.stringify(body),
  });
  return { status: res.status, headers: res.headers, json: (await res.json()) as Json };
}

async function waitJob(hub: Hub, jobId: string, pred: (j: Json) => boolean, what: string): Promise<Json> {
  let last: Json;
  await poll(
    async () => {
      last = (await hub.api('GET', `/jobs/${jobId}`)).json;
      return pred(last);
    },
    30_000,
    () => `job ${jobId} ${what} (last: ${JSON.stringify(last)})`,
  );
  return last;
}

for (const backend of BACKENDS) {
  describe(`jobs lifecycle (${BACKEND_TITLE[backend]})`, () => {
    let hub: Hub;
    const agents: Agent[] = [];
    const region = uniqueId('region');
    const eu: string[] = [];
    let offline = '';

    before(async () => {
      hub = await Hub.create(backend, { jobs: JOBS, status: STATUS });
      await hub.start();
      for (let i = 0; i < 2; i++) {
        const project_id = uniqueId('eu');
        const r = await hub.api('POST', '/projects', { project_id, metadata: { region, n: i } });
        assert.equal(r.status, 201);
        eu.push(project_id);
        const a = hub.newAgent(r.json);
        agents.push(a);
        await a.start();
      }
      offline = (await hub.api('POST', '/projects', { project_id: uniqueId('off'), metadata: { region: 'x' } })).json
        .project_id;
      for (const id of eu) await hub.waitState(id, 'online');
    });

    after(async () => {
      for (const a of agents) await a.dispose();
      await hub?.dispose();
    });

    test('a job to projects by metadata completes; its commands are listed by job_id; progress on the WebSocket', async () => {
      const ws = new WebSocket(`${hub.base.replace(/^http:/, 'ws:')}/api/exchange-hub/ws`);
      const progress: Json[] = [];
      await new Promise<void>((resolve, reject) => {
        ws.once('open', () => resolve());
        ws.once('error', reject);
      });
      ws.on('message', (raw) => {
        const m = JSON.parse(String(raw));
        if (m.op === 'event' && m.type === 'job.progress') progress.push(m);
      });
      ws.send(JSON.stringify({ op: 'subscribe', all: true }));
      try {
        const r = await post(hub, '/jobs', {
          targets: { metadata: { region } },
          command_type: 'echo',
          payload: { hello: 'jobs' },
          rollout: { max_in_flight: 1 },
        });
        assert.equal(r.status, 201, JSON.stringify(r.json));
        assert.match(r.json.job_id, /^[0-9a-f-]{36}$/);
        assert.equal(r.json.status, 'running');
        assert.equal(r.json.counts.total, 2);
        const job = await waitJob(hub, r.json.job_id, (j) => j.status === 'completed', 'completed');
        assert.deepEqual(job.counts, {
          total: 2,
          pending: 0,
          in_flight: 0,
          completed: 2,
          failed: 0,
          timeout: 0,
          cancelled: 0,
        });
        assert.equal(job.reason, null);
        assert.ok(job.finished_at);
        const cmds = (await hub.api('GET', `/commands?job_id=${r.json.job_id}`)).json;
        assert.equal(cmds.total, 2);
        assert.deepEqual(cmds.items.map((c: Json) => c.project_id).sort(), [...eu].sort());
        for (const c of cmds.items) {
          assert.equal(c.job_id, r.json.job_id);
          assert.equal(c.status, 'completed');
        }
        // an unrelated command is not in the job's list
        assert.equal((await hub.api('GET', `/commands?job_id=${crypto.randomUUID()}`)).json.total, 0);
        await poll(
          () => progress.some((m) => m.job_id === r.json.job_id && m.data.status === 'completed'),
          10_000,
          () => `job.progress completed on the WebSocket (got ${JSON.stringify(progress.map((m) => m.data.status))})`,
        );
        const last = progress.filter((m) => m.job_id === r.json.job_id).at(-1);
        assert.equal(last.data.counts.completed, 2);
      } finally {
        ws.close();
      }
    });

    test('an offline target (offline_policy fail) is counted failed; the others complete', async () => {
      const r = await post(hub, '/jobs', {
        targets: { project_ids: [...eu, offline] },
        command_type: 'echo',
      });
      assert.equal(r.status, 201, JSON.stringify(r.json));
      assert.equal(r.json.counts.total, 3);
      const job = await waitJob(hub, r.json.job_id, (j) => j.status === 'completed', 'completed');
      assert.equal(job.counts.completed, 2);
      assert.equal(job.counts.failed, 1);
      assert.equal(job.counts.total, 3);
    });

    test('Idempotency-Key: the same body answers the same job; another body is 409 CMD_ERR_IDEMPOTENCY_MISMATCH', async () => {
      const key = uniqueId('key');
      const body = { targets: { project_ids: [eu[0]] }, command_type: 'echo', payload: { a: 1 } };
      const first = await post(hub, '/jobs', body, { 'idempotency-key': key });
      assert.equal(first.status, 201);
      assert.equal(first.headers.get('idempotent-replayed'), null);
      const again = await post(hub, '/jobs', { ...body, payload: { a: 1 } }, { 'idempotency-key': key });
      assert.equal(again.status, 201);
      assert.equal(again.headers.get('idempotent-replayed'), 'true');
      assert.equal(again.json.job_id, first.json.job_id);
      const other = await post(hub, '/jobs', { ...body, payload: { a: 2 } }, { 'idempotency-key': key });
      assert.equal(other.status, 409);
      assert.equal(other.json.error.code, 'CMD_ERR_IDEMPOTENCY_MISMATCH');
      await waitJob(hub, first.json.job_id, (j) => j.status === 'completed', 'completed');
      // one job, one command
      assert.equal((await hub.api('GET', `/commands?job_id=${first.json.job_id}`)).json.total, 1);
    });

    test('schedule_at: scheduled until its time, then runs; a scheduled job can be cancelled and is never sent', async () => {
      const later = await post(hub, '/jobs', {
        targets: { all: true },
        command_type: 'echo',
        schedule_at: new Date(Date.now() + 3_600_000).toISOString(),
      });
      assert.equal(later.status, 201);
      assert.equal(later.json.status, 'scheduled');
      assert.equal(later.json.counts.total, 0);
      const at = Date.now() + scaled(2_000);
      const soon = await post(hub, '/jobs', {
        targets: { metadata: { region } },
        command_type: 'echo',
        schedule_at: new Date(at).toISOString(),
      });
      assert.equal(soon.status, 201);
      assert.equal(soon.json.status, 'scheduled');
      assert.equal((await hub.api('GET', `/jobs?status=scheduled`)).json.items.length >= 2, true);
      const done = await waitJob(hub, soon.json.job_id, (j) => j.status === 'completed', 'completed');
      assert.ok(Date.parse(done.started_at) >= at, `started ${done.started_at} before ${new Date(at).toISOString()}`);
      assert.equal(done.counts.completed, 2, `the job when it completed: ${JSON.stringify(done)}`);

      const cancelled = await post(hub, `/jobs/${later.json.job_id}/cancel`, {});
      assert.equal(cancelled.status, 200);
      assert.equal(cancelled.json.status, 'cancelled');
      const twice = await post(hub, `/jobs/${later.json.job_id}/cancel`, {});
      assert.equal(twice.status, 409);
      assert.equal(twice.json.error.code, 'JOB_ERR_NOT_CANCELLABLE');
      const listed = (await hub.api('GET', '/jobs?status=cancelled')).json;
      assert.ok(listed.items.some((j: Json) => j.job_id === later.json.job_id));
      assert.equal((await hub.api('GET', `/commands?job_id=${later.json.job_id}`)).json.total, 0);
    });

    test('bad requests: a clear error with a stable code, counted, nothing created', async () => {
      const before = (await hub.api('GET', '/jobs?limit=500')).json.total;
      const cases: Array<[unknown, number, string, string]> = [
        [{ targets: {}, command_type: 'echo' }, 400, 'JOB_ERR_INVALID', 'targets'],
        [{ targets: { all: true, project_ids: [eu[0]] }, command_type: 'echo' }, 400, 'JOB_ERR_INVALID', 'targets'],
        [{ targets: { all: true }, command_type: 'echo', rollout: { max_in_flight: 0 } }, 400, 'JOB_ERR_INVALID', ''],
        [{ targets: { all: true }, command_type: 'echo', abort: { failure_ratio: 2 } }, 400, 'JOB_ERR_INVALID', ''],
        [{ targets: { all: true }, command_type: 'echo', schedule_at: 'tomorrow' }, 400, 'JOB_ERR_INVALID', ''],
        [{ targets: { project_ids: ['no-such-project-x'] }, command_type: 'echo' }, 404, 'JOB_ERR_UNKNOWN_PROJECT', ''],
        [{ targets: { metadata: { region: uniqueId('none') } }, command_type: 'echo' }, 409, 'JOB_ERR_NO_TARGETS', ''],
      ];
      for (const [body, status, code, field] of cases) {
        const r = await post(hub, '/jobs', body);
        assert.equal(r.status, status, `${JSON.stringify(body)} → ${JSON.stringify(r.json)}`);
        assert.equal(r.json.error.code, code);
        if (field) assert.equal(r.json.error.field, field);
      }
      assert.equal((await hub.api('GET', '/jobs?limit=500')).json.total, before);
      const nf = await hub.api('GET', `/jobs/${crypto.randomUUID()}`);
      assert.equal(nf.status, 404);
      assert.equal(nf.json.error.code, 'JOB_ERR_NOT_FOUND');
      const metrics = await (await fetch(`${hub.base}/metrics`)).text();
      assert.match(metrics, /hub_jobs_total\{[^}]*counter="rejected"[^}]*\} [1-9]/);
    });
  });
}
