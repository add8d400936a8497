import assert from 'node:assert/strict';
import type { Readable } from 'node:stream';
import { test } from 'node:test';
import aedesPersistence from 'aedes-persistence';
import fc from 'fast-check';
import {
  indexedOutgoing,
  isStaleResend,
  type OutgoingMethods,
  type OutgoingPacket,
} from '../../../modules/broker/outgoing-index.js';

/**
 * The embedded broker's indexed outgoing queues (modules/broker/outgoing-index.ts) must behave as
 * aedes-persistence's own scans do, operation by operation: whatever sequence of enqueues, message
 * id updates (same broker: the packet takes the id; another broker's packet with the id: it is
 * replaced), PUBACK clears (undefined ids included: aedes clears never-sent packets by them) and
 * stream reads, both answer the same and hold the same queues in the same order. Duplicate
 * counters and repeated message ids are generated on purpose (a small range of each).
 *
 * But for the index's two fixes (its file comment), which the original is given as a model: a
 * first send takes the next id no other queued packet holds (`firstSendId`, applied to the
 * original's update), and a publish no longer queued is a stale resend, not "no such packet".
 */
/** aedes-persistence's in-memory store (its outgoing methods are what the index replaces). */
const aedesQueues = aedesPersistence as unknown as () => OutgoingMethods;

const client = fc.constantFrom('c1', 'c2');
const brokerId = fc.constantFrom('b1', 'b2');
const counter = fc.integer({ min: 1, max: 6 });
const messageId = fc.option(fc.integer({ min: 1, max: 4 }), { nil: undefined });

// weighted so queues hold several packets and ids repeat among them: the cases both fixes are about
const op = fc.oneof(
  { weight: 3, arbitrary: fc.record({ kind: fc.constant('enqueue' as const), client, brokerId, counter }) },
  {
    weight: 1,
    arbitrary: fc.record({
      kind: fc.constant('combi' as const),
      clients: fc.subarray(['c1', 'c2', 'c1']),
      brokerId,
      counter,
    }),
  },
  {
    weight: 3,
    arbitrary: fc.record({ kind: fc.constant('update' as const), client, brokerId, counter, messageId }),
  },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant('clear' as const), client, messageId }) },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant('stream' as const), client }) },
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

async function raw(s: Readable): Promise<OutgoingPacket[]> {
  const out: OutgoingPacket[] = [];
  for await (const p of s) out.push(p as OutgoingPacket);
  return out;
}

const read = async (s: Readable): Promise<unknown[]> => (await raw(s)).map(shown);

/**
 * The id the fix gives `p` in `queue` (the original's, in order): the first packet of p's broker
 * and counter takes it, unless another broker's packet with p's id comes first (replaced, id as
 * given); a first send (a new id for the packet) moves past the ids the other packets hold.
 */
function firstSendId(queue: OutgoingPacket[], p: OutgoingPacket): number | undefined {
  const same = queue.findIndex((q) => q.brokerId === p.brokerId && q.brokerCounter === p.brokerCounter);
  const other = queue.findIndex((q) => q.messageId === p.messageId && q.brokerId !== p.brokerId);
  if (same < 0 || (other >= 0 && other < same)) return p.messageId;
  if (p.messageId === undefined || p.messageId === queue[same].messageId) return p.messageId;
  let id = p.messageId;
  while (queue.some((q, k) => k !== same && q.messageId === id)) id = id >= 65_535 ? 1 : id + 1;
  return id;
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
    fc.asyncProperty(fc.array(op, { minLength: 5, maxLength: 60 }), async (ops) => {
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
          const id = firstSendId(await raw(base.outgoingStream({ id: o.client })), p);
          const a = await settle(base.outgoingUpdate({ id: o.client }, { ...p, messageId: id }));
          const sent = { ...p };
          const b = await settle(mine.outgoingUpdate({ id: o.client }, sent));
          if ('err' in a && a.err === 'no such packet') {
            // a publish of this broker no longer queued: marked for the broker to drop, no error
            assert.deepEqual(b, { ok: undefined }, `op ${i}: update of a packet not queued`);
            assert.equal(isStaleResend(sent), true, `op ${i}: marked stale`);
          } else {
            assert.deepEqual(b, a, `op ${i}: update`);
            assert.equal(sent.messageId, id, `op ${i}: the id the packet is sent with`);
            assert.equal(isStaleResend(sent), false, `op ${i}: not stale`);
          }
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

test('a packet id names one queued packet: a PUBACK clears the packet sent under it, whatever ids aedes proposes', async () => {
  const step = fc.oneof(
    { weight: 2, arbitrary: fc.record({ kind: fc.constant('enqueue' as const) }) },
    {
      weight: 3,
      arbitrary: fc.record({
        kind: fc.constant('send' as const),
        pick: fc.nat(),
        // aedes' proposal for a first send: its connection's next id (a small range: they collide)
        proposed: fc.integer({ min: 1, max: 4 }),
        conn: fc.integer({ min: 0, max: 2 }),
      }),
    },
    { weight: 2, arbitrary: fc.record({ kind: fc.constant('ack' as const), pick: fc.nat() }) },
  );
  await fc.assert(
    fc.asyncProperty(fc.array(step, { minLength: 5, maxLength: 80 }), async (steps) => {
      const q = indexedOutgoing();
      // three connections of one session (aedes makes a Client object per connection)
      const conns = [{ id: 's' }, { id: 's' }, { id: 's' }];
      let counter = 0;
      /** id → the counter of the packet the client was last given under it */
      const given = new Map<number, number>();
      for (const [i, s] of steps.entries()) {
        const queue = await raw(q.outgoingStream({ id: 's' }));
        if (s.kind === 'enqueue') {
          await q.outgoingEnqueue({ clientId: 's' }, packet('b1', ++counter));
        } else if (s.kind === 'send' && queue.length > 0) {
          const target = queue[s.pick % queue.length];
          // a resend carries its id; a first send aedes' proposal
          const p = { ...packet('b1', target.brokerCounter!), messageId: target.messageId ?? s.proposed };
          await q.outgoingUpdate(conns[s.conn], p);
          if (!isStaleResend(p)) given.set(p.messageId!, target.brokerCounter!);
        } else if (s.kind === 'ack' && given.size > 0) {
          const id = [...given.keys()][s.pick % given.size];
          const cleared = await q.outgoingClearMessageId({ id: 's' }, { messageId: id });
          assert.equal(
            cleared?.brokerCounter,
            given.get(id),
            `step ${i}: PUBACK ${id} clears the packet sent as ${id}`,
          );
          given.delete(id);
        }
        const ids = (await raw(q.outgoingStream({ id: 's' }))).flatMap((p) =>
          p.messageId === undefined ? [] : [p.messageId],
        );
        assert.equal(new Set(ids).size, ids.length, `after step ${i}: queued ids ${ids.join(', ')} are unique`);
      }
    }),
    { numRuns: 300 },
  );
});
