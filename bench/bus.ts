import { EventEmitter } from 'node:events';
import { performance } from 'node:perf_hooks';
import { Bus } from '../core/bus.js';
import { silentLogger } from '../core/log.js';
import { machine, median, type SuiteResult } from './harness.js';

const EVENTS = 2_000_000;
const RUNS = 5;
/**
 * Both sides publish in chunks and yield to the event loop between chunks, as a real producer
 * (a socket, a timer) does; publishing 2 M events without ever yielding would only measure how
 * fast a 2 M-deep backlog can be allocated.
 */
const CHUNK = 1000;
const yieldLoop = () => new Promise<void>((r) => setImmediate(r));

/** Raw EventEmitter: one listener, synchronous emit, the ceiling for any in-process bus. */
async function rawEmitter(): Promise<number> {
  const ee = new EventEmitter();
  let n = 0;
  ee.on('bench/topic', (p: { i: number }) => {
    n += p.i & 1;
  });
  const t0 = performance.now();
  for (let i = 0; i < EVENTS; i++) {
    ee.emit('bench/topic', { i });
    if (i % CHUNK === 0) await yieldLoop();
  }
  const ms = performance.now() - t0;
  if (n < 0) console.log(n);
  return (EVENTS / ms) * 1000;
}

/** The bus: one subscriber with its own bounded mailbox, events handled in order, drained fully. */
async function busDispatch(subscribers: number, wildcard: boolean): Promise<number> {
  const bus = new Bus(silentLogger());
  let n = 0;
  for (let s = 0; s < subscribers; s++) {
    bus
      .mailbox(`sub${s}`, { capacity: EVENTS + 1, overflow: 'reject', block_timeout_ms: 0 })
      .subscribe(wildcard ? 'bench/+' : 'bench/topic', (p) => {
        n += (p as { i: number }).i & 1;
      });
  }
  const t0 = performance.now();
  for (let i = 0; i < EVENTS; i++) {
    bus.publish('bench/topic', { i });
    if (i % CHUNK === 0) await yieldLoop();
  }
  await bus.drain(60_000);
  const ms = performance.now() - t0;
  if (n < 0) console.log(n);
  return ((EVENTS * subscribers) / ms) * 1000;
}

export async function runBusSuite(): Promise<SuiteResult> {
  const raw: number[] = [];
  const one: number[] = [];
  const wild: number[] = [];
  const four: number[] = [];
  // interleave runs so drift on a noisy machine hits both sides alike
  for (let r = 0; r < RUNS; r++) {
    raw.push(await rawEmitter());
    one.push(await busDispatch(1, false));
    wild.push(await busDispatch(1, true));
    four.push(await busDispatch(4, false));
  }
  const base = median(raw);
  const row = (metric: string, xs: number[], goal?: number) => {
    const value = median(xs);
    const ratio = value / base;
    return {
      metric,
      value,
      unit: 'events/s',
      baseline: base,
      ratio,
      goal: goal ? `>= ${goal}x` : undefined,
      met: goal ? ratio >= goal : undefined,
    };
  };
  return {
    suite: 'bus',
    machine: machine(),
    rows: [
      row('bus dispatch, 1 subscriber (exact topic)', one, 0.1),
      row('bus dispatch, 1 subscriber (+ wildcard)', wild),
      row('bus deliveries, 4 subscribers', four),
    ],
    notes: [
      `median of ${RUNS} runs of ${EVENTS.toLocaleString('en-US')} events; baseline: EventEmitter, 1 listener, same run; both publish in chunks of ${CHUNK} and yield between chunks`,
    ],
  };
}
