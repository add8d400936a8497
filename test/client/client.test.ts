/**
 * `gmq-hub/client` (client/index.ts) against a real hub process (embedded broker + PGlite) and a
 * real agent process: provisioning, a sync command answered by the agent, an async send followed
 * by id, the list with filters, idempotent replays, and the hub's refusals as HubApiError with
 * their stable codes. It is imported the way a user imports it: through package.json `exports`.
 * Also: every operation of the hub's /openapi.json has a client method, and the README's example
 * typechecks with tsc as a user's project would and runs against the hub.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { promisify } from 'node:util';
import * as direct from '../../client/index.js';
import { type Agent, Hub, T } from '../e2e/harness.js';
import { REPO_ROOT } from '../helpers/process.js';
import { scaled, until } from '../helpers/wait.js';

// The package's own name resolves through its `exports` map (Node's self-reference), to the very
// module compiled from client/index.ts. (A string variable: typechecking must not need dist/.)
const specifier: string = 'gmq-hub/client';
const viaExports = (await import(specifier)) as typeof direct;
const { HubApiError, HubClient } = viaExports;

describe('gmq-hub/client against a real hub', () => {
  let hub: Hub;
  let agent: Agent | undefined;
  const agents: Agent[] = [];
  const dirs: string[] = [];

  before(async () => {
    hub = await Hub.create('embedded');
    await hub.start();
  });

  after(async () => {
    await agent?.dispose();
    for (const a of agents) await a.dispose();
    await hub?.dispose();
    for (const d of dirs) fs.rmSync(d, { recursive: true, force: true });
  });

  test('is what package.json exports as gmq-hub/client', () => {
    assert.equal(viaExports.HubClient, direct.HubClient);
  });

  test('provision, agent online, sync and async commands, lists, replays and refusals', async () => {
    const client = new HubClient({ url: hub.base, timeoutMs: scaled(T) });

    const created = await client.createProject({ project_id: 'client-plant', name: 'client test' });
    assert.equal(created.project_id, 'client-plant');
    assert.match(created.secret, /^[0-9a-f]{64}$/);
    agent = hub.newAgent(created);
    await agent.start();
    await until(
      async () => (await client.listOnlineProjects()).items.some((p) => p.project_id === 'client-plant'),
      T,
      'client-plant online',
    );
    const status = await client.getProjectStatus('client-plant');
    assert.equal(status.state, 'online');

    // sync: the agent's own answer
    const done = await client.sendSync({
      project_id: 'client-plant',
      command_type: 'echo',
      payload: { from: 'client' },
      wait_ms: scaled(T),
    });
    assert.equal(done.status, 'completed');
    assert.equal(done.result?.output, '{"from":"client"}');
    assert.equal(typeof done.timings.total_ms, 'number');

    // async, then by id
    const sent = await client.send({ project_id: 'client-plant', command_type: 'echo', payload: { n: 2 } });
    assert.equal(sent.status, 'pending');
    await until(async () => (await client.getCommand(sent.command_id)).status === 'completed', T, 'the async echo');

    // idempotent: the same key and body give the first command, flagged as a replay
    const first = await client.sendWithReplay(
      { project_id: 'client-plant', command_type: 'echo', payload: { n: 3 } },
      { idempotencyKey: 'client-key-1' },
    );
    const again = await client.sendWithReplay(
      { project_id: 'client-plant', command_type: 'echo', payload: { n: 3 } },
      { idempotencyKey: 'client-key-1' },
    );
    assert.equal(first.replayed, false);
    assert.equal(again.replayed, true);
    assert.equal(again.command.command_id, first.command.command_id);

    // the list with filters
    const page = await client.listCommands({
      project_id: 'client-plant',
      status: ['completed', 'pending', 'sent', 'acked'],
    });
    assert.ok(page.items.length >= 3 && page.total >= 3, JSON.stringify(page));
    assert.ok(page.items.every((c) => c.project_id === 'client-plant'));
    const none = await client.listCommands({ until: new Date('2001-01-01T00:00:00Z') });
    assert.equal(none.total, 0);
    assert.ok((await client.listProjects()).items.some((p) => p.project_id === 'client-plant'));
    assert.ok((await client.listModules()).items.some((m) => m.name === 'command' && m.state === 'running'));
    assert.equal((await client.ready()).ready, true);
    assert.deepEqual(await client.health(), { ok: true });
    // the outbox's dead events: none on this hub, and a replay of an unknown one is its 404
    const dead = await client.listDeadOutboxEvents({ limit: 10 });
    assert.deepEqual(dead.items, []);
    assert.equal(dead.total, 0);
    await assert.rejects(
      client.replayDeadOutboxEvent('00000000-0000-4000-8000-000000000000'),
      (err: unknown) => err instanceof HubApiError && err.code === 'OUTBOX_ERR_NOT_FOUND' && err.status === 404,
    );

    // refusals carry the hub's code, status and field
    await assert.rejects(
      client.send({ project_id: 'no-such-project', command_type: 'echo' }),
      (err: unknown) => err instanceof HubApiError && err.code === 'CMD_ERR_UNKNOWN_PROJECT' && err.status === 404,
    );
    await assert.rejects(
      client.send({ project_id: 'client-plant', command_type: 'Not A Type' }),
      (err: unknown) => err instanceof HubApiError && err.status === 400 && err.field === 'command_type',
    );
    await assert.rejects(
      client.createProject({ project_id: 'client-plant' }),
      (err: unknown) => err instanceof HubApiError && err.code === 'STATUS_ERR_EXISTS',
    );
    // nothing listening: one error naming the URL, not a bare fetch failure
    const nowhere = new HubClient({ url: 'http://127.0.0.1:1' });
    await assert.rejects(
      nowhere.listModules(),
      (err: unknown) => err instanceof HubApiError && err.code === 'CLIENT_ERR_UNREACHABLE' && err.status === 0,
    );
  });

  test('every operation of /openapi.json has a client method', async () => {
    const doc = (await (await fetch(`${hub.base}/openapi.json`)).json()) as { paths: Record<string, object> };
    const documented = new Set<string>();
    for (const [p, item] of Object.entries(doc.paths)) {
      for (const m of Object.keys(item))
        if (['get', 'post', 'put', 'patch', 'delete'].includes(m)) documented.add(`${m.toUpperCase()} ${p}`);
    }
    // not JSON request/answer operations: the Prometheus text, the document itself, and the
    // WebSocket event feed (README "WebSocket"; Node 20 has no WebSocket of its own to build on)
    const notForTheClient = new Set(['GET /metrics', 'GET /openapi.json', 'GET /api/exchange-hub/ws']);

    // each method once, through a fetch that records what it asks and answers like the hub would
    const asked: string[] = [];
    const recording = new HubClient({
      url: 'http://hub.invalid',
      fetch: async (input, init) => {
        asked.push(`${init?.method ?? 'GET'} ${new URL(String(input)).pathname}`);
        return new Response(JSON.stringify({ items: [], total: 0, ready: true, checks: {}, ok: true }), {
          status: 200,
        });
      },
    });
    const calls: Record<string, (c: InstanceType<typeof HubClient>) => Promise<unknown>> = {
      send: (c) => c.send({ project_id: 'p', command_type: 'echo' }),
      sendWithReplay: (c) => c.sendWithReplay({ project_id: 'p', command_type: 'echo' }),
      sendSync: (c) => c.sendSync({ project_id: 'p', command_type: 'echo' }),
      getCommand: (c) => c.getCommand('c1'),
      cancelCommand: (c) => c.cancelCommand('c1'),
      listCommands: (c) => c.listCommands(),
      listDeadCommands: (c) => c.listDeadCommands(),
      replayDeadCommand: (c) => c.replayDeadCommand('c1'),
      createProject: (c) => c.createProject(),
      getProjectStatus: (c) => c.getProjectStatus('p'),
      listOnlineProjects: (c) => c.listOnlineProjects(),
      listProjects: (c) => c.listProjects(),
      disableProject: (c) => c.disableProject('p'),
      enableProject: (c) => c.enableProject('p'),
      rotateProjectSecret: (c) => c.rotateProjectSecret('p'),
      listDeadOutboxEvents: (c) => c.listDeadOutboxEvents(),
      replayDeadOutboxEvent: (c) => c.replayDeadOutboxEvent('e1'),
      listModules: (c) => c.listModules(),
      restartModule: (c) => c.restartModule('m'),
      createJob: (c) => c.createJob({ targets: { all: true }, command_type: 'echo' }),
      getJob: (c) => c.getJob('j1'),
      listJobs: (c) => c.listJobs({ status: ['running', 'scheduled'] }),
      cancelJob: (c) => c.cancelJob('j1'),
      projectHistory: (c) => c.projectHistory('p', { since: new Date(0), limit: 10 }),
      listAudit: (c) => c.listAudit({ action: 'job.created', since: 0 }),
      health: (c) => c.health(),
      ready: (c) => c.ready(),
    };
    // the table is every public method: a method added without a line here fails
    const methods = Object.getOwnPropertyNames(HubClient.prototype).filter(
      (n) => n !== 'constructor' && !['get', 'call'].includes(n),
    );
    assert.deepEqual(methods.sort(), Object.keys(calls).sort());
    for (const call of Object.values(calls)) await call(recording);

    const templates = [...documented].map((op) => {
      const [method, p] = op.split(' ');
      return { op, re: new RegExp(`^${method} ${p.replace(/\{[^}]+\}/g, '[^/]+')}$`) };
    });
    const covered = new Set(asked.map((a) => templates.find((t) => t.re.test(a))?.op ?? `undocumented: ${a}`));
    assert.deepEqual(
      [...documented].filter((op) => !covered.has(op) && !notForTheClient.has(op)),
      [],
      'operations without a client method',
    );
    assert.deepEqual(
      [...covered].filter((op) => op.startsWith('undocumented')),
      [],
      'client calls the document does not have',
    );
  });

  test("the README's example typechecks as a user's project and runs against the hub", async () => {
    const readme = fs.readFileSync(path.join(REPO_ROOT, 'README.md'), 'utf8');
    const block = /### TypeScript client[\s\S]*?```ts\n([\s\S]*?)```/.exec(readme)?.[1];
    assert.ok(block, 'README "TypeScript client" has a ts block');
    assert.ok(block.includes("'http://127.0.0.1:8080'"), 'the example names the default address');
    const source = block.replace("'http://127.0.0.1:8080'", JSON.stringify(hub.base));

    // a user's project: gmq-hub installed under node_modules, its own tsconfig, ESM
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'gmq-client-example-'));
    dirs.push(dir);
    fs.mkdirSync(path.join(dir, 'node_modules'));
    fs.symlinkSync(REPO_ROOT, path.join(dir, 'node_modules', 'gmq-hub'));
    fs.symlinkSync(path.join(REPO_ROOT, 'node_modules', '@types'), path.join(dir, 'node_modules', '@types'));
    fs.writeFileSync(path.join(dir, 'package.json'), JSON.stringify({ type: 'module', private: true }));
    fs.writeFileSync(
      path.join(dir, 'tsconfig.json'),
      JSON.stringify({
        compilerOptions: { target: 'ES2022', module: 'NodeNext', strict: true, outDir: 'out', types: ['node'] },
        files: ['example.ts'],
      }),
    );
    fs.writeFileSync(path.join(dir, 'example.ts'), source);
    const run = promisify(execFile);
    const tsc = path.join(REPO_ROOT, 'node_modules', 'typescript', 'bin', 'tsc');
    await run(process.execPath, [tsc, '-p', dir], { cwd: dir }).catch((err: { stdout?: string }) => {
      assert.fail(`tsc refused the README example:\n${err.stdout}`);
    });

    // the project it talks to, online with an agent
    const created = await new HubClient({ url: hub.base }).createProject({ project_id: 'plant-7' });
    const a = hub.newAgent(created);
    agents.push(a);
    await a.start();
    await until(
      async () => (await new HubClient({ url: hub.base }).getProjectStatus('plant-7')).state === 'online',
      T,
      'plant-7 online',
    );
    const { stdout } = await run(process.execPath, [path.join(dir, 'out', 'example.js')], {
      cwd: dir,
      timeout: scaled(T),
      env: { ...process.env, HUB_API_TOKEN: '' },
    });
    const lines = stdout.trimEnd().split('\n');
    assert.match(lines[0], /^completed \{"hi":1\} \d+$/, stdout);
    assert.equal(lines[1], 'no such project', stdout);
    assert.equal(lines.length, 2, stdout);
  });
});

describe('gmq-hub/client: jobs, presence history and the audit trail against a real hub', () => {
  let hub: Hub;
  let agent: Agent | undefined;

  before(async () => {
    hub = await Hub.create('embedded', { jobs: { tick_ms: 50 }, modules: { audit: {} } });
    await hub.start();
  });

  after(async () => {
    await agent?.dispose();
    await hub?.dispose();
  });

  test('a job to one project completes; its command, the presence change and the audit rows are listed', async () => {
    const client = new HubClient({ url: hub.base, timeoutMs: scaled(T) });
    const created = await client.createProject({ project_id: 'client-fleet-1' });
    agent = hub.newAgent(created);
    await agent.start();
    await until(
      async () => (await client.getProjectStatus('client-fleet-1')).state === 'online',
      T,
      'client-fleet-1 online',
    );

    const { job, replayed } = await client.createJob(
      { targets: { project_ids: ['client-fleet-1'] }, command_type: 'echo', payload: { via: 'job' } },
      { idempotencyKey: 'client-job-1' },
    );
    assert.equal(replayed, false);
    assert.equal(job.counts.total, 1);
    await until(async () => (await client.getJob(job.job_id)).status === 'completed', T, 'the job completed');
    const done = await client.getJob(job.job_id);
    assert.equal(done.counts.completed, 1);
    const again = await client.createJob(
      { targets: { project_ids: ['client-fleet-1'] }, command_type: 'echo', payload: { via: 'job' } },
      { idempotencyKey: 'client-job-1' },
    );
    assert.equal(again.replayed, true);
    assert.equal(again.job.job_id, job.job_id);
    assert.ok((await client.listJobs({ status: 'completed' })).items.some((j) => j.job_id === job.job_id));

    const commands = await client.listCommands({ job_id: job.job_id });
    assert.equal(commands.total, 1);
    assert.equal(commands.items[0].project_id, 'client-fleet-1');
    assert.equal(commands.items[0].status, 'completed');

    await until(
      async () => (await client.projectHistory('client-fleet-1')).items.some((c) => c.to_state === 'online'),
      T,
      'the online change in the history',
    );
    const history = await client.projectHistory('client-fleet-1', {
      since: new Date(Date.now() - 3_600_000),
      limit: 50,
    });
    assert.ok(history.items.every((c) => c.project_id === 'client-fleet-1' && typeof c.reason === 'string'));

    const audit = await client.listAudit({ action: 'job.created' });
    // each call is a record (the retry too: who asked, when), both naming the one job
    assert.equal(audit.total, 2);
    assert.ok(audit.items.every((e) => e.targets.job_id === job.job_id && e.outcome === 'ok'));
    assert.equal((await client.listAudit({ action: 'project.created', project_id: 'client-fleet-1' })).total, 1);

    await assert.rejects(client.cancelJob(job.job_id), (err: InstanceType<typeof HubApiError>) => {
      assert.equal(err.code, 'JOB_ERR_NOT_CANCELLABLE');
      return true;
    });
  });
});
