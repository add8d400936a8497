/**
 * The embedded broker's outgoing queues (modules/broker/outgoing-index.ts) against aedes-persistence's
 * own, which they replace: one message's path through a persistent session's queue (queued,
 * given its message id as it is sent, cleared by its PUBACK) with N others in flight before it.
 * The hub's own bridge is such a session, and it PUBACKs only once an uplink is durable, so a
 * burst of heartbeats keeps thousands in flight. Baseline: aedes-persistence, same run.
 */
import { performance } from 'node:perf_hooks';
import aedesPersistence from 'aedes-persistence';
import { indexedOutgoing, type OutgoingMethods } from '../modules/broker/outgoing-index.js';
import { envNumber } from './env.js';
import { machine, median, type SuiteResult } from './harness.js';

/** aedes-persistence's in-memory store (its outgoing methods are what the index replaces). */
const aedesQueues = aedesPersistence as unknown as () => OutgoingMethods;

const DEPTHS = [10, 1_000, 5_000, 20_000];
const RUNS = 3;

const packet = (i: number) => ({
  cmd: 'publish',
  topic: 'gmq/message/up',
  payload: Buffer.from('x'),
  qos: 1,
  retain: false,
  dup: false,
  brokerId: 'bench',
  brokerCounter: i,
});
const idOf = (i: number) => (i % 65_535) + 1;

/** µs per message with `depth` others in flight: enqueue, message id on send, PUBACK clear. */
async function perMessage(q: OutgoingMethods, depth: number, messages: number): Promise<number> {
  const session = { clientId: 'hub' };
  const client = { id: 'hub' };
  let i = 0;
  for (; i < depth; i++) {
    await q.outgoingEnqueue(session, packet(i + 1));
    await q.outgoingUpdate(client, { ...packet(i + 1), messageId: idOf(i) });
  }
  const t0 = performance.now();
  for (let k = 0; k < messages; k++, i++) {
    await q.outgoingEnqueue(session, packet(i + 1));
    await q.outgoingUpdate(client, { ...packet(i + 1), messageId: idOf(i) });
    await q.outgoingClearMessageId(client, { messageId: idOf(i - depth) });
  }
  return ((performance.now() - t0) * 1000) / messages;
}

export async function runOutgoingSuite(): Promise<SuiteResult> {
  const messages = envNumber('BENCH_OUTGOING_MESSAGES', 20_000, 5_000);
  const rows: SuiteResult['rows'] = [];
  // warm both up first (JIT), so the first depth measured is not the one that compiles them
  await perMessage(aedesQueues(), 100, messages);
  await perMessage(indexedOutgoing(), 100, messages);
  for (const depth of DEPTHS) {
    const base: number[] = [];
    const mine: number[] = [];
    // alternating, so drift on a noisy machine hits both alike
    for (let r = 0; r < RUNS; r++) {
      base.push(await perMessage(aedesQueues(), depth, messages));
      mine.push(await perMessage(indexedOutgoing(), depth, messages));
    }
    const b = median(base);
    const m = median(mine);
    rows.push({
      metric: `one message through a session queue, ${depth.toLocaleString('en-US')} in flight`,
      value: m,
      unit: 'µs',
      baseline: b,
      against: 'aedes',
      ratio: b / m,
    });
  }
  return {
    suite: 'outgoing',
    machine: machine(),
    rows,
    notes: [
      `median of ${RUNS} runs of ${messages.toLocaleString('en-US')} messages per depth; baseline: aedes-persistence's in-memory outgoing queue (what aedes uses alone), same run; ratio = baseline / indexed (above 1: the index is faster)`,
    ],
  };
}
