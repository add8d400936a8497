/**
 * The MQTT session both the agent and the bridge use, against a real broker (aedes on a free
 * loopback port, restarted on the same port where a test needs the broker to come back).
 */
import assert from 'node:assert/strict';
import { afterEach, describe, test } from 'node:test';
import { silentLogger } from '../../../core/log.js';
import type { ModuleTimers } from '../../../core/module.js';
import { backoffDelay, MqttSession, type MqttSessionOptions } from '../../../modules/shared/mqtt-session.js';
import { brokerAddress, redactUrl } from '../../../modules/shared/mqtt-session-socket.js';
import { connectClient, startTestBroker, type TestBroker } from '../../helpers/mqtt.js';
import { until } from '../../helpers/wait.js';

const timers: ModuleTimers = {
  setTimeout: (fn, ms) => setTimeout(fn, ms),
  setInterval: (fn, ms) => setInterval(fn, ms),
  clear: (t) => clearTimeout(t),
};

class Offline extends Error {}

/** A session with a log of what it reported; `delays` holds every reconnect wait it scheduled. */
function session(url: string, over: Partial<MqttSessionOptions> = {}) {
  const events: string[] = [];
  const messages: string[] = [];
  const delays: number[] = [];
  const s = new MqttSession({
    url,
    client: { clientId: `sess-${Math.random().toString(36).slice(2)}`, clean: true, connectTimeout: 2000 },
    subscriptions: ['t/#'],
    requireSubscriptions: true,
    backoff: { minMs: 20, maxMs: 80, jitter: 'full', stableMs: 0 },
    offlineError: (m) => new Offline(m),
    log: silentLogger(),
    timers: {
      ...timers,
      setTimeout: (fn, ms) => {
        delays.push(ms);
        return setTimeout(fn, ms);
      },
    },
    now: () => Date.now(),
    onUp: () => events.push('up'),
    onDown: (_reason, wasUp) => events.push(wasUp ? 'down' : 'failed'),
    onMessage: (topic, payload) => messages.push(`${topic} ${payload.toString()}`),
    ...over,
  });
  return { s, events, messages, delays };
}

const open: Array<{ end(ms: number): Promise<void> } | TestBroker> = [];
afterEach(async () => {
  for (const o of open.splice(0).reverse()) await ('aedes' in o ? o.close() : o.end(0));
});

describe('backoff', () => {
  // full jitter: test/modules/agent/parts.test.ts
  test('equal jitter keeps half the cap and never goes under the minimum', () => {
    const cases: Array<[attempt: number, random: number, ms: number]> = [
      [0, 0, 500],
      [3, 0, 2000],
      [3, 1, 4000],
      [50, 1, 30_000],
    ];
    for (const [attempt, random, ms] of cases)
      assert.equal(
        backoffDelay(attempt, 500, 30_000, () => random, 'equal'),
        ms,
      );
  });

  test('with no broker the attempts go on, every wait within the cap', async () => {
    const b = await startTestBroker();
    const url = b.url;
    await b.close();
    const { s, events, delays } = session(url, { backoff: { minMs: 5, maxMs: 40, jitter: 'equal', stableMs: 0 } });
    open.push(s);
    s.start();
    await until(() => events.filter((e) => e === 'failed').length >= 8, 10_000, 'eight failed attempts');
    assert.ok(delays.length >= 7);
    for (const d of delays) assert.ok(d >= 5 && d <= 40, `delay ${d} within [5, 40]`);
    assert.ok(
      delays.slice(4).every((d) => d >= 20),
      'the cap reached after a few attempts',
    );
  });
});

describe('MqttSession against a real broker', () => {
  test('reconnects after the broker restarts, and its subscriptions are made again', async () => {
    let b = await startTestBroker();
    open.push(b);
    const port = b.port;
    const { s, events, messages } = session(b.url);
    open.push(s);
    s.start();
    await until(() => s.up, 5000, 'up');
    const pub = await connectClient(b.url);
    await pub.publishAsync('t/1', 'before', { qos: 1 });
    await pub.endAsync();
    await until(() => messages.includes('t/1 before'), 5000, 'first message');

    await b.close();
    await until(() => events.includes('down'), 5000, 'down');
    assert.equal(s.up, false);
    // a new broker knows no session: only the session's own SUBSCRIBE brings the messages back
    b = await startTestBroker(port);
    open.push(b);
    await until(() => events.filter((e) => e === 'up').length === 2, 10_000, 'up again');
    const pub2 = await connectClient(b.url);
    await pub2.publishAsync('t/2', 'after', { qos: 1 });
    await pub2.endAsync();
    await until(() => messages.includes('t/2 after'), 5000, 'message after the restart');
  });

  test('a publish waiting for its PUBACK fails when the connection closes, and is not sent again', async () => {
    let b = await startTestBroker();
    open.push(b);
    const port = b.port;
    // this broker never acknowledges a publish on held/#
    b.aedes.authorizePublish = (_client, packet, cb) => {
      if (!packet.topic.startsWith('held/')) cb(null);
    };
    const { s, events } = session(b.url, { client: { clientId: 'sess-pending', clean: false } });
    open.push(s);
    s.start();
    await until(() => s.up, 5000, 'up');
    const p = s.publish('held/1', 'x');
    const outcome = p.then(
      () => 'resolved',
      (err) => err,
    );
    await new Promise((r) => setTimeout(r, 100));
    await b.close();
    const err = await outcome;
    assert.ok(err instanceof Offline, `rejected offline, got ${String(err)}`);
    assert.equal(Object.keys(s.client.outgoing).length, 0, 'no longer in mqtt.js outgoing');

    b = await startTestBroker(port);
    open.push(b);
    const seen: string[] = [];
    b.aedes.on('publish', (packet, client) => {
      if (client) seen.push(packet.topic);
    });
    await until(() => events.filter((e) => e === 'up').length === 2, 10_000, 'up again');
    await s.publish('t/ok', 'y');
    await until(() => seen.includes('t/ok'), 5000, 'the new publish at the broker');
    await new Promise((r) => setTimeout(r, 100));
    assert.deepEqual(seen, ['t/ok'], 'the failed publish is not resent behind the caller');
  });

  test('publishing while down is refused at once', async () => {
    const b = await startTestBroker();
    const url = b.url;
    await b.close();
    const { s } = session(url);
    open.push(s);
    s.start();
    await assert.rejects(s.publish('t/x', 'x'), Offline);
  });

  test('a refused required subscription drops the connection and tries again; an optional one stays up', async () => {
    const b = await startTestBroker();
    open.push(b);
    let subscribes = 0;
    b.aedes.authorizeSubscribe = (_client, _sub, cb) => {
      subscribes++;
      cb(null, null); // SUBACK 0x80: refused, the connection stays
    };
    const required = session(b.url);
    open.push(required.s);
    required.s.start();
    await until(() => subscribes >= 3, 10_000, 'three subscription attempts');
    assert.equal(required.events.includes('up'), false, 'never up without its subscription');

    const optional = session(b.url, { requireSubscriptions: false });
    open.push(optional.s);
    optional.s.start();
    await until(() => optional.s.up, 5000, 'up at the CONNACK');
    await new Promise((r) => setTimeout(r, 200));
    assert.equal(optional.s.up, true);
    assert.deepEqual(optional.events, ['up']);
  });

  test('end() disconnects politely, is safe twice, and no attempt follows', async () => {
    const b = await startTestBroker();
    open.push(b);
    const { s, events } = session(b.url);
    s.start();
    await until(() => s.up, 5000, 'up');
    await s.end(1000);
    await s.end(1000);
    assert.equal(s.up, false);
    await new Promise((r) => setTimeout(r, 200));
    assert.deepEqual(events, ['up']);
    assert.equal(b.aedes.connectedClients, 0);
  });
});

test('the PUBACKs of the messages one read brings in leave in a few writes, not one each', async () => {
  const b = await startTestBroker();
  open.push(b);
  const N = 300;
  const { s, messages } = session(b.url);
  open.push(s);
  s.start();
  await until(() => s.up, 5000, 'up');
  const sock = s.client.stream as unknown as {
    pause(): void;
    resume(): void;
    _write: (...a: unknown[]) => void;
    _writev?: (...a: unknown[]) => void;
  };
  let writes = 0;
  const write = sock._write.bind(sock);
  sock._write = (...a) => {
    writes++;
    write(...a);
  };
  const writev = sock._writev?.bind(sock);
  if (writev)
    sock._writev = (...a) => {
      writes++;
      writev(...a);
    };
  // the burst waits in the socket while it is not read: one read then brings many messages
  sock.pause();
  const pub = await connectClient(b.url);
  await Promise.all(Array.from({ length: N }, (_, i) => pub.publishAsync(`t/burst`, String(i), { qos: 1 })));
  await new Promise((r) => setTimeout(r, 200));
  sock.resume();
  await until(() => messages.length === N, 10_000, `${N} messages`);
  await until(() => writes > 0, 5000, 'acks written');
  await new Promise((r) => setTimeout(r, 200)); // the last turn's hold released
  pub.end(true);
  // one write per packet before (mqtt.js handles each packet in its own tick; mqtt-packet uncorks each)
  assert.ok(writes <= N / 10, `${writes} writes for ${N} PUBACKs`);
});

test('addresses and logged URLs carry no credentials', () => {
  assert.equal(redactUrl('mqtt://user:pw@host:1883'), 'mqtt://host:1883');
  assert.deepEqual(brokerAddress('mqtts://u:p@[::1]'), {
    scheme: 'mqtts',
    host: '::1',
    port: 8883,
    tls: true,
    websocket: false,
  });
  assert.equal(brokerAddress('ws://h/mqtt').websocket, true);
});

describe("mqtt.js's packet log", () => {
  test('is not called per packet unless DEBUG asks for it', async () => {
    const saved = process.env.DEBUG;
    try {
      delete process.env.DEBUG;
      const quiet = session('mqtt://127.0.0.1:1').s;
      // mqtt.js's own logger is a `debug` instance with a namespace; ours is a function that does nothing
      assert.equal((quiet.client as unknown as { log: { namespace?: string } }).log.namespace, undefined);
      process.env.DEBUG = 'mqttjs*';
      const loud = session('mqtt://127.0.0.1:1').s;
      assert.equal((loud.client as unknown as { log: { namespace?: string } }).log.namespace, 'mqttjs:client');
      // a caller's own logger is kept
      const own = (): void => {};
      const mine = session('mqtt://127.0.0.1:1', { client: { log: own } }).s;
      assert.equal((mine.client as unknown as { log: unknown }).log, own);
    } finally {
      if (saved === undefined) delete process.env.DEBUG;
      else process.env.DEBUG = saved;
    }
  });
});
