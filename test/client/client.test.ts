/**
 * `gmq-hub/client` (client/index.ts) against a real hub process (embedded broker + PGlite) and a
 * real agent process: provisioning, a sync command answered by the agent, an async send followed
 * by id, the list with filters, idempotent replays, and the hub's refusals as HubApiError with
 * their stable codes. It is imported the way a user imports it: through package.json `exports`.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import * as direct from '../../client/index.js';
import { type Agent, Hub, T } from '../e2e/harness.js';
import { scaled, until } from '../helpers/wait.js';

// The package's own name resolves through its `exports` map (Node's self-reference), to the very
// module compiled from client/index.ts. (A string variable: typechecking must not need dist/.)
const specifier: string = 'gmq-hub/client';
const viaExports = (await import(specifier)) as typeof direct;
const { HubApiError, HubClient } = viaExports;

describe('gmq-hub/client against a real hub', () => {
  let hub: Hub;
  let agent: Agent | undefined;

  before(async () => {
    hub = await Hub.create('embedded');
    await hub.start();
  });

  after(async () => {
    await agent?.dispose();
    await hub?.dispose();
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
});
