import assert from 'node:assert/strict';
import type { Readable } from 'node:stream';
import { test } from 'node:test';
import aedesPersistence from 'aedes-persistence';
import fc from 'fast-check';
import { indexedOutgoing, type OutgoingMethods, type OutgoingPacket } from '../../../modules/broker/outgoing-index.js';

/**
 * The embedded broker's indexed outgoing queues (modules/broker/outgoing-index.ts) must behave as
 * aedes-persistence's own scans do, operation by operation: whatever sequence of enqueues, message
 * id updates (same broker: the packet takes the id; another broker's packet with the id: it is
 * replaced), PUBACK clears (undefined ids included: aedes clears never-sent packets by them) and
 * stream reads, both answer the same and hold the same queues in the same order. Duplicate
 * counters and repeated message ids are generated on purpose (a small range of each).
 */
/** aedes-persistence's in-memory store (its outgoing methods are what the index replaces). */
const aedesQueues = aedesPersistence as unknown as () => OutgoingMethods;

const client = fc.constantFrom('c1', 'c2');
const brokerId = fc.constantFrom('b1', 'b2');
const counter = fc.integer({ min: 1, max: 6 });
const messageId = fc.option(fc.integer({ min: 1, max: 4 }), { nil: undefined });

const op = fc.oneof(
  fc.record({ kind: fc.constant('enqueue' as const), client, brokerId, counter }),
  fc.record({
    kind: fc.constant('combi' as const),
    clients: fc.subarray(['c1', 'c2', 'c1']),
    brokerId,
    counter,
  }),
  fc.record({ kind: fc.constant('update' as const), client, brokerId, counter, messageId }),
  fc.record({ kind: fc.constant('clear' as const), client, messageId }),
  fc.record({ kind: fc.constant('stream' as const), client }),
);

const packet = (b: string, c: number) => ({
  cmd: 'publish',
  topic: 't',
  payload: Buffer.from('x'),
  qos: 1,
  retain: false,
  dup: false,
  brokerId: b,
  brokerCounter: c,
});

const shown = (p: OutgoingPacket | undefined) =>
  p === undefined ? undefined : [p.brokerId, p.brokerCounter, p.messageId, p.topic];

async function read(s: Readable): Promise<unknown[]> {
  const out: unknown[] = [];
  for await (const p of s) out.push(shown(p as OutgoingPacket));
  return out;
}

async function settle<T>(p: Promise<T>): Promise<{ ok: T } | { err: string }> {
  try {
    return { ok: await p };
  } catch (err) {
    return { err: (err as Error).message };
  }
}

test('indexed outgoing queues answer as aedes-persistence does, after any sequence of operations', async () => {
  await fc.assert(
    fc.asyncProperty(fc.array(op, { maxLength: 60 }), async (ops) => {
      // a fresh original per run: its clients' queues are keyed by id
      const base = aedesQueues();
      const mine = indexedOutgoing();
      for (const [i, o] of ops.entries()) {
        const both = async <T>(f: (m: OutgoingMethods) => Promise<T>) =>
          [await settle(f(base)), await settle(f(mine))] as const;
        if (o.kind === 'enqueue') {
          await both((m) => m.outgoingEnqueue({ clientId: o.client }, packet(o.brokerId, o.counter)));
        } else if (o.kind === 'combi') {
          const subs = o.clients.map((clientId) => ({ clientId }));
          await both((m) => m.outgoingEnqueueCombi(subs, packet(o.brokerId, o.counter)));
        } else if (o.kind === 'update') {
          const p = { ...packet(o.brokerId, o.counter), topic: `u${i}`, messageId: o.messageId };
          const [a, b] = await both((m) => m.outgoingUpdate({ id: o.client }, { ...p }));
          assert.deepEqual(b, a, `op ${i}: update`);
        } else if (o.kind === 'clear') {
          const [a, b] = await both(async (m) => shown(await m.outgoingClearMessageId({ id: o.client }, o)));
          assert.deepEqual(b, a, `op ${i}: clear`);
        } else {
          assert.deepEqual(
            await read(mine.outgoingStream({ id: o.client })),
            await read(base.outgoingStream({ id: o.client })),
            `op ${i}: stream`,
          );
        }
        for (const c of ['c1', 'c2']) {
          assert.deepEqual(
            await read(mine.outgoingStream({ id: c })),
            await read(base.outgoingStream({ id: c })),
            `after op ${i} (${o.kind}): queue of ${c}`,
          );
        }
      }
    }),
    { numRuns: 400 },
  );
});

test('20 000 packets in flight, PUBACKed out of order: the same queue as aedes-persistence keeps', async () => {
  const base = aedesQueues();
  const mine = indexedOutgoing();
  const N = 20_000;
  for (const q of [base, mine]) {
    for (let i = 1; i <= N; i++) await q.outgoingEnqueue({ clientId: 'hub' }, packet('b1', i));
    // aedes gives each its message id as it sends it (the first half now, the rest later)
    for (let i = 1; i <= N / 2; i++) await q.outgoingUpdate({ id: 'hub' }, { ...packet('b1', i), messageId: i });
  }
  // PUBACKs in another order than the sends, and the second half sent meanwhile
  for (let i = N / 2; i >= 1; i -= 2) {
    const [a, b] = [base, mine].map((q) => q.outgoingClearMessageId({ id: 'hub' }, { messageId: i }));
    assert.deepEqual(shown(await b), shown(await a));
    assert.equal((await b)?.brokerCounter, i);
  }
  // a session emptied (Client.emptyOutgoingQueue) clears packets never sent by their undefined id
  for (let k = 0; k < 3; k++) {
    const [a, b] = [base, mine].map((q) => q.outgoingClearMessageId({ id: 'hub' }, { messageId: undefined }));
    assert.deepEqual(shown(await b), shown(await a));
    assert.equal((await b)?.brokerCounter, N / 2 + 1 + k);
  }
  for (const q of [base, mine]) {
    for (let i = N / 2 + 4; i <= N; i++) await q.outgoingUpdate({ id: 'hub' }, { ...packet('b1', i), messageId: i });
  }
  const left = await read(mine.outgoingStream({ id: 'hub' }));
  assert.equal(left.length, N - N / 4 - 3);
  assert.deepEqual(left, await read(base.outgoingStream({ id: 'hub' })), 'the same packets, in the same order');
});
