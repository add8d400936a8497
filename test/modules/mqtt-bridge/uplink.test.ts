import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { z } from 'zod';
import type { ModuleProvider } from '../../../core/module.js';
import {
  BRIDGE,
  type BridgeRejectedEvent,
  type BridgeStats,
  type UplinkEvent,
} from '../../../modules/mqtt-bridge/contract/topics.js';
import { provider as bridgeProvider } from '../../../modules/mqtt-bridge/index.js';
import {
  buildCommand,
  buildData,
  newMessageId,
  TOPIC_COMMAND_UP,
  TOPIC_MESSAGE_UP,
} from '../../../modules/shared/protocol.js';
import { startHost, type TestHost } from '../../helpers/host.js';
import { connectClient } from '../../helpers/mqtt.js';
import { deferred, until } from '../../helpers/wait.js';
import { BROKERS, bridgeYaml, FAST, heartbeat, probe, registry, uniqueId } from './fixtures.js';

for (const broker of BROKERS) {
  describe(`uplink on ${broker.name}`, () => {
    let b: Awaited<ReturnType<(typeof broker)['open']>>;
    let h: TestHost;
    const clientId = uniqueId('uplink');
    before(async () => {
      b = await broker.open();
      h = await startHost(
        bridgeYaml({ url: b.url, client_id: clientId, max_message_bytes: 4096, ...FAST }),
        registry(),
      );
    });
    after(async () => {
      await h?.stop();
      await b?.done([clientId]);
    });

    test('a valid uplink from an agent reaches the bus as an UplinkEvent on its topic', async () => {
      const uplinks = probe<UplinkEvent>(h.host.bus, 'hub/uplink/#');
      const agent = await connectClient(b.url, { clientId: uniqueId('agent') });
      try {
        const hb = buildData('plant-1', 'heartbeat', { uptime_s: 3, metrics: { cpu: 0.1 } });
        const reg = buildCommand(
          'plant-1',
          'register',
          {
            node_name: 'n',
            instance_id: 'n-h-1',
            version: '1',
            pid: 1,
            start_time: Date.now(),
            capabilities: [],
            metadata: {},
            node_version: 'v20',
          },
          'secret',
        );
        const before = Date.now();
        await agent.publishAsync(TOPIC_MESSAGE_UP, JSON.stringify(hb), { qos: 1 });
        await agent.publishAsync(TOPIC_COMMAND_UP, JSON.stringify(reg), { qos: 1 });
        const got = await uplinks.next(
          (m) => m.topic === BRIDGE.uplink('plant-1', 'command', 'register'),
          5000,
          'register uplink',
        );
        const data = uplinks.events.find((m) => m.topic === BRIDGE.uplink('plant-1', 'data', 'heartbeat'));
        assert.ok(data, 'heartbeat arrived first (same connection, QoS 1, in order)');
        assert.equal(data.payload.topic, TOPIC_MESSAGE_UP);
        assert.equal(data.payload.msg.message_id, hb.message_id);
        assert.deepEqual((data.payload.msg.payload as { metrics: unknown }).metrics, { cpu: 0.1 });
        assert.ok(data.payload.received_at >= before);
        assert.equal(got.payload.topic, TOPIC_COMMAND_UP);
        assert.equal(got.payload.msg.message_id, reg.message_id);
        assert.equal((got.payload.msg as { signature: string }).signature, reg.signature);
      } finally {
        await agent.endAsync();
      }
    });

    test('each kind of invalid uplink is counted and reported, and the next valid one still arrives', async () => {
      const rejected = probe<BridgeRejectedEvent>(h.host.bus, BRIDGE.rejected);
      const uplinks = probe<UplinkEvent>(h.host.bus, 'hub/uplink/+/data/heartbeat');
      const before = await h.host.bus.request<BridgeStats>(BRIDGE.stats, {});
      const agent = await connectClient(b.url, { clientId: uniqueId('agent') });
      const valid = buildData('plant-2', 'heartbeat', { uptime_s: 1 });
      const cases: Array<[string, string, string]> = [
        ['PROTO_ERR_JSON', TOPIC_MESSAGE_UP, '{"message_id": '],
        ['PROTO_ERR_TOO_LARGE', TOPIC_MESSAGE_UP, JSON.stringify({ ...valid, pad: 'x'.repeat(5000) })],
        ['PROTO_ERR_SCHEMA', TOPIC_MESSAGE_UP, JSON.stringify({ ...valid, payload: { uptime_s: 'long' } })],
        ['PROTO_ERR_SCHEMA', TOPIC_MESSAGE_UP, JSON.stringify({ ...valid, timestamp: 'now' })],
        ['PROTO_ERR_UNKNOWN_TYPE', TOPIC_MESSAGE_UP, JSON.stringify({ ...valid, data_type: 'teleport' })],
        ['PROTO_ERR_PROJECT_ID', TOPIC_MESSAGE_UP, JSON.stringify({ ...valid, project_id: 'a/b' })],
        ['PROTO_ERR_SCHEMA', TOPIC_COMMAND_UP, JSON.stringify(valid)],
      ];
      try {
        for (const [, topic, text] of cases) await agent.publishAsync(topic, text, { qos: 1 });
        const last = { ...valid, message_id: newMessageId() };
        await agent.publishAsync(TOPIC_MESSAGE_UP, JSON.stringify(last), { qos: 1 });
        await uplinks.next((m) => m.payload.msg.message_id === last.message_id, 5000, 'the valid uplink');
        await until(() => rejected.events.length === cases.length, 5000, 'every rejection event');
        assert.deepEqual(
          rejected.payloads().map((e) => e.code),
          cases.map(([code]) => code),
        );
        for (const e of rejected.payloads()) {
          assert.ok(e.reason.length > 0);
          assert.ok(!e.reason.includes('xxxxxxxx'), 'the payload is not repeated');
        }
        assert.match(rejected.payloads()[2].reason, /payload\.uptime_s/);
        const stats = await h.host.bus.request<BridgeStats>(BRIDGE.stats, {});
        const delta = (code: string) => (stats.rejected_by_code[code] ?? 0) - (before.rejected_by_code[code] ?? 0);
        assert.equal(delta('PROTO_ERR_JSON'), 1);
        assert.equal(delta('PROTO_ERR_TOO_LARGE'), 1);
        assert.equal(delta('PROTO_ERR_SCHEMA'), 3);
        assert.equal(delta('PROTO_ERR_UNKNOWN_TYPE'), 1);
        assert.equal(delta('PROTO_ERR_PROJECT_ID'), 1);
        assert.equal(stats.received - before.received, 1);
        assert.equal(stats.state, 'connected');
        assert.equal(stats.client_id, clientId);
      } finally {
        await agent.endAsync();
      }
    });
  });
}

/** A module whose handler holds every uplink until the test opens the gate. */
function gatedSink(gate: Promise<void>, seen: string[]): ModuleProvider<Record<string, never>> {
  return {
    name: 'gated-sink',
    schema: z.object({}).strict(),
    create: (ctx) => ({
      start() {
        ctx.bus.subscribe<UplinkEvent>('hub/uplink/#', async (ev) => {
          seen.push(ev.msg.message_id);
          await gate;
        });
      },
    }),
  };
}

test('an uplink is acknowledged to the broker only once the bus has taken it (backpressure)', async () => {
  const gate = deferred();
  const seen: string[] = [];
  const b = await BROKERS[0].open();
  const bridgeId = uniqueId('bp');
  // PUBACKs the bridge sends to the broker (the agent's own PUBACK comes from the broker)
  const acked: string[] = [];
  b.broker!.aedes.on('ack', (packet, client) => {
    if (client?.id === bridgeId && packet && 'payload' in packet) acked.push(String(packet.payload));
  });
  const reg = registry().register(gatedSink(gate.promise, seen));
  const h = await startHost(
    bridgeYaml(
      { url: b.url, client_id: bridgeId, ...FAST },
      '  sink:\n    provider: gated-sink\n    mailbox: { capacity: 1, overflow: block, block_timeout_ms: 60000 }\n',
    ),
    reg,
  );
  const agent = await connectClient(b.url, { clientId: uniqueId('agent') });
  try {
    const msgs = [1, 2, 3].map(() => heartbeat('plant-bp'));
    for (const m of msgs) await agent.publishAsync(TOPIC_MESSAGE_UP, m, { qos: 1 });
    const stats = () => h.host.bus.request<BridgeStats>(BRIDGE.stats, {});
    // 1st is in the stuck handler, 2nd fills the mailbox: both taken by the bus, so both acked
    await until(() => acked.length === 2, 5000, 'the bridge to ack the first two');
    // the bridge has handed the third to the bus, which holds it (the mailbox is full)
    await until(async () => (await stats()).received === 3, 5000, 'the third uplink offered to the bus');
    assert.ok(h.host.bus.stats().mailboxes.find((m) => m.name === 'sink')!.blocked >= 1);
    assert.deepEqual(acked, msgs.slice(0, 2), 'no PUBACK for the uplink the bus has not taken');
    gate.resolve();
    await until(() => acked.length === 3, 5000, 'the third PUBACK once there is room');
    assert.deepEqual(acked, msgs);
    await until(() => seen.length === 3, 5000, 'all three handled');
    assert.equal((await stats()).dropped_by_bus, 0);
  } finally {
    gate.resolve();
    await agent.endAsync();
    await h.stop();
    await b.done();
  }
});

test('the provider is registered as mqtt-bridge and its schema fills the defaults', () => {
  assert.equal(bridgeProvider.name, 'mqtt-bridge');
  const cfg = bridgeProvider.schema.parse({ url: 'mqtt://127.0.0.1:1883' });
  assert.match(cfg.client_id, /^gmq-hub-/);
  assert.equal(cfg.clean_session, false);
  assert.equal(cfg.keepalive_s, 30);
  assert.equal(cfg.reconnect_min_ms, 500);
  assert.equal(cfg.reconnect_max_ms, 10000);
  assert.equal(cfg.max_message_bytes, 262144);
  assert.equal(cfg.publish_timeout_ms, 10000);
  assert.equal(cfg.connect_timeout_ms, 10000);
  assert.equal(bridgeProvider.schema.safeParse({}).success, false, 'url is required');
  assert.equal(bridgeProvider.schema.safeParse({ url: 'http://x' }).success, false);
  assert.equal(bridgeProvider.schema.safeParse({ url: 'mqtt://x', colour: 1 }).success, false, 'strict');
  assert.equal(bridgeProvider.schema.safeParse({ url: 'mqtt://x', shared_group: 'a/b' }).success, false);
  assert.equal(
    bridgeProvider.schema.safeParse({ url: 'mqtt://x', reconnect_min_ms: 100, reconnect_max_ms: 50 }).success,
    false,
  );
});

test('state events: the bridge reports connected after start', async () => {
  const b = await BROKERS[0].open();
  const h = await startHost(bridgeYaml({ url: b.url, client_id: uniqueId('st'), ...FAST }), registry());
  try {
    const stats = await h.host.bus.request<BridgeStats>(BRIDGE.stats, {});
    assert.equal(stats.state, 'connected');
    assert.ok(stats.connected_since !== null);
    assert.equal(stats.connects, 1);
    assert.equal(stats.broker, `mqtt://127.0.0.1:${b.broker!.port}`);
  } finally {
    await h.stop();
    await b.done();
  }
});
