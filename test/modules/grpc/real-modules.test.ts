/**
 * The grpc module over the real status and command modules (PGlite), so the shapes the fakes
 * return are checked against the real ones: provisioning, an offline refusal, a queued command
 * followed by id, cancelled, listed, and the real validators' field names.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import * as grpc from '@grpc/grpc-js';
import { ProviderRegistry } from '../../../core/registry.js';
import { provider as commandProvider } from '../../../modules/command/index.js';
import { provider as grpcProvider } from '../../../modules/grpc/index.js';
import { GRPC, type GrpcStats } from '../../../modules/shared/topics.js';
import { provider as statusProvider } from '../../../modules/status/index.js';
import { preparePgliteTemplate, tempPgliteConfig } from '../../helpers/db.js';
import { startHost, type TestHost } from '../../helpers/host.js';
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
});
