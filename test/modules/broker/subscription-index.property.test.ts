import assert from 'node:assert/strict';
import type { Readable } from 'node:stream';
import { test } from 'node:test';
import aedesPersistence from 'aedes-persistence';
import fc from 'fast-check';
import {
  type ClientSubscription,
  hasWildcard,
  indexedSubscriptions,
  type SubscriptionMethods,
  type TopicSubscriber,
} from '../../../modules/broker/subscription-index.js';

/**
 * The embedded broker's stored subscriptions (modules/broker/subscription-index.ts) must answer as
 * aedes-persistence's own do, operation by operation: whatever sequence of SUBSCRIBEs (QoS 0 to
 * 2, a filter subscribed again with another QoS, exact filters and wildcards, one filter shared by
 * several clients), UNSUBSCRIBEs and clean-session connects, both give each client the same list,
 * each published topic the same subscribers (as a multiset: the order in which aedes queues a
 * message for different clients is not a contract), the same offline counts and client lists.
 */
const aedesSubscriptions = aedesPersistence as unknown as () => SubscriptionMethods;

const clientId = fc.constantFrom('agent-a', 'agent-b', 'bridge');
// exact filters, and wildcards that match them, a parent level, or nothing
const FILTERS = [
  'gmq/down/a',
  'gmq/down/b',
  'gmq/up/a',
  'gmq/+/a',
  'gmq/up/#',
  'gmq/#',
  '#',
  'gmq',
  'x/+/+',
  'gmq/down/a+',
];
const TOPICS = ['gmq/down/a', 'gmq/down/b', 'gmq/up/a', 'gmq', 'gmq/up', 'x/y/z', 'gmq/down/a+', 'other'];
const filter = fc.constantFrom(...FILTERS);
const sub = fc.record(
  {
    topic: filter,
    qos: fc.integer({ min: 0, max: 2 }),
    rh: fc.integer({ min: 0, max: 2 }),
    rap: fc.boolean(),
    nl: fc.boolean(),
    subscriptionIdentifier: fc.integer({ min: 1, max: 9 }),
  },
  { requiredKeys: ['topic', 'qos'] },
);
const op = fc.oneof(
  {
    weight: 4,
    arbitrary: fc.record({ kind: fc.constant('add' as const), clientId, subs: fc.array(sub, { maxLength: 3 }) }),
  },
  {
    weight: 2,
    arbitrary: fc.record({
      kind: fc.constant('remove' as const),
      clientId,
      topics: fc.array(filter, { maxLength: 3 }),
    }),
  },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant('clean' as const), clientId }) },
);

const sortSubscribers = (subs: TopicSubscriber[]): TopicSubscriber[] =>
  [...subs].sort((x, y) => `${x.clientId} ${x.topic}`.localeCompare(`${y.clientId} ${y.topic}`));

async function read(stream: Readable): Promise<unknown[]> {
  const out: unknown[] = [];
  for await (const x of stream) out.push(x);
  return out;
}

/** Everything the two stores answer, after each operation. */
async function observe(s: SubscriptionMethods) {
  const clients: Record<string, ClientSubscription[]> = {};
  for (const id of ['agent-a', 'agent-b', 'bridge']) clients[id] = await s.subscriptionsByClient({ id });
  const topics: Record<string, TopicSubscriber[]> = {};
  for (const t of TOPICS) topics[t] = sortSubscribers(await s.subscriptionsByTopic(t));
  const lists: Record<string, unknown[]> = {};
  for (const f of FILTERS) lists[f] = (await read(s.getClientList(f))).sort();
  return { clients, topics, lists, offline: await s.countOffline() };
}

/** One operation of a generated sequence on a store. */
type Op =
  | { kind: 'add'; clientId: string; subs: ClientSubscription[] }
  | { kind: 'remove'; clientId: string; topics: string[] }
  | { kind: 'clean'; clientId: string };

async function apply(s: SubscriptionMethods, o: Op): Promise<void> {
  if (o.kind === 'add') await s.addSubscriptions({ id: o.clientId }, o.subs);
  else if (o.kind === 'remove') await s.removeSubscriptions({ id: o.clientId }, o.topics);
  else await s.cleanSubscriptions({ id: o.clientId });
}

test('stored subscriptions answer as aedes-persistence does, operation by operation', async () => {
  await fc.assert(
    fc.asyncProperty(fc.array(op, { maxLength: 30 }), async (ops) => {
      const original = aedesSubscriptions();
      const indexed = indexedSubscriptions();
      for (const o of ops) {
        for (const s of [original, indexed]) await apply(s, o);
        assert.deepEqual(await observe(indexed), await observe(original), JSON.stringify(o));
      }
    }),
    { numRuns: 300 },
  );
});

test('a client with more filters than its short list holds answers the same (the list becomes a map and back)', async () => {
  // up to 14 filters on one client: its list passes FEW_FILTERS (8) and shrinks again
  const many = fc.constantFrom(...FILTERS, 'gmq/x/1', 'gmq/x/2', 'gmq/x/3', 'gmq/x/+', 'gmq/y/1', 'gmq/y/#');
  const manyOp = fc.oneof(
    {
      weight: 4,
      arbitrary: fc.record({
        kind: fc.constant('add' as const),
        clientId: fc.constantFrom('agent-a', 'bridge'),
        subs: fc.array(fc.record({ topic: many, qos: fc.integer({ min: 0, max: 2 }) }), { maxLength: 6 }),
      }),
    },
    {
      weight: 2,
      arbitrary: fc.record({
        kind: fc.constant('remove' as const),
        clientId: fc.constantFrom('agent-a', 'bridge'),
        topics: fc.array(many, { maxLength: 4 }),
      }),
    },
    { weight: 1, arbitrary: fc.record({ kind: fc.constant('clean' as const), clientId: fc.constant('agent-a') }) },
  );
  await fc.assert(
    fc.asyncProperty(fc.array(manyOp, { minLength: 5, maxLength: 30 }), async (ops) => {
      const original = aedesSubscriptions();
      const indexed = indexedSubscriptions();
      for (const o of ops) {
        for (const s of [original, indexed]) await apply(s, o);
        const clients: Record<string, ClientSubscription[][]> = {};
        for (const id of ['agent-a', 'bridge'])
          clients[id] = [await indexed.subscriptionsByClient({ id }), await original.subscriptionsByClient({ id })];
        for (const [id, [mine, theirs]] of Object.entries(clients))
          assert.deepEqual(mine, theirs, `${id} after ${JSON.stringify(o)}`);
        for (const t of [...TOPICS, 'gmq/x/1', 'gmq/y/1', 'gmq/x/3'])
          assert.deepEqual(
            sortSubscribers(await indexed.subscriptionsByTopic(t)),
            sortSubscribers(await original.subscriptionsByTopic(t)),
            t,
          );
        for (const f of ['gmq/x/1', 'gmq/x/+', 'gmq/down/a'])
          assert.deepEqual(
            (await read(indexed.getClientList(f))).sort(),
            (await read(original.getClientList(f))).sort(),
            f,
          );
        assert.deepEqual(await indexed.countOffline(), await original.countOffline());
      }
    }),
    { numRuns: 200 },
  );
});

test('a subscriber handed out is a copy: a caller that changes it does not change the store', async () => {
  const s = indexedSubscriptions();
  await s.addSubscriptions({ id: 'agent-a' }, [{ topic: 'gmq/down/a', qos: 1 }]);
  await s.addSubscriptions({ id: 'agent-b' }, [{ topic: 'gmq/down/b', qos: 1 }]);
  await s.addSubscriptions({ id: 'agent-a' }, [{ topic: 'gmq/down/b', qos: 1 }]);
  for (const t of ['gmq/down/a', 'gmq/down/b']) for (const x of await s.subscriptionsByTopic(t)) x.qos = 0;
  assert.deepEqual(
    [...(await s.subscriptionsByTopic('gmq/down/a')), ...(await s.subscriptionsByTopic('gmq/down/b'))].map(
      (x) => x.qos,
    ),
    [1, 1, 1],
  );
});

test("clients' equal settings are one stored record: a caller that changes a client's list changes nobody's", async () => {
  const s = indexedSubscriptions();
  const mqtt5 = { qos: 1, rh: 0, rap: false, nl: true };
  for (const id of ['agent-a', 'agent-b'])
    await s.addSubscriptions({ id }, [
      { topic: `gmq/down/${id}`, qos: 1 },
      { topic: `gmq/5/${id}`, ...mqtt5 },
    ]);
  const a = await s.subscriptionsByClient({ id: 'agent-a' });
  for (const x of a) Object.assign(x, { qos: 0, rh: 2, rap: true, nl: false });
  assert.deepEqual(await s.subscriptionsByClient({ id: 'agent-b' }), [
    { topic: 'gmq/down/agent-b', qos: 1, rh: undefined, rap: undefined, nl: undefined },
    { topic: 'gmq/5/agent-b', ...mqtt5 },
  ]);
  assert.deepEqual(
    (await s.subscriptionsByClient({ id: 'agent-a' })).map((x) => x.qos),
    [1, 1],
  );
  // a subscription identifier belongs to one SUBSCRIBE: never shared with another client's
  await s.addSubscriptions({ id: 'agent-c' }, [{ topic: 'gmq/down/agent-c', qos: 1, subscriptionIdentifier: 7 }]);
  await s.addSubscriptions({ id: 'agent-d' }, [{ topic: 'gmq/down/agent-d', qos: 1 }]);
  assert.deepEqual(
    (await s.subscriptionsByClient({ id: 'agent-d' })).map((x) => x.subscriptionIdentifier),
    [undefined],
  );
  assert.deepEqual(
    (await s.subscriptionsByClient({ id: 'agent-c' })).map((x) => x.subscriptionIdentifier),
    [7],
  );
});

test('wildcards are whole levels, as qlobber reads them', () => {
  assert.equal(hasWildcard('gmq/+/a'), true);
  assert.equal(hasWildcard('gmq/up/#'), true);
  assert.equal(hasWildcard('#'), true);
  assert.equal(hasWildcard('gmq/down/a+'), false);
  assert.equal(hasWildcard('gmq/down/#a'), false);
  assert.equal(hasWildcard('gmq/down/a'), false);
});
