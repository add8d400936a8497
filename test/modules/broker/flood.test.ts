import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import type { MqttClient } from 'mqtt';
import { until, withTimeout } from '../../helpers/wait.js';
import {
  A,
  B,
  type BrokerUnderTest,
  connectAgent,
  connectHub,
  end,
  publish,
  recorder,
  startBroker,
  subscribe,
  uplink,
} from './setup.js';

const UP_CMD = 'wdd/RDMC/command/up';
const UP_MSG = 'wdd/RDMC/message/up';
const FLOOD = 50_000;

/**
 * Publishes `n` QoS 0 messages as fast as the socket takes them. In windows of 500: mqtt.js slows
 * down quadratically with tens of thousands of writes queued at once (a drain listener each),
 * which would measure mqtt.js, not the broker.
 */
async function flood(c: MqttClient, topic: string, body: string, n: number): Promise<void> {
  const WINDOW = 500;
  for (let sent = 0; sent < n; sent += WINDOW) {
    const k = Math.min(WINDOW, n - sent);
    await new Promise<void>((resolve, reject) => {
      let written = 0;
      for (let i = 0; i < k; i++) {
        c.publish(topic, body, { qos: 0 }, (err) => {
          if (err) reject(err);
          else if (++written === k) resolve();
        });
      }
    });
  }
}

/**
 * The hub answers every `ping` uplink from project B on B's downlink; B measures nothing, it only
 * has to get its answer while the flood runs.
 */
function hubResponder(hub: MqttClient): void {
  hub.on('message', (topic, payload) => {
    if (topic !== UP_CMD) return;
    const msg = JSON.parse(payload.toString()) as { project_id: string; message_id: string };
    hub.publish(`wdd/RDMC/message/down/${msg.project_id}`, `pong:${msg.message_id}`, { qos: 1 });
  });
}

async function roundTrip(b: BrokerUnderTest): Promise<MqttClient> {
  const agentB = await connectAgent(b.url, B);
  await subscribe(agentB, [`wdd/RDMC/message/down/${B.id}`]);
  const pong = new Promise<string>((resolve) => agentB.once('message', (_t, p) => resolve(p.toString())));
  await publish(agentB, UP_CMD, uplink(B.id, 'ping-1'));
  assert.equal(await withTimeout(pong, 20_000, "B's round trip during the flood"), 'pong:ping-1');
  return agentB;
}

describe('broker under a flood', () => {
  test(`an agent flooding ${FLOOD} QoS 0 messages is shed by its rate limit; another agent's round trip completes`, async () => {
    const b = await startBroker({ rate_limit: { msgs_per_s: 1000, burst: 1000 } });
    let hub: MqttClient | undefined;
    let agentA: MqttClient | undefined;
    let agentB: MqttClient | undefined;
    try {
      hub = await connectHub(b);
      const seen = recorder(hub);
      hubResponder(hub);
      await subscribe(hub, [UP_MSG, UP_CMD]);
      agentA = await connectAgent(b.url, A);

      const flooding = flood(agentA, UP_MSG, uplink(A.id, 'flood'), FLOOD);
      agentB = await roundTrip(b);
      await withTimeout(flooding, 30_000, 'the flood to be written');

      // every publish is accounted for: admitted, shed by the rate limit, or denied
      const total = FLOOD + 2; // the flood, B's ping, the hub's pong
      await until(
        async () => {
          const s = await b.stats();
          return s.messages_in + s.shed_rate + s.denied_publish === total;
        },
        30_000,
        'the broker to have handled every publish',
      );
      const s = await b.stats();
      assert.ok(s.shed_rate > 0, 'the rate limit shed part of the flood');
      assert.equal(s.denied_publish, 0);
      // what was admitted from A reached the hub, except what the in-flight bound shed (counted)
      const admittedFromA = s.messages_in - 2;
      await until(
        () => seen.seen.filter((m) => m.marker === 'flood').length + s.shed_overload === admittedFromA,
        30_000,
        'the admitted flood to reach the hub',
      );
      assert.equal(s.shed, s.shed_rate + s.shed_overload);
      // still up and serving
      const again = await connectAgent(b.url, A);
      await end(again);
      assert.ok(agentA.connected, 'a QoS 0 flood costs messages, not the connection');
    } finally {
      await end(agentA, agentB, hub);
      await b.stop();
    }
  });

  test('an unthrottled flood (the hub credential) waits for delivery slots and sheds QoS 0 past max_waiting: counted, never a crash', async () => {
    const b = await startBroker({ max_inflight: 16, max_waiting: 64 });
    let hub: MqttClient | undefined;
    let flooder: MqttClient | undefined;
    let agentB: MqttClient | undefined;
    try {
      hub = await connectHub(b);
      const seen = recorder(hub);
      hubResponder(hub);
      await subscribe(hub, [UP_MSG, UP_CMD]);
      flooder = await connectHub(b);

      const flooding = flood(flooder, UP_MSG, uplink(A.id, 'flood'), FLOOD);
      agentB = await roundTrip(b);
      await withTimeout(flooding, 30_000, 'the flood to be written');

      await until(async () => (await b.stats()).messages_in === FLOOD + 2, 30_000, 'every publish to be admitted');
      await until(
        async () => seen.seen.filter((m) => m.marker === 'flood').length + (await b.stats()).shed_overload === FLOOD,
        30_000,
        'every flood message to be delivered or shed',
      );
      const s = await b.stats();
      assert.equal(s.shed_rate, 0, 'the hub is not rate limited');
      assert.equal(s.inflight, 0);
      assert.equal(s.waiting, 0);
    } finally {
      await end(flooder, agentB, hub);
      await b.stop();
    }
  });

  test('QoS 1 over the rate limit is never acknowledged: the connection closes and the rest is not delivered', async () => {
    const b = await startBroker({ rate_limit: { msgs_per_s: 1, burst: 5 } });
    let hub: MqttClient | undefined;
    let agentA: MqttClient | undefined;
    try {
      hub = await connectHub(b);
      const seen = recorder(hub);
      await subscribe(hub, [UP_MSG]);
      agentA = await connectAgent(b.url, A);
      const acked: number[] = [];
      const closed = new Promise<void>((r) => agentA!.once('close', () => r()));
      for (let i = 0; i < 20; i++) {
        agentA.publish(UP_MSG, uplink(A.id, `q1-${i}`), { qos: 1 }, (err) => {
          if (!err) acked.push(i);
        });
      }
      await withTimeout(closed, 10_000, 'the broker to close the flooding connection');
      const s = await b.stats();
      assert.ok(s.shed_rate >= 1);
      // nothing acknowledged is lost (the hub may hold more than the agent saw acknowledged: a
      // PUBACK still in the socket buffer dies with the connection, and the agent resends those)
      // the burst's start reaches the hub: its delivery may leave the broker after the close
      // (writes wait for the end of the broker's turn, modules/shared/write-hold.ts)
      await until(() => seen.seen.length >= 5, 5000, 'the burst within the limit at the hub');
      await until(
        () => acked.every((i) => seen.seen.some((m) => m.marker === `q1-${i}`)),
        5000,
        'every acknowledged message at the hub',
      );
      const got = seen.seen.map((m) => m.marker);
      assert.ok(got.length >= 5 && got.length < 20, `the hub got ${got.length}`);
      assert.deepEqual(
        got,
        got.map((_, i) => `q1-${i}`),
        'what got through is the start of the burst, in order',
      );
    } finally {
      await end(agentA, hub);
      await b.stop();
    }
  });
});
