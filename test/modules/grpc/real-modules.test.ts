/**
 * The grpc module over the real status and command modules (PGlite), so the shapes the fakes
 * return are checked against the real ones: provisioning, an offline refusal, a queued command
 * followed by id, cancelled, listed, and the real validators' field names; disabling, enabling
 * and rotating a project; a queued command that expires, listed dead and replayed; the host's
 * modules listed and one restarted.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import * as grpc from '@grpc/grpc-js';
import { HOST_TOPICS } from '../../../core/host-topics.js';
import { ProviderRegistry } from '../../../core/registry.js';
import { COMMAND } from '../../../modules/command/contract/topics.js';
import { provider as commandProvider } from '../../../modules/command/index.js';
import { GRPC, type GrpcStats } from '../../../modules/grpc/contract/topics.js';
import { provider as grpcProvider } from '../../../modules/grpc/index.js';
import { STATUS } from '../../../modules/status/contract/topics.js';
import { provider as statusProvider } from '../../../modules/status/index.js';
import { preparePgliteTemplate, tempPgliteConfig } from '../../helpers/db.js';
import { startHost, type TestHost } from '../../helpers/host.js';
import { until } from '../../helpers/wait.js';
import { call, ExchangeHubClient, fails, type Msg } from './harness.js';

describe('grpc over the real status and command modules (PGlite)', () => {
  let th: TestHost;
  let client: grpc.Client;
  let cleanup: () => void;
  before(async () => {
    await preparePgliteTemplate();
    const db = tempPgliteConfig();
    cleanup = db.cleanup;
    const registry = new ProviderRegistry().register(statusProvider).register(commandProvider).register(grpcProvider);
    th = await startHost(
      [
        'databases:',
        `  default: { driver: pglite, data_dir: ${JSON.stringify(db.config.data_dir)} }`,
        'modules:',
        '  status: {}',
        '  command: {}',
        '  grpc: { port: 0, stop_grace_ms: 500 }',
      ].join('\n'),
      registry,
    );
    const { port } = await th.host.bus.request<GrpcStats>(GRPC.stats, {});
    client = new ExchangeHubClient(`127.0.0.1:${port}`, grpc.credentials.createInsecure());
  });
  after(async () => {
    client?.close();
    await th?.stop();
    cleanup?.();
  });

  test('provision, look up and list projects', async () => {
    const created = await call(client, 'CreateProject', {
      project_id: 'real-1',
      name: 'Real one',
      metadata_json: '{"site":"north"}',
    });
    assert.equal(created.project_id, 'real-1');
    assert.ok(String(created.secret).length >= 32);
    assert.ok(created.mqtt_username && created.mqtt_password);
    await fails(call(client, 'CreateProject', { project_id: 'real-1' }), grpc.status.ALREADY_EXISTS);

    const p = await call(client, 'GetProjectStatus', { project_id: 'real-1' });
    assert.equal(p.name, 'Real one');
    assert.equal(p.state, 'offline');
    assert.equal(p.enabled, true);
    assert.ok(Date.parse(String(p.created_at)) > 0);
    await fails(call(client, 'GetProjectStatus', { project_id: 'nobody' }), grpc.status.NOT_FOUND);

    const list = await call<{ items: Msg[]; total: number }>(client, 'ListProjects', {});
    assert.deepEqual(
      list.items.map((i) => i.project_id),
      ['real-1'],
    );
    assert.equal(list.total, 1);
    const online = await call<{ items: Msg[]; total: number }>(client, 'ListOnlineProjects', {});
    assert.equal(online.total, 0);
  });

  test('commands: offline refusal, queued command followed by id, cancel, list, field errors', async () => {
    const off = await fails(
      call(client, 'SendCommand', { project_id: 'real-1', command_type: 'echo' }),
      grpc.status.FAILED_PRECONDITION,
    );
    assert.equal(off.metadata.get('error-code')[0], 'CMD_ERR_PROJECT_OFFLINE');
    await fails(call(client, 'SendCommand', { project_id: 'ghost', command_type: 'echo' }), grpc.status.NOT_FOUND);

    const v = await call(client, 'SendCommand', {
      project_id: 'real-1',
      command_type: 'echo',
      payload_json: '{"text":"queued"}',
      offline_policy: 'queue',
      queue_ttl_ms: 60_000,
      operator_id: 'op',
    });
    assert.equal(v.status, 'pending');
    assert.equal(v.offline_policy, 'queue');
    const d = await call<{ command: Msg; payload_json: string; result?: Msg; timings: Msg }>(client, 'GetCommand', {
      command_id: v.command_id,
    });
    assert.equal(d.command.operator_id, 'op');
    assert.deepEqual(JSON.parse(d.payload_json), { text: 'queued' });
    assert.equal(d.result, undefined);

    const page = await call<{ items: Msg[]; total: number }>(client, 'ListCommands', {
      project_id: 'real-1',
      status: ['pending'],
    });
    assert.equal(page.total, 1);
    const c = await call(client, 'CancelCommand', { command_id: v.command_id });
    assert.equal(c.status, 'cancelled');

    const bad = await fails(
      call(client, 'SendCommand', { project_id: 'real-1', command_type: 'Not Valid', offline_policy: 'queue' }),
      grpc.status.INVALID_ARGUMENT,
    );
    assert.match(bad.details, /^command_type:/);
    const badStatus = await fails(call(client, 'ListCommands', { status: ['nope'] }), grpc.status.INVALID_ARGUMENT);
    assert.match(badStatus.details, /^status:/);
    await fails(
      call(client, 'GetCommand', { command_id: '00000000-0000-4000-8000-000000000000' }),
      grpc.status.NOT_FOUND,
    );
  });

  test('scheduled send: scheduled with its start, listed, cancelled; a bad time is INVALID_ARGUMENT', async () => {
    await call(client, 'CreateProject', { project_id: 'real-sched', name: 'Scheduled' });
    const at = new Date(Date.now() + 3_600_000).toISOString();
    // the project is offline: what counts is its state at the time, so this is accepted
    const v = await call(client, 'SendCommand', { project_id: 'real-sched', command_type: 'echo', schedule_at: at });
    assert.equal(v.status, 'scheduled');
    assert.equal(v.schedule_at, at);
    const page = await call<{ items: Msg[]; total: number }>(client, 'ListCommands', {
      project_id: 'real-sched',
      status: ['scheduled'],
    });
    assert.deepEqual(
      page.items.map((i) => i.command_id),
      [v.command_id],
    );
    const c = await call(client, 'CancelCommand', { command_id: v.command_id });
    assert.equal(c.status, 'cancelled');
    for (const bad of ['2030-01-01T10:00:00', 'later', new Date(Date.now() + 40 * 86_400_000).toISOString()]) {
      const e = await fails(
        call(client, 'SendCommand', { project_id: 'real-sched', command_type: 'echo', schedule_at: bad }),
        grpc.status.INVALID_ARGUMENT,
      );
      assert.match(e.details, /^schedule_at:/, bad);
      assert.equal(e.metadata.get('error-code')[0], 'CMD_ERR_INVALID');
    }
  });

  test('project admin: disable, enable, rotate the secret; NOT_FOUND for an unknown project', async () => {
    const created = await call(client, 'CreateProject', { project_id: 'real-admin' });
    const off = await call(client, 'DisableProject', { project_id: 'real-admin' });
    assert.equal(off.enabled, false);
    assert.equal(off.state, 'offline');
    const listed = await call<{ items: Msg[] }>(client, 'ListProjects', {});
    assert.ok(!listed.items.some((i) => i.project_id === 'real-admin'), 'disabled projects are left out');
    const all = await call<{ items: Msg[] }>(client, 'ListProjects', { include_disabled: true });
    assert.equal(all.items.find((i) => i.project_id === 'real-admin')?.enabled, false);
    const on = await call(client, 'EnableProject', { project_id: 'real-admin' });
    assert.equal(on.enabled, true);
    assert.equal((await call(client, 'GetProjectStatus', { project_id: 'real-admin' })).enabled, true);

    const rotated = await call(client, 'RotateProjectSecret', { project_id: 'real-admin', overlap_s: 0 });
    assert.equal(rotated.project_id, 'real-admin');
    assert.equal(rotated.mqtt_username, created.mqtt_username);
    assert.ok(String(rotated.secret).length >= 32);
    assert.notEqual(rotated.secret, created.secret);
    const again = await call(client, 'RotateProjectSecret', { project_id: 'real-admin' });
    assert.notEqual(again.secret, rotated.secret);
    const big = await fails(
      call(client, 'RotateProjectSecret', { project_id: 'real-admin', overlap_s: 30 * 86_400 + 1 }),
      grpc.status.INVALID_ARGUMENT,
    );
    assert.match(big.details, /^overlap_s:/);
    assert.equal(big.metadata.get('error-code')[0], 'STATUS_ERR_INVALID');

    for (const method of ['DisableProject', 'EnableProject', 'RotateProjectSecret']) {
      const e = await fails(call(client, method, { project_id: 'ghost' }), grpc.status.NOT_FOUND);
      assert.equal(e.metadata.get('error-code')[0], 'STATUS_ERR_NOT_FOUND', method);
    }
  });

  test('dead commands: a queued command that expires is listed dead, then replayed', async () => {
    const v = await call(client, 'SendCommand', {
      project_id: 'real-admin',
      command_type: 'echo',
      offline_policy: 'queue',
      queue_ttl_ms: 1,
    });
    type Page = { items: { command: Msg; last_error?: string }[]; total: number; limit: number; offset: number };
    let page: Page = { items: [], total: 0, limit: 0, offset: 0 };
    // the command module's sweeper (every 500 ms) expires it
    await until(
      async () => {
        page = await call<Page>(client, 'ListDeadCommands', {});
        return page.items.some((i) => i.command.command_id === v.command_id);
      },
      10_000,
      'the queued command to go dead',
    );
    const dead = page.items.find((i) => i.command.command_id === v.command_id)!;
    assert.equal(dead.command.status, 'failed');
    assert.equal(dead.command.error, 'expired before the project came online');
    assert.equal(dead.last_error, 'expired before the project came online');
    assert.equal(page.limit, 50);
    assert.equal(page.offset, 0);
    assert.ok(page.total >= 1);

    const replayed = await call(client, 'ReplayDeadCommand', { command_id: v.command_id });
    assert.equal(replayed.command_id, v.command_id);
    assert.equal(replayed.status, 'pending');
    assert.equal(replayed.attempts, 0);
    assert.equal(replayed.error, undefined);
    const after = await call<Page>(client, 'ListDeadCommands', { limit: 500 });
    assert.ok(!after.items.some((i) => i.command.command_id === v.command_id));

    const notDead = await fails(
      call(client, 'ReplayDeadCommand', { command_id: v.command_id }),
      grpc.status.INVALID_ARGUMENT,
    );
    assert.match(notDead.details, /^command_id:/);
    await fails(
      call(client, 'ReplayDeadCommand', { command_id: '00000000-0000-4000-8000-000000000000' }),
      grpc.status.NOT_FOUND,
    );
    const bad = await fails(call(client, 'ListDeadCommands', { limit: 501 }), grpc.status.INVALID_ARGUMENT);
    assert.match(bad.details, /^limit:/);
  });

  test('modules: listed with their mailbox counters; a restarted status module keeps its projects', async () => {
    type Mod = {
      name: string;
      state: string;
      restarts: number;
      mailbox?: { handled: number; subscriptions: string[] };
    };
    const list = async () =>
      new Map((await call<{ items: Mod[] }>(client, 'ListModules', {})).items.map((m) => [m.name, m]));
    const mods = await list();
    assert.deepEqual([...mods.keys()].sort(), ['command', 'grpc', 'status']);
    const status = mods.get('status')!;
    assert.equal(status.state, 'running');
    assert.ok(status.mailbox!.subscriptions.includes(STATUS.get));
    assert.ok(status.mailbox!.handled > 0);
    assert.ok(mods.get('command')!.mailbox!.subscriptions.includes(COMMAND.deadReplay));
    // a sanity check against the host's own answer on the bus
    const host = await th.host.bus.request<Mod[]>(HOST_TOPICS.listModules, {});
    assert.deepEqual(host.map((m) => m.name).sort(), ['command', 'grpc', 'status']);

    const r = await call<Mod>(client, 'RestartModule', { name: 'status' });
    assert.equal(r.state, 'running');
    assert.equal(r.restarts, status.restarts + 1);
    assert.equal((await list()).get('status')!.restarts, status.restarts + 1);
    const p = await call(client, 'GetProjectStatus', { project_id: 'real-admin' });
    assert.equal(p.project_id, 'real-admin');
  });
});
