/**
 * modules/broker/topic-matcher.ts: the embedded broker's live subscriptions must answer as
 * mqemitter's own qlobber trie does, operation by operation, whatever sequence of adds (exact
 * filters and wildcards, one handler added twice, several handlers on one filter) and removes (one
 * handler, a handler not there, all of a filter's): each published topic gets the same handlers
 * as a multiset (the order in which different subscribers are told is not a contract). Then the
 * same on a real aedes broker with real MQTT clients: exact and wildcard subscribers get what they
 * subscribed to, and a client gone leaves no handler behind.
 */
import assert from 'node:assert/strict';
import { createRequire } from 'node:module';
import net from 'node:net';
import { describe, it, test } from 'node:test';
import { Aedes } from 'aedes';
import fc from 'fast-check';
import mqtt, { type MqttClient } from 'mqtt';
import { sessionQueues } from '../../../modules/broker/outgoing-index.js';
import {
  ExactFirstMatcher,
  exactFirstTopics,
  type Handler,
  type TopicMatcher,
} from '../../../modules/broker/topic-matcher.js';
import { scaled, until, withTimeout } from '../../helpers/wait.js';

// qlobber as aedes' mqemitter loads it, with mqemitter's options
const requireFromMq = createRequire(createRequire(import.meta.url).resolve('mqemitter'));
const { Qlobber } = requireFromMq('qlobber') as { Qlobber: new (o: object) => TopicMatcher };
const qlobber = () => new Qlobber({ match_empty_levels: true, separator: '/', wildcard_one: '+', wildcard_some: '#' });

const FILTERS = [
  'wdd/RDMC/command/down/a',
  'wdd/RDMC/command/down/b',
  'wdd/RDMC/message/up/a',
  'wdd/RDMC/+/up/+',
  'wdd/RDMC/message/up/#',
  'wdd/#',
  '#',
  'wdd',
  'x/+/+',
  'wdd/RDMC/command/down/a+',
  'a//b',
  'a/+/b',
];
const TOPICS = [
  'wdd/RDMC/command/down/a',
  'wdd/RDMC/command/down/b',
  'wdd/RDMC/message/up/a',
  'wdd',
  'wdd/RDMC',
  'x/y/z',
  'wdd/RDMC/command/down/a+',
  'a//b',
  'other',
];
const handlers: Record<string, Handler> = {};
for (const name of ['h1', 'h2', 'h3']) handlers[name] = Object.defineProperty(() => name, 'name', { value: name });
const filter = fc.constantFrom(...FILTERS);
const handler = fc.constantFrom('h1', 'h2', 'h3');
const op = fc.oneof(
  { weight: 4, arbitrary: fc.record({ kind: fc.constant('add' as const), filter, handler }) },
  { weight: 2, arbitrary: fc.record({ kind: fc.constant('remove' as const), filter, handler }) },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant('removeAll' as const), filter }) },
);

/** Every topic's handlers, by name, sorted: what a publish on it would reach. */
function observe(m: TopicMatcher): Record<string, string[]> {
  const out: Record<string, string[]> = {};
  for (const t of TOPICS)
    out[t] = m
      .match(t)
      .map((h) => h.name)
      .sort();
  return out;
}

function apply(m: TopicMatcher, o: { kind: string; filter: string; handler?: string }): void {
  if (o.kind === 'add') m.add(o.filter, handlers[o.handler as string]);
  else if (o.kind === 'remove') m.remove(o.filter, handlers[o.handler as string]);
  else m.remove(o.filter);
}

test('live subscriptions answer as qlobber does, operation by operation', () => {
  fc.assert(
    fc.property(
      // `before`: what the trie held when the matcher was put in front of it (aedes' own $SYS ones, any other)
      fc.array(op, { maxLength: 6 }),
      fc.array(op, { maxLength: 30 }),
      (before, ops) => {
        const original = qlobber();
        const trie = qlobber();
        for (const o of before) {
          apply(original, o);
          apply(trie, o);
        }
        const lean = new ExactFirstMatcher(trie);
        for (const o of ops) {
          apply(original, o);
          apply(lean, o);
          assert.deepEqual(observe(lean), observe(original), JSON.stringify(o));
        }
      },
    ),
    { numRuns: 500 },
  );
});

test("an answer never becomes part of the matcher: a caller's array is its own or the trie's, never added to", () => {
  const lean = new ExactFirstMatcher(qlobber());
  lean.add('wdd/RDMC/+/up/+', handlers.h1);
  lean.add('wdd/RDMC/message/up/a', handlers.h2);
  const first = lean.match('wdd/RDMC/message/up/a');
  assert.deepEqual(first.map((h) => h.name).sort(), ['h1', 'h2']);
  // the wildcard's own list is untouched by the exact filter's handler
  assert.deepEqual(
    lean.match('wdd/RDMC/message/up/b').map((h) => h.name),
    ['h1'],
  );
  assert.deepEqual(
    lean
      .match('wdd/RDMC/message/up/a')
      .map((h) => h.name)
      .sort(),
    ['h1', 'h2'],
  );
});

describe('on a real aedes broker', () => {
  it('delivers to exact and wildcard subscribers, and a client gone leaves no handler', async () => {
    const aedes = await Aedes.createBroker({ ...sessionQueues() });
    const mq = (aedes as unknown as { mq: { _matcher: unknown } }).mq;
    assert.equal(exactFirstTopics(mq), true, "the installed mqemitter's matcher can be stood in front of");
    const matcher = mq._matcher as ExactFirstMatcher;
    const server = net.createServer((socket) => aedes.handle(socket));
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const url = `mqtt://127.0.0.1:${(server.address() as net.AddressInfo).port}`;
    const peers: MqttClient[] = [];
    const connect = async (id: string, topics: string[]) => {
      const peer = mqtt.connect(url, { clientId: id, reconnectPeriod: 0 });
      peers.push(peer);
      await withTimeout(new Promise<void>((r) => peer.once('connect', () => r())), scaled(5000), `${id} connected`);
      if (topics.length > 0) await peer.subscribeAsync(topics, { qos: 1 });
      const got: string[] = [];
      peer.on('message', (topic, payload) => got.push(`${topic} ${payload}`));
      return { peer, got };
    };
    try {
      const a = await connect('agent-a', ['wdd/RDMC/command/down/a', 'wdd/RDMC/message/down/a']);
      const b = await connect('agent-b', ['wdd/RDMC/command/down/b', 'wdd/RDMC/message/down/b']);
      const bridge = await connect('bridge', ['wdd/RDMC/+/down/#']);
      assert.equal(matcher.exactFilters, 4, "the agents' filters are in the map, not the trie");
      const hub = await connect('hub', []);
      await hub.peer.publishAsync('wdd/RDMC/command/down/a', 'one', { qos: 1 });
      await hub.peer.publishAsync('wdd/RDMC/message/down/b', 'two', { qos: 1 });
      await until(() => bridge.got.length === 2, scaled(5000), 'the wildcard subscriber has both');
      await until(() => a.got.length === 1 && b.got.length === 1, scaled(5000), 'each agent has its own');
      assert.deepEqual(a.got, ['wdd/RDMC/command/down/a one']);
      assert.deepEqual(b.got, ['wdd/RDMC/message/down/b two']);
      await a.peer.unsubscribeAsync('wdd/RDMC/message/down/a');
      await until(() => matcher.exactFilters === 3, scaled(5000), "an unsubscribed filter's handler goes");
      await a.peer.endAsync();
      await b.peer.endAsync();
      await until(() => matcher.exactFilters === 0, scaled(5000), "a client gone takes its filters' handlers");
      await hub.peer.publishAsync('wdd/RDMC/command/down/a', 'three', { qos: 1 });
      await until(() => bridge.got.length === 3, scaled(5000), 'the wildcard subscriber still has its own');
      assert.equal(a.got.length, 1);
    } finally {
      for (const p of peers) p.end(true);
      await new Promise<void>((r) => aedes.close(() => r()));
      await new Promise<void>((r) => server.close(() => r()));
    }
  });
});
