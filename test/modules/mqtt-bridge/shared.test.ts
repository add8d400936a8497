import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { BusMessage } from '../../../core/bus.js';
import type { UplinkEvent } from '../../../modules/mqtt-bridge/contract/topics.js';
import { buildData, TOPIC_MESSAGE_UP } from '../../../modules/shared/protocol.js';
import { startHost, type TestHost } from '../../helpers/host.js';
import { connectClient, MOSQUITTO_URL } from '../../helpers/mqtt.js';
import { until } from '../../helpers/wait.js';
import { bridgeYaml, FAST, forgetSessions, recorderProvider, registry, uniqueId } from './fixtures.js';

const ids = (sink: BusMessage[]) => sink.map((m) => (m.payload as UplinkEvent).msg.message_id);

test('two bridges in one shared_group split the uplink on Mosquitto: each message reaches exactly one', async () => {
  const group = uniqueId('group');
  const clientIds = [uniqueId('hub-a'), uniqueId('hub-b')];
  const sinks: BusMessage[][] = [[], []];
  const hosts: TestHost[] = [];
  try {
    for (let i = 0; i < 2; i++) {
      hosts.push(
        await startHost(
          bridgeYaml(
            { url: MOSQUITTO_URL, client_id: clientIds[i], shared_group: group, ...FAST },
            '  rec: { provider: recorder, pattern: "hub/uplink/#" }\n',
          ),
          registry().register(recorderProvider(sinks[i])),
        ),
      );
    }
    const agent = await connectClient(MOSQUITTO_URL, { clientId: uniqueId('agent') });
    const sent: string[] = [];
    try {
      for (let i = 0; i < 40; i++) {
        const m = buildData(uniqueId('p'), 'heartbeat', { uptime_s: i });
        sent.push(m.message_id);
        await agent.publishAsync(TOPIC_MESSAGE_UP, JSON.stringify(m), { qos: 1 });
      }
    } finally {
      await agent.endAsync();
    }
    // only ours: other tests' agents on this shared Mosquitto publish on the same uplink topics
    const all = () => [...ids(sinks[0]), ...ids(sinks[1])].filter((id) => sent.includes(id));
    await until(() => new Set(all()).size === sent.length, 10_000, 'every uplink at one of the hubs');
    assert.equal(all().length, sent.length, 'no message reached both hubs');
    assert.deepEqual([...all()].sort(), [...sent].sort());
    const share = sinks.map((sink) => ids(sink).filter((id) => sent.includes(id)).length);
    assert.ok(share[0] > 0 && share[1] > 0, `both hubs got a share: ${share[0]}/${share[1]}`);
  } finally {
    for (const h of hosts) await h.stop();
    await forgetSessions(MOSQUITTO_URL, clientIds);
  }
});
