/**
 * The hub and a field agent as processes, the agent connecting over MQTT over WebSocket: to the
 * embedded broker through the web port (`ws://…/mqtt`), and to Mosquitto's own WebSocket
 * listener (a private Mosquitto with a `protocol websockets` listener and password logins, the
 * way the README shows it in front of a hub in production). Over TCP the same paths are
 * covered by hub-agent.test.ts on both brokers.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { mosquittoAvailable, type PrivateMosquitto, startPrivateMosquitto } from '../helpers/mosquitto.js';
import { connectClient } from '../helpers/mqtt.js';
import { until } from '../helpers/wait.js';
import { type Agent, Hub, type Json, type Provisioned, scratchDir, T, uniqueId } from './harness.js';

interface Setup {
  title: string;
  create(): Promise<{ hub: Hub; wsUrl: () => string; tcpUrl: () => string; allow(p: Provisioned): Promise<void> }>;
  dispose(): Promise<void>;
}

let mosquitto: PrivateMosquitto | undefined;
const SETUPS: Setup[] = [
  {
    title: 'embedded broker, ws:// on the web port',
    async create() {
      const hub = await Hub.create('embedded');
      return {
        hub,
        wsUrl: () => `${hub.base.replace(/^http:/, 'ws:')}/mqtt`,
        tcpUrl: () => hub.brokerUrl,
        allow: async () => undefined,
      };
    },
    async dispose() {},
  },
  {
    title: "Mosquitto's WebSocket listener (private Mosquitto)",
    async create() {
      const hubLogin = { username: 'gmq-hub', password: randomBytes(12).toString('hex') };
      mosquitto = await startPrivateMosquitto({ [hubLogin.username]: hubLogin.password });
      const m = mosquitto;
      const hub = await Hub.create('server', { broker: { url: m.tcpUrl, ...hubLogin } });
      return {
        hub,
        wsUrl: () => m.wsUrl,
        tcpUrl: () => m.tcpUrl,
        // Mosquitto knows only the logins in its password file: the operator adds each project's
        allow: (p) => m.addUser(p.mqtt_username, p.mqtt_password),
      };
    },
    async dispose() {
      await mosquitto?.stop();
      mosquitto = undefined;
    },
  },
];

for (const setup of SETUPS) {
  const skip = setup.title.startsWith('Mosquitto') && !mosquittoAvailable() ? 'mosquitto is not installed' : undefined;
  describe(`agent over MQTT over WebSocket (${setup.title})`, { skip }, () => {
    let hub: Hub;
    let wsUrl: () => string;
    let tcpUrl: () => string;
    let allow: (p: Provisioned) => Promise<void>;
    const agents: Agent[] = [];
    const scratch = scratchDir('ws');

    before(async () => {
      ({ hub, wsUrl, tcpUrl, allow } = await setup.create());
      await hub.start();
    });

    after(async () => {
      for (const a of agents) await a.dispose().catch(() => undefined);
      await hub?.dispose();
      await setup.dispose();
      scratch.remove();
    });

    test('the agent registers over WebSocket, heartbeats with metrics, runs sync and async commands, and goes offline on stop', async () => {
      const project = await hub.provision('ws');
      await allow(project);
      const url = wsUrl();
      assert.match(url, /^ws:\/\//);
      const agent = hub.newAgent(project, { url });
      agents.push(agent);
      await agent.start();
      await agent.waitLog('agent connected to the broker');
      await agent.registered();
      const pid = project.project_id;
      const online = await hub.waitState(pid, 'online');
      assert.equal(online.registration.node_version.go_version, process.version, 'node_version kept as sent');

      let status: Json;
      await until(
        async () => {
          status = (await hub.api('GET', `/project/${pid}/status`)).json;
          return status.last_heartbeat_at !== null && status.metrics !== null;
        },
        T,
        'a heartbeat with metrics over REST',
      );
      assert.equal(typeof status.metrics.rss_bytes, 'number');

      const sync = await hub.api('POST', '/command/sync', {
        project_id: pid,
        command_type: 'echo',
        payload: { over: 'websocket' },
        wait_ms: T,
      });
      assert.equal(sync.status, 200, JSON.stringify(sync.json));
      assert.deepEqual(JSON.parse(sync.json.result.output), { over: 'websocket' });

      const file = path.join(scratch.dir, `${pid}.txt`);
      fs.writeFileSync(file, 'through a WebSocket\n');
      const sent = await hub.api('POST', '/command/send', {
        project_id: pid,
        command_type: 'host_exec',
        payload: { command: '/bin/cat', args: [file] },
      });
      assert.equal(sent.status, 202, JSON.stringify(sent.json));
      const done = await hub.waitCommand(sent.json.command_id);
      assert.equal(done.result.status, 'success', JSON.stringify(done.result));
      assert.equal(done.result.output, 'through a WebSocket\n');
      for (const k of ['queue_ms', 'delivery_ms', 'execution_ms', 'total_ms']) {
        assert.equal(typeof done.timings[k], 'number', k);
      }

      await agent.stop();
      await hub.waitState(pid, 'offline');
    });

    test('a wrong password over WebSocket is refused with CONNACK, the same code as over TCP', async () => {
      const project = await hub.provision('wspw');
      await allow(project);
      const codeOf = async (url: string, password: string): Promise<number | 'accepted'> => {
        try {
          const c = await connectClient(url, {
            clientId: uniqueId('pw'),
            username: project.mqtt_username,
            password,
            protocolVersion: 4,
          });
          await c.endAsync();
          return 'accepted';
        } catch (err) {
          return (err as { code?: number }).code ?? -1;
        }
      };
      assert.equal(await codeOf(wsUrl(), project.mqtt_password), 'accepted', 'the right password works over WebSocket');
      const overTcp = await codeOf(tcpUrl(), 'wrong-password');
      const overWs = await codeOf(wsUrl(), 'wrong-password');
      assert.ok(overTcp === 4 || overTcp === 5, `refused over TCP with CONNACK 4 or 5, got ${overTcp}`);
      assert.equal(overWs, overTcp, 'refused over WebSocket like over TCP');
    });
  });
}
