import assert from 'node:assert/strict';
import net from 'node:net';
import { describe, test } from 'node:test';
import type { MqttClient } from 'mqtt';
import type { BusMessage } from '../../../core/bus.js';
import {
  BRIDGE,
  type BridgeStateEvent,
  type BridgeStats,
  type MqttPublishReply,
} from '../../../modules/mqtt-bridge/contract/topics.js';
import { commandDownTopic } from '../../../modules/shared/protocol.js';
import { startHost } from '../../helpers/host.js';
import { connectClient, startTestBroker } from '../../helpers/mqtt.js';
import { deferred, scaled, until, withTimeout } from '../../helpers/wait.js';
import { BROKERS, bridgeYaml, FAST, recorderProvider, registry, stateProbe, uniqueId } from './fixtures.js';

const codeOf = (err: unknown) => (err as { code?: string }).code;

/** A loopback port nobody listens on. */
async function closedPort(): Promise<number> {
  const srv = net.createServer();
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', () => r()));
  const { port } = srv.address() as net.AddressInfo;
  await new Promise<void>((r) => srv.close(() => r()));
  return port;
}

function nextMessage(client: MqttClient, topic: string): Promise<{ payload: string; qos: number }> {
  const d = deferred<{ payload: string; qos: number }>();
  client.on('message', (t, payload, packet) => {
    if (t === topic) d.resolve({ payload: payload.toString(), qos: packet.qos });
  });
  return d.promise;
}

for (const broker of BROKERS) {
  describe(`mqtt/publish on ${broker.name}`, () => {
    test('delivers to a subscriber and replies after the PUBACK', async () => {
      const b = await broker.open();
      const clientId = uniqueId('pub');
      const agentId = uniqueId('agent');
      const h = await startHost(bridgeYaml({ url: b.url, client_id: clientId, ...FAST }), registry());
      const agent = await connectClient(b.url, { clientId: agentId });
      try {
        const topic = commandDownTopic(uniqueId('plant'));
        await agent.subscribeAsync(topic, { qos: 1 });
        const got = nextMessage(agent, topic);
        const payload = JSON.stringify({ hello: 'agent' });
        const reply = await h.host.bus.request<MqttPublishReply>(BRIDGE.publish, { topic, payload });
        assert.deepEqual(reply, { ok: true });
        const msg = await withTimeout(got, 5000, 'the agent to receive the publish');
        assert.equal(msg.payload, payload);
        assert.equal(msg.qos, 1, 'QoS 1 by default');
        const stats = await h.host.bus.request<BridgeStats>(BRIDGE.stats, {});
        assert.equal(stats.published, 1);
        assert.equal(stats.publish_failures, 0);
        assert.ok(stats.publish_ms_max >= stats.publish_ms_avg);
      } finally {
        await agent.endAsync();
        await h.stop();
        await b.done([clientId]);
      }
    });
  });
}

test('the reply waits for the broker PUBACK; none in time → MQTT_ERR_PUBLISH', async () => {
  const b = await startTestBroker();
  const gate = deferred();
  const arrived: string[] = [];
  // aedes sends the PUBACK only after authorizePublish calls back
  b.aedes.authorizePublish = (_client, packet, cb) => {
    arrived.push(packet.topic);
    if (packet.topic === 'never/acked') return; // no callback: no PUBACK, ever
    void gate.promise.then(() => cb(null));
  };
  const h = await startHost(
    bridgeYaml({ url: b.url, client_id: uniqueId('ack'), publish_timeout_ms: 300, ...FAST }),
    registry(),
  );
  try {
    let settled = false;
    const reply = h.host.bus
      .request<MqttPublishReply>(BRIDGE.publish, { topic: 'held/topic', payload: 'x' })
      .finally(() => {
        settled = true;
      });
    await until(() => arrived.includes('held/topic'), 5000, 'the publish to reach the broker');
    assert.equal(settled, false, 'no reply before the PUBACK');
    gate.resolve();
    assert.deepEqual(await reply, { ok: true });
    await assert.rejects(
      h.host.bus.request(BRIDGE.publish, { topic: 'never/acked', payload: 'x' }),
      (e) => codeOf(e) === 'MQTT_ERR_PUBLISH',
    );
    const stats = await h.host.bus.request<BridgeStats>(BRIDGE.stats, {});
    assert.equal(stats.published, 1);
    assert.equal(stats.publish_failures, 1);
  } finally {
    gate.resolve();
    await h.stop();
    await b.close();
  }
});

test('an invalid publish request is refused with MQTT_ERR_INVALID and counted nowhere else', async () => {
  const b = await startTestBroker();
  const h = await startHost(bridgeYaml({ url: b.url, client_id: uniqueId('inv'), ...FAST }), registry());
  try {
    for (const bad of [
      {},
      { topic: 'a/#', payload: 'x' },
      { topic: 'a', payload: { x: 1 } },
      { topic: 'a', payload: 'x', qos: 2 },
    ]) {
      await assert.rejects(h.host.bus.request(BRIDGE.publish, bad), (e) => codeOf(e) === 'MQTT_ERR_INVALID');
    }
    const stats = await h.host.bus.request<BridgeStats>(BRIDGE.stats, {});
    assert.equal(stats.published, 0);
  } finally {
    await h.stop();
    await b.close();
  }
});

test('with no broker, start still succeeds, reports offline, and a publish fails with MQTT_ERR_OFFLINE', async () => {
  const port = await closedPort();
  const h = await startHost(
    bridgeYaml({ url: `mqtt://127.0.0.1:${port}`, client_id: uniqueId('off'), publish_timeout_ms: 100, ...FAST }),
    registry(),
  );
  try {
    const stats = await h.host.bus.request<BridgeStats>(BRIDGE.stats, {});
    assert.notEqual(stats.state, 'connected');
    await assert.rejects(
      h.host.bus.request(BRIDGE.publish, { topic: 'x/y', payload: '{}' }),
      (e) => codeOf(e) === 'MQTT_ERR_OFFLINE',
    );
    const after = await h.host.bus.request<BridgeStats>(BRIDGE.stats, {});
    assert.equal(after.publish_failures, 1);
  } finally {
    await h.stop();
  }
});

test('a publish made while the broker is away waits for the connection and then succeeds', async () => {
  const port = await closedPort();
  const clientId = uniqueId('wait');
  const h = await startHost(
    bridgeYaml({ url: `mqtt://127.0.0.1:${port}`, client_id: clientId, publish_timeout_ms: 30_000, ...FAST }),
    registry(),
  );
  const states = stateProbe(h.host.bus);
  let b: Awaited<ReturnType<typeof startTestBroker>> | undefined;
  try {
    const pending = h.host.bus.request<MqttPublishReply>(
      BRIDGE.publish,
      { topic: 'late/topic', payload: 'x' },
      { timeoutMs: scaled(30_000) },
    );
    b = await startTestBroker(port);
    const sub = await connectClient(b.url, { clientId: uniqueId('agent') });
    try {
      assert.deepEqual(await withTimeout(pending, 15_000, 'the publish after the broker came up'), { ok: true });
      await states.next((m) => m.payload.state === 'connected', 5000, 'connected');
    } finally {
      await sub.endAsync();
    }
  } finally {
    await h.stop();
    await b?.close();
  }
});

test('state events: offline with the error while the broker refuses, then connected when it comes', async () => {
  const port = await closedPort();
  const seen: BusMessage[] = [];
  const h = await startHost(
    `modules:\n  rec: { provider: recorder, pattern: "${BRIDGE.state}" }\n${bridgeYaml({
      url: `mqtt://127.0.0.1:${port}`,
      client_id: uniqueId('err'),
      ...FAST,
    }).replace('modules:\n', '')}`,
    registry().register(recorderProvider(seen)),
  );
  let b: Awaited<ReturnType<typeof startTestBroker>> | undefined;
  try {
    const stats = await h.host.bus.request<BridgeStats>(BRIDGE.stats, {});
    assert.equal(stats.state, 'offline');
    assert.equal(stats.connects, 0);
    await until(() => seen.length >= 1, 5000, 'the offline event');
    const first = seen[0].payload as BridgeStateEvent;
    assert.equal(first.state, 'offline');
    assert.match(first.error ?? '', /ECONNREFUSED/);
    b = await startTestBroker(port);
    await until(() => seen.some((m) => (m.payload as BridgeStateEvent).state === 'connected'), 10_000, 'connected');
    assert.deepEqual(
      seen.map((m) => (m.payload as BridgeStateEvent).state),
      ['offline', 'connected'],
      'one event per change, not one per attempt',
    );
    assert.ok((await h.host.bus.request<BridgeStats>(BRIDGE.stats, {})).reconnects >= 1);
  } finally {
    await h.stop();
    await b?.close();
  }
});
