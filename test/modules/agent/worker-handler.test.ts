/**
 * A command type served by a `type: worker` module on the agent's host (the README's example,
 * examples/agent/handlers/disk-usage.mjs): the agent verifies the command, asks the worker over
 * the bus, streams the worker's output as log_result and answers with its exec_result.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { ProviderRegistry } from '../../../core/registry.js';
import { provider as agentProvider } from '../../../modules/agent/index.js';
import { startHost, type TestHost } from '../../helpers/host.js';
import { startTestBroker, type TestBroker } from '../../helpers/mqtt.js';
import { REPO_ROOT } from '../../helpers/process.js';
import { FakeHub } from './fake-hub.js';

const T = 15_000;

describe('agent command handler in a worker module', () => {
  let broker: TestBroker;
  let hub: FakeHub;
  let th: TestHost;
  let queueDir: string;

  before(async () => {
    broker = await startTestBroker();
    const projectId = `w-${randomBytes(4).toString('hex')}`;
    const secret = randomBytes(16).toString('hex');
    hub = await FakeHub.start(broker.url, projectId, secret);
    hub.heartbeatS = 30;
    queueDir = fs.mkdtempSync(path.join(os.tmpdir(), 'agent-wh-'));
    const agent = { url: broker.url, project_id: projectId, secret, log_flush_ms: 20, queue: { dir: queueDir } };
    const worker = {
      type: 'worker',
      path: path.join(REPO_ROOT, 'examples/agent/handlers/disk-usage.mjs'),
      paths: [os.tmpdir()],
    };
    // the handler starts first, so it serves from the agent's first command on
    th = await startHost(
      `modules:\n  disk-usage: ${JSON.stringify(worker)}\n  agent: ${JSON.stringify(agent)}\n`,
      new ProviderRegistry().register(agentProvider),
    );
    await hub.waitFor((u) => u.type === 'register_complete', T, 'register_complete');
  });

  after(async () => {
    await th?.stop();
    await hub?.close();
    await broker?.close();
    if (queueDir) fs.rmSync(queueDir, { recursive: true, force: true });
  });

  test('an allowed path: acked, progress streamed as log_result, then the worker’s result', async () => {
    const cmd = await hub.command('disk_usage', { path: os.tmpdir() });
    const res = await hub.waitFor(
      (u) => u.type === 'exec_result' && u.payload.command_id === cmd.message_id,
      T,
      'exec_result',
    );
    assert.equal(res.payload.status, 'success', JSON.stringify(res.payload));
    const out = JSON.parse(res.payload.output);
    assert.equal(out.path, os.tmpdir());
    assert.ok(out.total_bytes > 0 && out.free_bytes >= 0 && out.free_bytes <= out.total_bytes);
    assert.ok(hub.about('command_ack', cmd.message_id).length >= 1);
    const logs = hub.about('log_result', cmd.message_id);
    assert.equal(logs.map((l) => l.payload.content).join(''), `statfs ${os.tmpdir()}\n`);
    assert.ok(hub.received.indexOf(logs.at(-1)!) < hub.received.indexOf(res));
  });

  test('a path outside the configured list fails with the reason, and runs nothing', async () => {
    const cmd = await hub.command('disk_usage', { path: '/etc' });
    const res = await hub.waitFor(
      (u) => u.type === 'exec_result' && u.payload.command_id === cmd.message_id,
      T,
      'exec_result',
    );
    assert.equal(res.payload.status, 'failure');
    assert.match(res.payload.error, /not in the allowed paths/);
    assert.deepEqual(hub.about('log_result', cmd.message_id), []);
  });
});
