import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import type { BusMessage } from '../../../core/bus.js';
import {
  BRIDGE,
  type BridgeRejectedEvent,
  type BridgeStateEvent,
  type UplinkEvent,
} from '../../../modules/mqtt-bridge/contract/topics.js';
import { buildData, TOPIC_MESSAGE_UP } from '../../../modules/shared/protocol.js';
import { startHost } from '../../helpers/host.js';
import { connectClient, startTestBroker } from '../../helpers/mqtt.js';
import { until } from '../../helpers/wait.js';
import { BROKERS, bridgeYaml, FAST, recorderProvider, registry, uniqueId } from './fixtures.js';

/** config.yml: a recorder of `pattern` first (so it hears the bridge's first events), then the bridge. */
function withRecorder(pattern: string, settings: Record<string, unknown>): string {
  return bridgeYaml(settings, '', `  rec: { provider: recorder, pattern: "${pattern}" }\n`);
}

const ids = (sink: BusMessage[]) => sink.map((m) => (m.payload as UplinkEvent).msg.message_id);

const cases: Array<{ broker: (typeof BROKERS)[number]; protocol_version: 4 | 5 }> = [
  { broker: BROKERS[0], protocol_version: 4 },
  { broker: BROKERS[1], protocol_version: 4 },
  { broker: BROKERS[1], protocol_version: 5 },
];

for (const { broker, protocol_version } of cases) {
  describe(`persistent session on ${broker.name}, MQTT ${protocol_version === 4 ? '3.1.1' : '5'}`, () => {
    test('an uplink published while the hub is down arrives when it starts again with the same client id', async () => {
      const b = await broker.open();
      const clientId = uniqueId('sess');
      const settings = { url: b.url, client_id: clientId, protocol_version, ...FAST };
      const sink: BusMessage[] = [];
      const reg = () => registry().register(recorderProvider(sink));
      try {
        const h1 = await startHost(withRecorder('hub/uplink/#', settings), reg());
        await h1.stop();
        const agent = await connectClient(b.url, { clientId: uniqueId('agent') });
        const msg = buildData('plant-s', 'heartbeat', { uptime_s: 9 });
        await agent.publishAsync(TOPIC_MESSAGE_UP, JSON.stringify(msg), { qos: 1 });
        await agent.endAsync();
        assert.equal(ids(sink).includes(msg.message_id), false);
        const h2 = await startHost(withRecorder('hub/uplink/#', settings), reg());
        try {
          await until(() => ids(sink).includes(msg.message_id), 10_000, 'the uplink queued in the session');
          // the session may also have queued other tests' uplinks (a shared Mosquitto): look at ours
          const ours = sink.find((m) => (m.payload as UplinkEvent).msg.message_id === msg.message_id)!;
          assert.equal(ours.topic, BRIDGE.uplink('plant-s', 'data', 'heartbeat'));
        } finally {
          await h2.stop();
        }
      } finally {
        await b.done([clientId]);
      }
    });
  });
}

test('no uplink is lost while the bridge module restarts under load', async () => {
  const b = await startTestBroker();
  // aedes' own session queues closed the bridge's connection over a resend no longer due, again
  // and again while uplinks came in (modules/broker/outgoing-index.ts); the test broker has ours
  const brokerErrors: string[] = [];
  b.aedes.on('clientError', (_c, err) => brokerErrors.push(err.message));
  const sink: BusMessage[] = [];
  const h = await startHost(
    withRecorder('hub/uplink/#', { url: b.url, client_id: uniqueId('rs'), ...FAST }),
    registry().register(recorderProvider(sink)),
  );
  // refusals from every bridge instance of the run: a failure says whether an uplink was refused or never came
  const refused: BridgeRejectedEvent[] = [];
  h.host.bus.mailbox(uniqueId('refusals')).subscribe(BRIDGE.rejected, (_p, m) => {
    refused.push(m.payload as BridgeRejectedEvent);
  });
  const agent = await connectClient(b.url, { clientId: uniqueId('agent') });
  try {
    const sent: string[] = [];
    const publishing = (async () => {
      for (let i = 0; i < 300; i++) {
        const m = buildData('plant-r', 'heartbeat', { uptime_s: i });
        sent.push(m.message_id);
        await agent.publishAsync(TOPIC_MESSAGE_UP, JSON.stringify(m), { qos: 1 });
      }
    })();
    for (let i = 0; i < 5; i++) await h.host.restartModule('bridge');
    await publishing;
    // QoS 1 is at least once: a message in flight at a restart may come twice, never not at all
    try {
      await until(() => new Set(ids(sink)).size === sent.length, 10_000, 'every uplink');
    } catch (err) {
      const got = new Set(ids(sink));
      const missing = sent.flatMap((id, i) => (got.has(id) ? [] : [i]));
      const stats = await h.host.bus.request(BRIDGE.stats, {}, { timeoutMs: 2000 }).catch((e: Error) => e.message);
      throw new Error(
        `${(err as Error).message}: ${missing.length} of ${sent.length} never came (indices ${missing.slice(0, 20).join(', ')}); ` +
          `${sink.length} delivered; refused ${JSON.stringify(refused.slice(0, 5))}; the last bridge's stats ${JSON.stringify(stats)}`,
      );
    }
    assert.deepEqual([...new Set(ids(sink))].sort(), [...sent].sort());
    assert.deepEqual(
      brokerErrors.filter((e) => e !== 'connection closed'),
      [],
      'the broker never failed the bridge',
    );
  } finally {
    await agent.endAsync();
    await h.stop();
    await b.close();
  }
});

test('reconnects after the broker goes away and comes back on the same port', async () => {
  const b1 = await startTestBroker();
  const port = b1.port;
  const seen: BusMessage[] = [];
  const h = await startHost(
    withRecorder(BRIDGE.state, { url: b1.url, client_id: uniqueId('rc'), ...FAST }),
    registry().register(recorderProvider(seen)),
  );
  const states = () => seen.map((m) => (m.payload as BridgeStateEvent).state);
  let b2: Awaited<ReturnType<typeof startTestBroker>> | undefined;
  let b1Open = true;
  try {
    await until(() => states().length === 1, 5000, 'the first state event');
    assert.deepEqual(states(), ['connected']);
    b1Open = false;
    await b1.close();
    await until(() => states().includes('disconnected'), 5000, 'disconnected');
    b2 = await startTestBroker(port);
    await until(() => states().at(-1) === 'connected' && states().length > 1, 10_000, 'connected again');
    const s = states();
    assert.equal(s[1], 'disconnected');
    assert.equal(s[2], 'reconnecting');
    assert.ok(
      s.slice(3, -1).every((x) => x === 'offline'),
      `between reconnecting and connected only offline: ${s.join(' → ')}`,
    );
    // the new broker knows nothing of us: the bridge subscribed again
    const sink: BusMessage[] = [];
    h.host.bus.mailbox(uniqueId('probe')).subscribe('hub/uplink/#', (_p, m) => {
      sink.push(m);
    });
    const agent = await connectClient(b2.url, { clientId: uniqueId('agent') });
    const msg = buildData('plant-rc', 'heartbeat', {});
    await agent.publishAsync(TOPIC_MESSAGE_UP, JSON.stringify(msg), { qos: 1 });
    await agent.endAsync();
    await until(() => ids(sink).includes(msg.message_id), 5000, 'an uplink through the new broker');
  } finally {
    await h.stop();
    if (b1Open) await b1.close();
    await b2?.close();
  }
});
