import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import net from 'node:net';
import { describe, test } from 'node:test';
import type { ModuleProvider } from '../../../core/module.js';
import { provider as brokerProvider } from '../../../modules/broker/index.js';
import { BRIDGE, type BridgeStats } from '../../../modules/mqtt-bridge/contract/topics.js';
import { provider as bridgeProvider } from '../../../modules/mqtt-bridge/index.js';
import {
  buildCommand,
  buildData,
  type Downlink,
  messageDownTopic,
  parseDownlink,
  TOPIC_COMMAND_UP,
  TOPIC_MESSAGE_UP,
} from '../../../modules/shared/protocol.js';
import { verifySignature } from '../../../modules/shared/signing.js';
import { type ProjectView, STATUS } from '../../../modules/status/contract/topics.js';
import { connectClient, MOSQUITTO_URL } from '../../helpers/mqtt.js';
import { until } from '../../helpers/wait.js';
import { type Driver, RealClock, Recorder, startStatus } from './harness.js';

const unique = (what: string) => `${what}-${randomBytes(5).toString('hex')}`;

async function freePort(): Promise<number> {
  const srv = net.createServer();
  await new Promise<void>((resolve) => srv.listen(0, '127.0.0.1', resolve));
  const { port } = srv.address() as net.AddressInfo;
  await new Promise<void>((resolve) => srv.close(() => resolve()));
  return port;
}

interface Setup {
  url: string;
  modules: Record<string, unknown>;
  providers: ModuleProvider<never>[];
  /** The broker asks the status module to authenticate agents. */
  auth: boolean;
}

const bridgeBlock = (url: string) => ({
  url,
  client_id: unique('t-status-hub'),
  clean_session: true,
  reconnect_min_ms: 20,
  reconnect_max_ms: 200,
});

const CASES: { name: string; driver: Driver; setup(): Promise<Setup> }[] = [
  {
    name: 'the embedded broker module (agents authenticated by status)',
    driver: 'pglite',
    async setup() {
      const port = await freePort();
      const url = `mqtt://127.0.0.1:${port}`;
      return {
        url,
        modules: { broker: { port, host: '127.0.0.1' }, 'mqtt-bridge': bridgeBlock(url) },
        providers: [brokerProvider, bridgeProvider] as ModuleProvider<never>[],
        auth: true,
      };
    },
  },
  {
    name: 'Mosquitto',
    driver: 'pg',
    async setup() {
      return {
        url: MOSQUITTO_URL,
        modules: { 'mqtt-bridge': bridgeBlock(MOSQUITTO_URL) },
        providers: [bridgeProvider] as ModuleProvider<never>[],
        auth: false,
      };
    },
  },
];

for (const c of CASES) {
  describe(`status through a real bridge and ${c.name}`, () => {
    test('an MQTT agent registers, heartbeats, and its last will takes it offline', async () => {
      const s = await c.setup();
      const h = await startStatus(c.driver, { clock: new RealClock(), modules: s.modules, providers: s.providers });
      const agentId = unique('t-status-agent');
      const pid = unique('e2e');
      let agent: Awaited<ReturnType<typeof connectClient>> | undefined;
      try {
        await until(
          async () => (await h.request<BridgeStats>(BRIDGE.stats, {})).state === 'connected',
          5_000,
          'bridge connected',
        );
        const p = await h.create(pid);
        if (s.auth) {
          await assert.rejects(
            connectClient(s.url, { clientId: agentId, username: pid, password: 'f'.repeat(64) }),
            'a wrong password is refused by the broker',
          );
        }
        const instance = `wd-e2e-${process.pid}`;
        const will = buildData(pid, 'disconnect', { reason: 'last_will', instance_id: instance }, { secret: p.secret });
        agent = await connectClient(s.url, {
          clientId: agentId,
          username: p.mqtt_username,
          password: p.mqtt_password,
          clean: true,
          will: { topic: TOPIC_MESSAGE_UP, payload: Buffer.from(JSON.stringify(will)), qos: 1, retain: false },
        });
        const downs = new Recorder<Downlink>();
        agent.on('message', (topic, payload) => {
          const r = parseDownlink(topic, payload);
          if (r.ok) downs.push(r.value);
        });
        await agent.subscribeAsync(messageDownTopic(pid), { qos: 1 });

        const register = buildCommand(
          pid,
          'register',
          {
            node_name: 'wd',
            instance_id: instance,
            version: '3.0.0',
            pid: process.pid,
            start_time: Date.now(),
            capabilities: [],
            metadata: {},
            node_version: process.version,
          },
          p.secret,
        );
        await agent.publishAsync(TOPIC_COMMAND_UP, JSON.stringify(register), { qos: 1 });
        // only answers signed with this project's secret count (a shared broker may carry others)
        const ack = await downs.wait(
          (d) => d.kind === 'data' && d.msg.data_type === 'register_ack' && verifySignature(d.msg, p.secret),
          'register_ack',
        );
        assert.equal((ack.msg.payload as { accepted: boolean }).accepted, true);

        const evFrom = h.events.items.length;
        const complete = buildData(pid, 'register_complete', { instance_id: instance }, { secret: p.secret });
        await agent.publishAsync(TOPIC_MESSAGE_UP, JSON.stringify(complete), { qos: 1 });
        await h.events.wait((e) => e.project_id === pid && e.state === 'online', 'online', evFrom);

        const hb = buildData(pid, 'heartbeat', { uptime_s: 1, metrics: { cpu: 0.25 } }, { secret: p.secret });
        await agent.publishAsync(TOPIC_MESSAGE_UP, JSON.stringify(hb), { qos: 1 });
        await until(
          async () => (await h.request<ProjectView>(STATUS.get, { project_id: pid })).metrics?.cpu === 0.25,
          5_000,
          'heartbeat metrics',
        );

        // the connection dies without a DISCONNECT packet: the broker publishes the last will
        agent.stream.destroy();
        const off = await h.events.wait((e) => e.project_id === pid && e.state === 'offline', 'offline', evFrom);
        assert.equal(off.reason, 'disconnect: last_will');
        assert.equal(off.previous, 'disconnecting');
      } finally {
        agent?.end(true);
        await h.close();
      }
    });
  });
}
