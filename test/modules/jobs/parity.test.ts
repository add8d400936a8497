/**
 * Jobs over gRPC and the CLI, on the real status, command, jobs, web and grpc modules (PGlite):
 * the same operations as REST (create with an idempotency key, get, list, cancel), the command
 * list's job filter, and a cancel that takes queued commands back through the command module.
 * The projects are offline and the job queues its commands (offline_policy queue), so the targets
 * stay in flight until the cancel.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import * as grpc from '@grpc/grpc-js';
import { ProviderRegistry } from '../../../core/registry.js';
import { provider as commandProvider } from '../../../modules/command/index.js';
import { GRPC, type GrpcStats } from '../../../modules/grpc/contract/topics.js';
import { provider as grpcProvider } from '../../../modules/grpc/index.js';
import { provider as jobsProvider } from '../../../modules/jobs/index.js';
import { provider as statusProvider } from '../../../modules/status/index.js';
import { WEB, type WebInfo } from '../../../modules/web/contract/topics.js';
import { provider as webProvider } from '../../../modules/web/index.js';
import { runCli } from '../../bootstrap/cli-harness.js';
import { preparePgliteTemplate, tempPgliteConfig } from '../../helpers/db.js';
import { startHost, type TestHost } from '../../helpers/host.js';
import { call, ExchangeHubClient, fails, type Msg, watch } from '../grpc/harness.js';
import { poll } from './fleet-harness.js';

describe('jobs over gRPC and the CLI (real modules, PGlite)', () => {
  let th: TestHost;
  let client: grpc.Client;
  let cleanup: () => void;
  let url = '';

  before(async () => {
    await preparePgliteTemplate();
    const db = tempPgliteConfig();
    cleanup = db.cleanup;
    const registry = new ProviderRegistry()
      .register(statusProvider)
      .register(commandProvider)
      .register(jobsProvider)
      .register(webProvider)
      .register(grpcProvider);
    th = await startHost(
      [
        'databases:',
        `  default: { driver: pglite, data_dir: ${JSON.stringify(db.config.data_dir)} }`,
        'modules:',
        '  status: {}',
        '  command: {}',
        '  jobs: { tick_ms: 100, reconcile_ms: 500 }',
        '  web: { port: 0 }',
        '  grpc: { port: 0, stop_grace_ms: 500 }',
      ].join('\n'),
      registry,
    );
    const { port } = await th.host.bus.request<GrpcStats>(GRPC.stats, {});
    client = new ExchangeHubClient(`127.0.0.1:${port}`, grpc.credentials.createInsecure());
    url = (await th.host.bus.request<WebInfo>(WEB.info('web'), {})).url;
    for (const id of ['par-1', 'par-2', 'par-3']) {
      await call(client, 'CreateProject', {
        project_id: id,
        metadata_json: JSON.stringify({ ring: id === 'par-3' ? 'b' : 'a' }),
      });
    }
  });

  after(async () => {
    client?.close();
    await th?.stop();
    cleanup?.();
  });

  const getJob = (id: string) => call<Msg & { counts: Record<string, number> }>(client, 'GetJob', { job_id: id });

  test('gRPC: create (idempotent), get, list, commands by job, cancel; job.progress on WatchEvents', async () => {
    const stream = watch(client, { all: true });
    const events: Msg[] = [];
    stream.on('data', (ev: Msg) => events.push(ev));
    stream.on('error', () => undefined);
    await new Promise((resolve) => stream.once('metadata', resolve));
    const req = {
      targets: { metadata_json: '{"ring":"a"}' },
      command_type: 'echo',
      payload_json: '{"x":1}',
      offline_policy: 'queue',
      max_in_flight: 5,
      failure_ratio: 0.5,
      min_done: 2,
      idempotency_key: 'parity-key-1',
    };
    const job = await call<Msg & { counts: Record<string, number> }>(client, 'CreateJob', req);
    assert.equal(job.status, 'running');
    assert.equal(job.counts.total, 2);
    assert.equal(job.max_in_flight, 5);
    assert.equal(job.failure_ratio, 0.5);
    assert.deepEqual(JSON.parse(String(job.targets_json)), { metadata: { ring: 'a' } });
    const again = await call(client, 'CreateJob', req);
    assert.equal(again.job_id, job.job_id);
    const other = await fails(
      call(client, 'CreateJob', { ...req, payload_json: '{"x":2}' }),
      grpc.status.ALREADY_EXISTS,
    );
    assert.equal(other.metadata.get('error-code')[0], 'CMD_ERR_IDEMPOTENCY_MISMATCH');

    await poll(
      async () => (await getJob(String(job.job_id))).counts.in_flight === 2,
      20_000,
      () => 'two queued targets',
    );
    const listed = await call<{ items: Msg[]; total: number }>(client, 'ListJobs', { status: ['running'] });
    assert.ok(listed.items.some((j) => j.job_id === job.job_id));
    const cmds = await call<{ items: Msg[]; total: number }>(client, 'ListCommands', { job_id: job.job_id });
    assert.equal(cmds.total, 2);
    assert.ok(cmds.items.every((c) => c.job_id === job.job_id && c.status === 'pending'));

    const cancelled = await call(client, 'CancelJob', { job_id: job.job_id });
    assert.equal(cancelled.status, 'cancelled');
    // the queued commands were never delivered: the command module's cancel takes them
    await poll(
      async () => (await getJob(String(job.job_id))).counts.cancelled === 2,
      20_000,
      () => 'both targets cancelled',
    );
    await poll(
      () =>
        events.some(
          (e) =>
            e.type === 'job.progress' &&
            e.job_id === job.job_id &&
            JSON.parse(String(e.data_json)).status === 'cancelled',
        ),
      10_000,
      () => `job.progress cancelled on WatchEvents (got ${events.map((e) => e.type).join(', ')})`,
    );
    stream.cancel();
    const after = await call<{ items: Msg[] }>(client, 'ListCommands', { job_id: job.job_id });
    assert.ok(after.items.every((c) => c.status === 'cancelled'));
    await fails(call(client, 'CancelJob', { job_id: job.job_id }), grpc.status.FAILED_PRECONDITION);
    await fails(call(client, 'GetJob', { job_id: 'not-a-uuid' }), grpc.status.INVALID_ARGUMENT);
    await fails(call(client, 'GetJob', { job_id: crypto.randomUUID() }), grpc.status.NOT_FOUND);
    await fails(call(client, 'CreateJob', { targets: {}, command_type: 'echo' }), grpc.status.INVALID_ARGUMENT);
    await fails(
      call(client, 'CreateJob', { targets: { project_ids: ['nobody-here'] }, command_type: 'echo' }),
      grpc.status.NOT_FOUND,
    );
  });

  test('CLI: jobs create, show, list, cancel, and commands --job', async () => {
    const env = { HUB_URL: url };
    const created = await runCli(['jobs', 'create', '--project', 'par-3', '--queue', '--json', 'echo', '{"y":2}'], env);
    assert.equal(created.code, 0, created.stderr);
    const job = JSON.parse(created.stdout);
    assert.equal(job.status, 'running');
    assert.equal(job.counts.total, 1);

    const shown = await runCli(['jobs', 'show', job.job_id], env);
    assert.equal(shown.code, 0, shown.stderr);
    assert.match(shown.stdout, new RegExp(`job\\s+${job.job_id}`));
    assert.match(shown.stdout, /status\s+running/);

    const list = await runCli(['jobs', 'list', '--status', 'running', '--json'], env);
    assert.equal(list.code, 0, list.stderr);
    assert.ok(JSON.parse(list.stdout).items.some((j: Msg) => j.job_id === job.job_id));

    await poll(
      async () => (await getJob(job.job_id)).counts.in_flight === 1,
      20_000,
      () => 'the target queued',
    );
    const cmds = await runCli(['commands', '--job', job.job_id, '--json'], env);
    assert.equal(cmds.code, 0, cmds.stderr);
    assert.deepEqual(
      JSON.parse(cmds.stdout).items.map((c: Msg) => c.project_id),
      ['par-3'],
    );

    const cancel = await runCli(['jobs', 'cancel', job.job_id], env);
    assert.equal(cancel.code, 0, cancel.stderr);
    assert.match(cancel.stdout, /status\s+cancelled/);
    const again = await runCli(['jobs', 'cancel', job.job_id], env);
    assert.equal(again.code, 1);
    assert.match(again.stderr, /JOB_ERR_NOT_CANCELLABLE/);

    const usage = await runCli(['jobs', 'create', '--all', '--project', 'par-3', 'echo'], env);
    assert.equal(usage.code, 2);
    assert.match(usage.stderr, /exactly one of --project, --all, --metadata/);
  });
});
