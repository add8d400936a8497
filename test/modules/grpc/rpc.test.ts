import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { status } from '@grpc/grpc-js';
import { captureLog, LEVEL } from '../../fixtures/capture-log.js';
import { call, fails, type Hub, type Msg, startHub, watch } from './harness.js';

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

describe('grpc: ExchangeHub calls', () => {
  let hub: Hub;
  const logged = captureLog();
  before(async () => {
    hub = await startHub({ default_sync_wait_ms: 5000 }, { log: logged.log });
  });
  after(async () => {
    await hub?.stop();
  });

  test('SendCommand returns the new command at once', async () => {
    const v = await call(hub.client, 'SendCommand', {
      project_id: 'p-online',
      command_type: 'never',
      payload_json: '{"n":1}',
      timeout_ms: 5000,
      operator_id: 'alice',
    });
    assert.match(String(v.command_id), UUID);
    assert.equal(v.project_id, 'p-online');
    assert.equal(v.status, 'pending');
    assert.equal(v.operator_id, 'alice');
    assert.equal(v.module, undefined, 'a null field is unset');
    const sent = hub.seen.sends.at(-1)!;
    assert.deepEqual(sent.payload, { n: 1 });
    assert.equal(sent.timeout_ms, 5000);
    assert.equal(sent.module, undefined);
  });

  test('SendSyncCommand returns the result the command module produced', async () => {
    const d = await call<Msg & { command: Msg; result: Msg; timings: Msg }>(hub.client, 'SendSyncCommand', {
      project_id: 'p-online',
      command_type: 'echo',
      payload_json: '{"text":"hi"}',
    });
    assert.equal(d.command.status, 'completed');
    assert.equal(d.command.is_sync, true);
    assert.equal(d.result.status, 'success');
    assert.equal(d.result.output, '{"text":"hi"}');
    assert.equal(d.result.exit_code, 0);
    assert.equal(d.timings.total_ms, 9);
    assert.equal(d.payload_json, '{"text":"hi"}');
  });

  test('SendSyncCommand returns a failed command as a result, not an error', async () => {
    const d = await call<Msg & { command: Msg; result: Msg }>(hub.client, 'SendSyncCommand', {
      project_id: 'p-online',
      command_type: 'fail',
    });
    assert.equal(d.command.status, 'failed');
    assert.equal(d.result.error, 'it failed');
  });

  test('SendSyncCommand that runs out of wait_ms: DEADLINE_EXCEEDED with the command id and state in trailers', async () => {
    const e = await fails(
      call(hub.client, 'SendSyncCommand', { project_id: 'p-online', command_type: 'never', wait_ms: 150 }),
      status.DEADLINE_EXCEEDED,
    );
    const id = String(e.metadata.get('command-id')[0]);
    assert.match(id, UUID);
    assert.equal(e.metadata.get('command-status')[0], 'pending');
    assert.equal(e.metadata.get('error-code')[0], 'CMD_ERR_TIMEOUT');
    assert.match(e.details, new RegExp(id));
    // the command goes on: it can be followed by id
    const d = await call<{ command: Msg }>(hub.client, 'GetCommand', { command_id: id });
    assert.equal(d.command.command_id, id);
  });

  test("SendSyncCommand bound by the call's deadline answers before it, with the trailers", async () => {
    const e = await fails(
      call(hub.client, 'SendSyncCommand', { project_id: 'p-online', command_type: 'never' }, { deadlineMs: 2000 }),
      status.DEADLINE_EXCEEDED,
    );
    assert.match(String(e.metadata.get('command-id')[0]), UUID);
    assert.equal(e.metadata.get('command-status')[0], 'pending');
  });

  test('GetCommand, ListCommands and CancelCommand', async () => {
    const a = await call(hub.client, 'SendCommand', { project_id: 'p-list', command_type: 'never' });
    const b = await call(hub.client, 'SendCommand', { project_id: 'p-list', command_type: 'never' });
    const d = await call<{ command: Msg; payload_json: string; result?: Msg; timings: Msg }>(hub.client, 'GetCommand', {
      command_id: a.command_id,
    });
    assert.equal(d.command.command_id, a.command_id);
    assert.equal(d.payload_json, '{}');
    assert.equal(d.result, undefined);
    assert.equal(d.timings.total_ms, undefined);

    const page = await call<{ items: Msg[]; total: number; limit: number }>(hub.client, 'ListCommands', {
      project_id: 'p-list',
      status: ['pending'],
      limit: 10,
    });
    assert.equal(page.total, 2);
    assert.equal(page.limit, 10);
    assert.deepEqual(
      page.items.map((i) => i.command_id),
      [b.command_id, a.command_id],
    );

    const c = await call(hub.client, 'CancelCommand', { command_id: a.command_id });
    assert.equal(c.status, 'cancelled');
    const again = await fails(
      call(hub.client, 'CancelCommand', { command_id: a.command_id }),
      status.FAILED_PRECONDITION,
    );
    assert.equal(again.metadata.get('error-code')[0], 'CMD_ERR_NOT_CANCELLABLE');
  });

  test('GetProjectStatus, ListOnlineProjects, CreateProject and ListProjects', async () => {
    const p = await call(hub.client, 'GetProjectStatus', { project_id: 'p-online' });
    assert.equal(p.state, 'online');
    assert.equal(p.name, 'name of p-online');
    assert.deepEqual(JSON.parse(String(p.metrics_json)), { cpu: 0.5 });
    assert.equal(p.last_alert_json, '');
    assert.equal(p.last_heartbeat_at, undefined);

    const online = await call<{ items: Msg[]; total: number }>(hub.client, 'ListOnlineProjects', {});
    assert.deepEqual(
      online.items.map((i) => i.project_id),
      ['p-online'],
    );
    assert.equal(online.total, 1);

    const created = await call(hub.client, 'CreateProject', {
      project_id: 'p-new',
      name: 'New',
      metadata_json: '{"site":"north"}',
    });
    assert.deepEqual(created, { project_id: 'p-new', secret: 's3cret', mqtt_username: 'p-new', mqtt_password: 'pw' });
    assert.deepEqual(hub.seen.creates.at(-1), { project_id: 'p-new', name: 'New', metadata: { site: 'north' } });
    const dup = await fails(call(hub.client, 'CreateProject', { project_id: 'p-new' }), status.ALREADY_EXISTS);
    assert.equal(dup.metadata.get('error-code')[0], 'STATUS_ERR_EXISTS');

    const all = await call<{ items: Msg[]; total: number }>(hub.client, 'ListProjects', { include_disabled: true });
    assert.equal(all.total, 3);
    assert.ok(all.items.some((i) => i.project_id === 'p-new' && i.state === 'offline'));
  });

  test('INVALID_ARGUMENT names the field', async () => {
    const cases: [string, Msg, string][] = [
      ['SendCommand', { project_id: 'p-online', command_type: 'x', payload_json: '{nope' }, 'payload_json'],
      ['SendCommand', { project_id: 'p-online' }, 'command_type'],
      ['SendCommand', { project_id: 'p-online', command_type: 'x', offline_policy: 'later' }, 'offline_policy'],
      ['SendCommand', { project_id: 'p-online', command_type: 'x', command_id: 'nope' }, 'command_id'],
      ['SendCommand', { command_type: 'x' }, 'project_id'],
      ['SendSyncCommand', { project_id: 'p-online', command_type: 'echo', wait_ms: 0 }, 'wait_ms'],
      ['GetCommand', { command_id: '42' }, 'command_id'],
      ['CancelCommand', {}, 'command_id'],
      ['CreateProject', { metadata_json: '[1]' }, 'metadata_json'],
      ['ListCommands', { project_id: 'a#b' }, 'project_id'],
      ['WatchEvents', {}, 'all'],
    ];
    for (const [method, req, field] of cases) {
      const p =
        method === 'WatchEvents'
          ? new Promise((resolve, reject) => {
              const s = watch(hub.client, req);
              s.on('data', resolve);
              s.on('error', reject);
            })
          : call(hub.client, method, req);
      const e = await fails(p, status.INVALID_ARGUMENT);
      assert.ok(e.details.startsWith(`${field}:`), `${method}: "${e.details}" should start with "${field}:"`);
    }
    // the command module's own refusals keep their field and code
    const e = await fails(
      call(hub.client, 'SendCommand', { project_id: 'p-online', command_type: 'bad' }),
      status.INVALID_ARGUMENT,
    );
    assert.match(e.details, /^command_type:/);
    assert.equal(e.metadata.get('error-code')[0], 'CMD_ERR_INVALID');
  });

  test('a bad project id is refused before anything reaches a topic', async () => {
    const sends = hub.seen.sends.length;
    const creates = hub.seen.creates.length;
    for (const bad of ['a/b', 'a+b', 'a#b', '$SYS', 'nul\u0000x', 'x'.repeat(129)]) {
      const e = await fails(
        call(hub.client, 'SendCommand', { project_id: bad, command_type: 'echo' }),
        status.INVALID_ARGUMENT,
      );
      assert.match(e.details, /^project_id:/);
      await fails(
        call(hub.client, 'SendSyncCommand', { project_id: bad, command_type: 'echo' }),
        status.INVALID_ARGUMENT,
      );
      await fails(call(hub.client, 'GetProjectStatus', { project_id: bad }), status.INVALID_ARGUMENT);
      await fails(call(hub.client, 'CreateProject', { project_id: bad }), status.INVALID_ARGUMENT);
    }
    assert.equal(hub.seen.sends.length, sends);
    assert.equal(hub.seen.creates.length, creates);
  });

  test('NOT_FOUND and FAILED_PRECONDITION', async () => {
    const nf = await fails(
      call(hub.client, 'GetCommand', { command_id: '00000000-0000-4000-8000-000000000000' }),
      status.NOT_FOUND,
    );
    assert.equal(nf.metadata.get('error-code')[0], 'CMD_ERR_NOT_FOUND');
    await fails(call(hub.client, 'GetProjectStatus', { project_id: 'nobody' }), status.NOT_FOUND);
    const off = await fails(
      call(hub.client, 'SendCommand', { project_id: 'offline-1', command_type: 'echo' }),
      status.FAILED_PRECONDITION,
    );
    assert.match(off.details, /offline/);
    assert.equal(off.metadata.get('error-code')[0], 'CMD_ERR_PROJECT_OFFLINE');
    await fails(
      call(hub.client, 'SendSyncCommand', { project_id: 'offline-1', command_type: 'echo' }),
      status.FAILED_PRECONDITION,
    );
    // a caller's mistake is one info line with its code: no stack, not an error of the module
    const refusals = logged.find('gRPC call refused', 'grpc').filter((l) => l.code === 'CMD_ERR_PROJECT_OFFLINE');
    assert.deepEqual(
      refusals.map((l) => [l.method, l.level, l.grpc_status]),
      [
        ['SendCommand', LEVEL.info, status.FAILED_PRECONDITION],
        ['SendSyncCommand', LEVEL.info, status.FAILED_PRECONDITION],
      ],
    );
    assert.ok(refusals.every((l) => l.err === undefined));
    assert.deepEqual(
      logged.lines.filter((l) => l.level >= LEVEL.error),
      [],
      'no refusal is logged as an error',
    );
  });

  test('the counters see calls and refusals', async () => {
    const s = await hub.stats();
    assert.equal(s.host, '127.0.0.1');
    assert.equal(s.auth, false);
    assert.ok(s.calls > 20);
    assert.ok((s.errors[String(status.INVALID_ARGUMENT)] ?? 0) > 10);
    assert.equal(s.sync_waiting, 0);
  });
});

describe('grpc: tokens', () => {
  let hub: Hub;
  before(async () => {
    // no fake-command: calls to it find no responder
    hub = await startHub({ tokens: ['t-one'], token: 't-two', host: '127.0.0.1' }, { fakes: ['status'] });
  });
  after(async () => {
    await hub?.stop();
  });

  test('UNAUTHENTICATED without a token or with a wrong one; either configured token works', async () => {
    const none = await fails(call(hub.client, 'GetProjectStatus', { project_id: 'p-online' }), status.UNAUTHENTICATED);
    assert.match(none.details, /authorization/);
    await fails(
      call(hub.client, 'GetProjectStatus', { project_id: 'p-online' }, { token: 't-three' }),
      status.UNAUTHENTICATED,
    );
    for (const token of ['t-one', 't-two']) {
      const p = await call(hub.client, 'GetProjectStatus', { project_id: 'p-online' }, { token });
      assert.equal(p.project_id, 'p-online');
    }
    // streams too
    await fails(
      new Promise((resolve, reject) => {
        const s = watch(hub.client, { all: true });
        s.on('data', resolve);
        s.on('error', reject);
      }),
      status.UNAUTHENTICATED,
    );
    assert.equal((await hub.stats()).auth, true);
  });

  test('a module that is not running answers UNAVAILABLE', async () => {
    const e = await fails(
      call(hub.client, 'SendCommand', { project_id: 'p-online', command_type: 'echo' }, { token: 't-one' }),
      status.UNAVAILABLE,
    );
    assert.equal(e.metadata.get('error-code')[0], 'BUS_ERR_NO_RESPONDER');
  });
});
