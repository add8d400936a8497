/**
 * The bridge hands uplinks to the bus only once the host is ready: here the one module consuming
 * them is made to start after the bridge (`depends_on`) and slowly, and the uplink queued in the
 * bridge's persistent session, delivered right after CONNACK, still reaches it.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { z } from 'zod';
import type { BusMessage } from '../../../core/bus.js';
import type { ModuleProvider } from '../../../core/module.js';
import type { UplinkEvent } from '../../../modules/mqtt-bridge/contract/topics.js';
import { buildData, TOPIC_MESSAGE_UP } from '../../../modules/shared/protocol.js';
import { startHost } from '../../helpers/host.js';
import { connectClient, startTestBroker } from '../../helpers/mqtt.js';
import { until } from '../../helpers/wait.js';
import { bridgeYaml, FAST, registry, uniqueId } from './fixtures.js';

/** Subscribes to every uplink only after `delay_ms` in its start, and records them. */
function lateRecorder(sink: BusMessage[], started: string[]): ModuleProvider<{ delay_ms: number }> {
  return {
    name: 'late-recorder',
    schema: z.object({ delay_ms: z.number().int() }).strict(),
    create: (ctx) => ({
      async start() {
        await new Promise((r) => setTimeout(r, ctx.config.delay_ms));
        ctx.bus.subscribe('hub/uplink/#', (_p, msg) => {
          sink.push(msg);
        });
        started.push(ctx.name);
      },
    }),
  };
}

test('an uplink queued while the hub was down waits for the host to be ready, even for a consumer started after the bridge', async () => {
  const broker = await startTestBroker();
  const settings = { url: broker.url, client_id: uniqueId('ready'), ...FAST };
  const sink: BusMessage[] = [];
  const started: string[] = [];
  const yaml = bridgeYaml(settings, '  late: { provider: late-recorder, delay_ms: 500, depends_on: [bridge] }\n');
  const reg = () => registry().register(lateRecorder(sink, started));
  try {
    // one run makes the persistent session and its subscription; the uplink then queues in it
    const h1 = await startHost(yaml, reg());
    await h1.stop();
    const agent = await connectClient(broker.url, { clientId: uniqueId('agent') });
    const msg = buildData('plant-r', 'heartbeat', { uptime_s: 3 });
    await agent.publishAsync(TOPIC_MESSAGE_UP, JSON.stringify(msg), { qos: 1 });
    await agent.endAsync();

    const h2 = await startHost(yaml, reg());
    try {
      assert.deepEqual(started, ['late', 'late']);
      await until(
        () => sink.some((m) => (m.payload as UplinkEvent).msg.message_id === msg.message_id),
        10_000,
        'the queued uplink to reach the module that started after the bridge',
      );
    } finally {
      await h2.stop();
    }
  } finally {
    await broker.close();
  }
});
