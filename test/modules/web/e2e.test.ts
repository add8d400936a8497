/**
 * The web module in front of the real hub: status, command and mqtt-bridge on PGlite and an
 * MQTT broker, and a real agent module. A project is provisioned over REST, the agent is added
 * to config.yml with the secret the API showed (a live reload), comes online (seen on the
 * WebSocket), and a sync command sent over REST returns the agent's own result.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { ProviderRegistry } from '../../../core/registry.js';
import { provider as agentProvider } from '../../../modules/agent/index.js';
import { provider as commandProvider } from '../../../modules/command/index.js';
import { provider as bridgeProvider } from '../../../modules/mqtt-bridge/index.js';
import { provider as statusProvider } from '../../../modules/status/index.js';
import { WEB, type WebInfo } from '../../../modules/web/contract/topics.js';
import { provider as webProvider } from '../../../modules/web/index.js';
import { preparePgliteTemplate, tempPgliteConfig } from '../../helpers/db.js';
import { startHost, type TestHost } from '../../helpers/host.js';
import { startTestBroker, type TestBroker } from '../../helpers/mqtt.js';
import { type Json, WsClient } from './harness.js';

const API = '/api/exchange-hub';
const T = 20_000;

describe('web over the real hub modules and a real agent (PGlite, aedes)', () => {
  let broker: TestBroker;
  let th: TestHost;
  let base: string;
  let cleanup: () => void;
  let queueDir: string;
  let hubYaml: string;

  const call = async (method: string, p: string, body?: unknown): Promise<{ status: number; json: Json }> => {
    const res = await fetch(base + p, {
      method,
      headers: body === undefined ? {} : { 'content-type': 'application/json' },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    return { status: res.status, json: await res.json() };
  };

  before(async () => {
    await preparePgliteTemplate();
    const db = tempPgliteConfig();
    cleanup = db.cleanup;
    queueDir = fs.mkdtempSync(path.join(os.tmpdir(), 'gmq-web-e2e-'));
    broker = await startTestBroker();
    hubYaml = [
      'databases:',
      `  default: { driver: pglite, data_dir: ${JSON.stringify(db.config.data_dir)} }`,
      'modules:',
      '  status: {}',
      '  command: {}',
      `  mqtt-bridge: { url: ${JSON.stringify(broker.url)}, username: hub, password: hub }`,
      '  web: { port: 0 }',
    ].join('\n');
    const registry = new ProviderRegistry()
      .register(statusProvider)
      .register(commandProvider)
      .register(bridgeProvider)
      .register(webProvider)
      .register(agentProvider);
    th = await startHost(hubYaml, registry);
    base = (await th.host.bus.request<WebInfo>(WEB.info('web'), {})).url;
  });

  after(async () => {
    await th?.stop();
    await broker?.close();
    cleanup?.();
    fs.rmSync(queueDir, { recursive: true, force: true });
  });

  test('provision → agent online (live) → sync command answered by the agent → visible everywhere', async () => {
    const created = await call('POST', `${API}/projects`, { project_id: 'e2e-plant', name: 'E2E plant' });
    assert.equal(created.status, 201);
    const offline = await call('POST', `${API}/command/send`, { project_id: 'e2e-plant', command_type: 'echo' });
    assert.equal(offline.status, 409);
    assert.equal(offline.json.error.code, 'CMD_ERR_PROJECT_OFFLINE');

    const ws = await WsClient.open(base);
    ws.send({ op: 'subscribe', projects: ['e2e-plant'] });
    await ws.next((m) => m.op === 'subscribed');

    // the agent joins with the secret the API showed once: a config edit, applied live
    const agent = {
      url: broker.url,
      project_id: 'e2e-plant',
      secret: created.json.secret,
      queue: { dir: queueDir },
    };
    th.writeConfig(`${hubYaml}\n  agent: ${JSON.stringify(agent)}\n`);
    const outcome = await th.host.reload();
    assert.deepEqual(outcome.started, ['agent']);

    await ws.next((m) => m.op === 'event' && m.type === 'project.status' && m.data.state === 'online', T);
    const status = await call('GET', `${API}/project/e2e-plant/status`);
    assert.equal(status.json.state, 'online');
    const online = await call('GET', `${API}/projects/online`);
    assert.deepEqual(
      online.json.items.map((p: Json) => p.project_id),
      ['e2e-plant'],
    );
    const ready = await call('GET', '/readyz');
    assert.equal(ready.status, 200, JSON.stringify(ready.json));

    const r = await call('POST', `${API}/command/sync`, {
      project_id: 'e2e-plant',
      command_type: 'echo',
      payload: { hello: 'agent' },
      wait_ms: T,
    });
    assert.equal(r.status, 200, JSON.stringify(r.json));
    assert.equal(r.json.status, 'completed');
    assert.equal(r.json.result.status, 'success');
    assert.deepEqual(JSON.parse(r.json.result.output), { hello: 'agent' });
    for (const k of ['queue_ms', 'delivery_ms', 'execution_ms', 'total_ms']) {
      assert.equal(typeof r.json.timings[k], 'number', k);
    }

    await ws.next((m) => m.op === 'event' && m.type === 'command.result' && m.command_id === r.json.command_id, T);
    const states = ws
      .events()
      .filter((e) => e.type === 'command.state' && e.command_id === r.json.command_id)
      .map((e) => e.data.status);
    assert.deepEqual(states.slice(0, 1), ['pending']);
    assert.equal(states.at(-1), 'completed');

    const list = await call('GET', `${API}/commands?project_id=e2e-plant&status=completed`);
    assert.deepEqual(
      list.json.items.map((c: Json) => c.command_id),
      [r.json.command_id],
    );
    const metrics = await fetch(`${base}/metrics`).then((res) => res.text());
    assert.match(metrics, /hub_commands_final_total\{status="completed"\} 1/);
    assert.match(metrics, /hub_command_stage_seconds_count\{stage="execution"\} 1/);
    assert.match(metrics, /hub_mqtt_connected 1/);
    await ws.close();
  });
});
