/**
 * The RPCs that match the REST API's admin routes: disable / enable a project, rotate its secret,
 * dead commands (list, replay), the host's modules (list, restart, the grpc module itself too).
 * Fake command and status modules on the bus (harness.ts); real gRPC clients on loopback.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import * as grpc from '@grpc/grpc-js';
import { z } from 'zod';
import { HOST_TOPICS } from '../../../core/host-topics.js';
import type { ModuleProvider } from '../../../core/module.js';
import { COMMAND } from '../../../modules/command/contract/topics.js';
import { STATUS } from '../../../modules/status/contract/topics.js';
import { recordEvents } from '../../fixtures/bus-events.js';
import { withTimeout } from '../../helpers/wait.js';
import { call, ExchangeHubClient, fails, type Hub, type Msg, startHub } from './harness.js';

const { status } = grpc;
const UNKNOWN_ID = '00000000-0000-4000-8000-000000000000';

interface Mailbox {
  name: string;
  queued: number;
  capacity: number;
  overflow: string;
  paused: boolean;
  enqueued: number;
  handled: number;
  dropped: number;
  rejected: number;
  errors: number;
  blocked: number;
  handler_ms_total: number;
  handler_ms_max: number;
  subscriptions: string[];
}
interface ModuleMsg {
  name: string;
  type: string;
  provider: string;
  state: string;
  started_at?: string;
  restarts: number;
  failures: number;
  last_error?: string;
  mailbox?: Mailbox;
}

async function modules(client: grpc.Client, token?: string): Promise<Map<string, ModuleMsg>> {
  const r = await call<{ items: ModuleMsg[] }>(client, 'ListModules', {}, { token });
  return new Map(r.items.map((m) => [m.name, m]));
}

const code = (e: grpc.ServiceError) => e.metadata.get('error-code')[0];

describe('grpc: project admin, dead commands and modules', () => {
  let hub: Hub;
  before(async () => {
    hub = await startHub({});
  });
  after(async () => {
    await hub?.stop();
  });

  test('DisableProject and EnableProject return the project as it is now; NOT_FOUND when unknown', async () => {
    const off = await call(hub.client, 'DisableProject', { project_id: 'p-online' });
    assert.equal(off.project_id, 'p-online');
    assert.equal(off.enabled, false);
    assert.equal(off.state, 'offline');
    assert.deepEqual(hub.seen.admin.at(-1), { topic: STATUS.disable, req: { project_id: 'p-online' } });
    const on = await call(hub.client, 'EnableProject', { project_id: 'p-online' });
    assert.equal(on.enabled, true);
    assert.equal(on.name, 'name of p-online');
    assert.equal(typeof on.metrics_json, 'string');
    assert.deepEqual(hub.seen.admin.at(-1), { topic: STATUS.enable, req: { project_id: 'p-online' } });

    for (const method of ['DisableProject', 'EnableProject']) {
      const e = await fails(call(hub.client, method, { project_id: 'ghost' }), status.NOT_FOUND);
      assert.equal(code(e), 'STATUS_ERR_NOT_FOUND');
    }
  });

  test('RotateProjectSecret returns the new credentials; overlap_s goes on only when set', async () => {
    const r = await call(hub.client, 'RotateProjectSecret', { project_id: 'p-quiet', overlap_s: 60 });
    assert.deepEqual(r, { project_id: 'p-quiet', secret: 's3cret-1', mqtt_username: 'p-quiet', mqtt_password: 'pw-1' });
    assert.deepEqual(hub.seen.admin.at(-1), { topic: STATUS.rotate, req: { project_id: 'p-quiet', overlap_s: 60 } });
    await call(hub.client, 'RotateProjectSecret', { project_id: 'p-quiet' });
    assert.deepEqual(hub.seen.admin.at(-1)?.req, { project_id: 'p-quiet' }, 'unset: the status module default');
    await call(hub.client, 'RotateProjectSecret', { project_id: 'p-quiet', overlap_s: 0 });
    assert.deepEqual(hub.seen.admin.at(-1)?.req, { project_id: 'p-quiet', overlap_s: 0 }, '0 is a value: end at once');

    const big = await fails(
      call(hub.client, 'RotateProjectSecret', { project_id: 'p-quiet', overlap_s: 30 * 86_400 + 1 }),
      status.INVALID_ARGUMENT,
    );
    assert.match(big.details, /^overlap_s:/);
    assert.equal(code(big), 'STATUS_ERR_INVALID');
    const nf = await fails(call(hub.client, 'RotateProjectSecret', { project_id: 'ghost' }), status.NOT_FOUND);
    assert.equal(code(nf), 'STATUS_ERR_NOT_FOUND');
  });

  test('ListDeadCommands pages dead commands with their last error; ReplayDeadCommand puts one back', async () => {
    const a = await call(hub.client, 'SendCommand', { project_id: 'p-online', command_type: 'dead' });
    const b = await call(hub.client, 'SendCommand', { project_id: 'p-online', command_type: 'dead' });
    type Page = { items: { command: Msg; last_error?: string }[]; total: number; limit: number; offset: number };
    const page = await call<Page>(hub.client, 'ListDeadCommands', {});
    assert.equal(page.total, 2);
    assert.equal(page.limit, 50);
    assert.equal(page.offset, 0);
    assert.deepEqual(
      page.items.map((i) => i.command.command_id),
      [b.command_id, a.command_id],
    );
    assert.equal(page.items[0].command.status, 'failed');
    assert.equal(page.items[0].command.error, 'undeliverable');
    assert.equal(page.items[0].last_error, 'no agent ack after 8 publishes');
    assert.deepEqual(hub.seen.admin.at(-1), { topic: COMMAND.deadList, req: {} }, 'unset paging is left out');

    const second = await call<Page>(hub.client, 'ListDeadCommands', { limit: 1, offset: 1 });
    assert.deepEqual(
      second.items.map((i) => i.command.command_id),
      [a.command_id],
    );
    assert.equal(second.limit, 1);
    assert.equal(second.offset, 1);

    const replayed = await call(hub.client, 'ReplayDeadCommand', { command_id: String(a.command_id).toUpperCase() });
    assert.equal(replayed.command_id, a.command_id, 'the id is normalised to lower case');
    assert.equal(replayed.status, 'pending');
    assert.equal(replayed.attempts, 0);
    assert.equal(replayed.error, undefined);
    assert.equal((await call<Page>(hub.client, 'ListDeadCommands', {})).total, 1);

    const notDead = await fails(
      call(hub.client, 'ReplayDeadCommand', { command_id: a.command_id }),
      status.INVALID_ARGUMENT,
    );
    assert.match(notDead.details, /^command_id: .* is not dead/);
    const nf = await fails(call(hub.client, 'ReplayDeadCommand', { command_id: UNKNOWN_ID }), status.NOT_FOUND);
    assert.equal(code(nf), 'CMD_ERR_NOT_FOUND');
    const zero = await fails(call(hub.client, 'ListDeadCommands', { limit: 0 }), status.INVALID_ARGUMENT);
    assert.match(zero.details, /^limit:/);
  });

  test('ListModules shows every module with its type, state, start time and mailbox counters', async () => {
    const first = await modules(hub.client);
    assert.deepEqual([...first.keys()].sort(), ['fake-command', 'fake-status', 'grpc']);
    for (const m of first.values()) {
      assert.equal(m.type, 'inner');
      assert.equal(m.state, 'running');
      assert.ok(Date.parse(String(m.started_at)) > 0, `${m.name} started_at`);
      assert.equal(m.failures, 0);
      assert.equal(m.last_error, undefined);
      assert.equal(m.mailbox?.name, m.name);
      assert.equal(m.mailbox?.capacity, 10_000);
      assert.equal(m.mailbox?.overflow, 'block');
      assert.equal(m.mailbox?.paused, false);
      for (const k of ['queued', 'enqueued', 'handled', 'dropped', 'rejected', 'errors', 'blocked'] as const) {
        assert.equal(typeof m.mailbox?.[k], 'number', `${m.name} mailbox.${k}`);
      }
    }
    const cmd = first.get('fake-command')!;
    assert.equal(cmd.provider, 'fake-command');
    assert.ok(cmd.mailbox!.subscriptions.includes(COMMAND.send));
    assert.ok(cmd.mailbox!.handled >= 5, 'the calls above went through its mailbox');
    assert.ok(cmd.mailbox!.enqueued >= cmd.mailbox!.handled);
    assert.ok(cmd.mailbox!.handler_ms_total >= cmd.mailbox!.handler_ms_max);
    // the handled counter follows the calls that reach the module
    await call(hub.client, 'ListDeadCommands', {});
    await call(hub.client, 'GetCommand', { command_id: UNKNOWN_ID }).catch(() => undefined);
    const next = await modules(hub.client);
    assert.equal(next.get('fake-command')!.mailbox!.handled, cmd.mailbox!.handled + 2);
  });

  test('RestartModule of another module answers once it runs again, its restart count raised', async () => {
    const events = recordEvents(hub.th.host, [HOST_TOPICS.moduleRestarted]);
    const before = (await modules(hub.client)).get('fake-status')!;
    const r = await call<ModuleMsg>(hub.client, 'RestartModule', { name: 'fake-status' });
    assert.equal(r.name, 'fake-status');
    assert.equal(r.state, 'running');
    assert.equal(r.restarts, before.restarts + 1);
    assert.ok(Date.parse(String(r.started_at)) >= Date.parse(String(before.started_at)));
    assert.ok(r.mailbox?.subscriptions.includes(STATUS.get));
    const [ev] = await events.waitFor(HOST_TOPICS.moduleRestarted, 1);
    assert.deepEqual(ev.payload, { name: 'fake-status', restarts: before.restarts + 1, reason: 'request' });
    assert.equal((await modules(hub.client)).get('fake-status')!.restarts, before.restarts + 1);
    // the new instance answers
    const p = await call(hub.client, 'GetProjectStatus', { project_id: 'p-online' });
    assert.equal(p.project_id, 'p-online');

    const nf = await fails(call(hub.client, 'RestartModule', { name: 'nope' }), status.NOT_FOUND);
    assert.equal(code(nf), 'HOST_ERR_UNKNOWN_MODULE');
  });

  test('INVALID_ARGUMENT names the field, and a bad id reaches no topic', async () => {
    const admin = hub.seen.admin.length;
    const cases: [string, Msg, string][] = [
      ['DisableProject', { project_id: 'a/b' }, 'project_id'],
      ['DisableProject', {}, 'project_id'],
      ['EnableProject', { project_id: 'a#b' }, 'project_id'],
      ['RotateProjectSecret', { project_id: '$SYS', overlap_s: 10 }, 'project_id'],
      ['ReplayDeadCommand', { command_id: '42' }, 'command_id'],
      ['ReplayDeadCommand', {}, 'command_id'],
      ['RestartModule', { name: 'Bad Name!' }, 'name'],
      ['RestartModule', { name: 'x'.repeat(65) }, 'name'],
      ['RestartModule', {}, 'name'],
    ];
    for (const [method, req, field] of cases) {
      const e = await fails(call(hub.client, method, req), status.INVALID_ARGUMENT);
      assert.ok(e.details.startsWith(`${field}:`), `${method}: "${e.details}" should start with "${field}:"`);
      assert.equal(code(e), 'CMD_ERR_INVALID');
    }
    assert.equal(hub.seen.admin.length, admin);
  });
});

describe('grpc: RestartModule of the grpc module itself', () => {
  test('answers first (state restarting), then restarts: a new server with a new feed epoch', async () => {
    // A long grace: were the restart to begin before the answer, the server's stop would wait
    // for this very call (tryShutdown) and the call would hang, not answer within 10 s.
    const hub = await startHub({ stop_grace_ms: 30_000 });
    const fresh: grpc.Client[] = [];
    try {
      const events = recordEvents(hub.th.host, [HOST_TOPICS.moduleRestarted]);
      const before = await hub.stats();
      const r = await withTimeout(
        call<ModuleMsg>(hub.client, 'RestartModule', { name: 'grpc' }),
        10_000,
        'the RestartModule answer',
      );
      assert.equal(r.name, 'grpc');
      assert.equal(r.state, 'restarting');
      assert.equal(r.type, 'inner');
      assert.equal(r.restarts, 0, 'answered before the restart');
      const [ev] = await events.waitFor(HOST_TOPICS.moduleRestarted, 1, 10_000);
      assert.deepEqual(ev.payload, { name: 'grpc', restarts: 1, reason: 'request' });

      const now = await hub.stats();
      assert.notEqual(now.feed_epoch, before.feed_epoch, 'a new instance');
      const c = new ExchangeHubClient(`127.0.0.1:${now.port}`, grpc.credentials.createInsecure());
      fresh.push(c);
      const self = (await modules(c)).get('grpc')!;
      assert.equal(self.state, 'running');
      assert.equal(self.restarts, 1);
      assert.equal(self.failures, 0);
    } finally {
      for (const c of fresh) c.close();
      await hub.stop();
    }
  });
});

describe('grpc: RestartModule of a module that fails to start again', () => {
  test('INTERNAL with the reason and HOST_ERR_START_FAILED; ListModules shows it failed', async () => {
    let failNext = false;
    const flaky: ModuleProvider<Record<string, never>> = {
      name: 'flaky',
      schema: z.object({}).strict(),
      create: () => ({
        start() {
          if (failNext) throw new Error('disk on fire');
        },
      }),
    };
    // a long retry delay, so the host's own retry does not race the assertions
    const block = { restart: { initial_ms: 60_000, max_ms: 60_000 } };
    const hub = await startHub({}, { fakes: [], extra: [{ provider: flaky, block }] });
    try {
      failNext = true;
      const e = await fails(call(hub.client, 'RestartModule', { name: 'flaky' }), status.INTERNAL);
      assert.equal(code(e), 'HOST_ERR_START_FAILED');
      assert.match(e.details, /^module flaky failed to start: .*disk on fire/);
      const m = (await modules(hub.client)).get('flaky')!;
      assert.equal(m.state, 'failed');
      assert.equal(m.failures, 1);
      assert.equal(m.started_at, undefined);
      assert.match(String(m.last_error), /disk on fire/);
      assert.equal(m.mailbox?.paused, true, 'its mailbox keeps its events until it runs again');

      failNext = false;
      const r = await call<ModuleMsg>(hub.client, 'RestartModule', { name: 'flaky' });
      assert.equal(r.state, 'running');
      assert.equal(r.mailbox?.paused, false);
    } finally {
      await hub.stop();
    }
  });
});

describe('grpc: the admin RPCs need the token', () => {
  let hub: Hub;
  before(async () => {
    hub = await startHub({ tokens: ['tok'], host: '127.0.0.1' });
  });
  after(async () => {
    await hub?.stop();
  });

  test('UNAUTHENTICATED without it, before anything reaches a module; with it they work', async () => {
    const calls: [string, Msg][] = [
      ['DisableProject', { project_id: 'p-online' }],
      ['EnableProject', { project_id: 'p-online' }],
      ['RotateProjectSecret', { project_id: 'p-online' }],
      ['ListDeadCommands', {}],
      ['ReplayDeadCommand', { command_id: UNKNOWN_ID }],
      ['ListModules', {}],
      ['RestartModule', { name: 'fake-status' }],
    ];
    for (const [method, req] of calls) {
      for (const token of [undefined, 'wrong']) {
        const e = await fails(call(hub.client, method, req, { token }), status.UNAUTHENTICATED);
        assert.equal(code(e), 'AUTH_ERR_TOKEN', method);
      }
    }
    assert.equal(hub.seen.admin.length, 0);
    const mods = await modules(hub.client, 'tok');
    assert.equal(mods.get('fake-status')!.restarts, 0, 'the refused RestartModule did nothing');

    const off = await call(hub.client, 'DisableProject', { project_id: 'p-online' }, { token: 'tok' });
    assert.equal(off.enabled, false);
    const r = await call<ModuleMsg>(hub.client, 'RestartModule', { name: 'fake-status' }, { token: 'tok' });
    assert.equal(r.restarts, 1);
  });
});
