/**
 * The sync suite's leg timeline (BENCH_SYNC_LEGS=1): where a sync call's time goes at 1 in
 * flight, on the hub and on the floor in the same run, from what each process wrote and read
 * (legs-preload.ts). A call is the span from an HTTP request to the next request; in it, by the
 * order of the socket events alone (both sides take the same steps):
 *
 *   request ─1─ first statement written ─2─ its answer ─3─ MQTT publish written ─4─ the agent's
 *   last message read ─5─ last statement written ─6─ its answer ─7─ HTTP answer written
 *
 * Legs 1, 3, 5 and 7 are the process's own code (and its wake-ups), 2 and 6 are the database
 * (the send's INSERT and the ack + result write on the hub, the floor's INSERT and UPDATE), 4 the
 * broker and the agent. A call whose events are not in that order (a statement of another kind
 * in between, a retry) is left out and counted. The hub also writes its audit record meanwhile:
 * it is neither the first statement nor the last, so it shows only as load.
 */
import fs from 'node:fs';
import { median } from './harness.js';

export const LEGS = [
  'request → first statement written',
  'first statement: written → answered',
  'its answer → MQTT publish written',
  'publish → agent message read (broker, agent)',
  'agent message → last statement written',
  'last statement: written → answered',
  'its answer → HTTP answer written',
] as const;

/** Legs 1, 3, 5, 7; 2, 6; 4 (indexes into LEGS). */
const OWN = [0, 2, 4, 6];
const DATABASE = [1, 5];
const BROKER_AGENT = [3];

interface SocketEvent {
  us: number;
  event: 'Q' | 'R' | 'W';
  cls: 'h' | 'm' | 'd';
  socket: number;
}

export interface LegTimeline {
  /** Per leg (LEGS order), each call's µs. */
  legs: number[][];
  /** Each call's µs from request to answer. */
  totals: number[];
  /** Calls whose events were not in the expected order. */
  skipped: number;
}

export function parseLegEvents(text: string): SocketEvent[] {
  const out: SocketEvent[] = [];
  for (const line of text.split('\n')) {
    const [us, event, cls, socket] = line.split(' ');
    if (socket === undefined) continue;
    out.push({
      us: Number(us),
      event: event as SocketEvent['event'],
      cls: cls as SocketEvent['cls'],
      socket: Number(socket),
    });
  }
  return out;
}

/** The legs of every call in `events` (one process's, in time order, one call in flight). */
export function legTimeline(events: SocketEvent[]): LegTimeline {
  const legs: number[][] = LEGS.map(() => []);
  const totals: number[] = [];
  let skipped = 0;
  const requests = events.flatMap((e, i) => (e.event === 'Q' ? [i] : []));
  for (let r = 0; r < requests.length; r++) {
    const call = events.slice(requests[r], r + 1 < requests.length ? requests[r + 1] : events.length);
    const marks = callMarks(call);
    if (!marks) {
      skipped++;
      continue;
    }
    for (let i = 0; i < LEGS.length; i++) legs[i].push(marks[i + 1] - marks[i]);
    totals.push(marks[marks.length - 1] - marks[0]);
  }
  return { legs, totals, skipped };
}

/** The eight moments of one call (request … answer), or null when they are not in order. */
function callMarks(call: SocketEvent[]): number[] | null {
  const q = call[0];
  const answer = call.findIndex((e) => e.event === 'W' && e.cls === 'h');
  if (answer < 0) return null;
  const find = (from: number, to: number, ok: (e: SocketEvent) => boolean) => {
    for (let i = from; i < to; i++) if (ok(call[i])) return i;
    return -1;
  };
  const findLast = (from: number, to: number, ok: (e: SocketEvent) => boolean) => {
    for (let i = to - 1; i >= from; i--) if (ok(call[i])) return i;
    return -1;
  };
  const firstWrite = find(1, answer, (e) => e.event === 'W' && e.cls === 'd');
  if (firstWrite < 0) return null;
  const firstAnswer = find(firstWrite + 1, answer, (e) => e.event === 'R' && e.socket === call[firstWrite].socket);
  if (firstAnswer < 0) return null;
  const publish = find(firstAnswer + 1, answer, (e) => e.event === 'W' && e.cls === 'm');
  if (publish < 0) return null;
  // the last statement: the last database write before the answer whose answer came before it
  let lastWrite = -1;
  let lastAnswer = -1;
  for (let i = answer - 1; i > publish; i--) {
    const e = call[i];
    if (e.event !== 'W' || e.cls !== 'd') continue;
    lastAnswer = find(i + 1, answer, (x) => x.event === 'R' && x.socket === e.socket);
    if (lastAnswer >= 0) {
      lastWrite = i;
      break;
    }
  }
  if (lastWrite < 0) return null;
  const message = findLast(publish + 1, lastWrite, (e) => e.event === 'R' && e.cls === 'm');
  if (message < 0) return null;
  return [
    q,
    call[firstWrite],
    call[firstAnswer],
    call[publish],
    call[message],
    call[lastWrite],
    call[lastAnswer],
    call[answer],
  ].map((e) => e.us);
}

export function readLegTimeline(file: string): LegTimeline {
  return legTimeline(parseLegEvents(fs.existsSync(file) ? fs.readFileSync(file, 'utf8') : ''));
}

const us = (x: number) => (Number.isFinite(x) ? x.toFixed(0) : '-');
const sumOf = (t: LegTimeline, which: number[]) => which.reduce((s, i) => s + median(t.legs[i]), 0);

/** The suite's notes: each leg's median on both sides, then the three groups. */
export function legNotes(hub: LegTimeline, floor: LegTimeline): string[] {
  const n = (t: LegTimeline) => `${t.totals.length} calls (${t.skipped} out of order, left out)`;
  return [
    `leg timeline (BENCH_SYNC_LEGS=1, from each process's socket reads and writes; medians, µs, hub / floor; hub ${n(hub)}, floor ${n(floor)}): ` +
      LEGS.map((leg, i) => `${i + 1}. ${leg} ${us(median(hub.legs[i]))} / ${us(median(floor.legs[i]))}`).join('; ') +
      `; request → answer ${us(median(hub.totals))} / ${us(median(floor.totals))}`,
    `legs grouped (sums of the medians, µs, hub / floor): the process's own steps (1, 3, 5, 7) ${us(sumOf(hub, OWN))} / ${us(sumOf(floor, OWN))}; the database (2, 6) ${us(sumOf(hub, DATABASE))} / ${us(sumOf(floor, DATABASE))}; broker and agent (4) ${us(sumOf(hub, BROKER_AGENT))} / ${us(sumOf(floor, BROKER_AGENT))}`,
    `the slowest 2 % of calls (the p99's tail), hub / floor: ${tailNote(hub)} / ${tailNote(floor)}`,
  ];
}

/**
 * Where the slowest 2 % of calls (total at or past the 98th percentile) lost their time: how many
 * of them had each leg past that leg's own 98th percentile over all calls, leg by leg (`leg:count`),
 * and the median total of those calls. A leg that is slow in most of the tail is what sets the p99.
 */
export function tailNote(t: LegTimeline): string {
  if (t.totals.length === 0) return 'no calls';
  const p98 = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(0.98 * (xs.length - 1))];
  const cut = p98(t.totals);
  const tail = t.totals.flatMap((x, i) => (x >= cut ? [i] : []));
  const legCuts = t.legs.map(p98);
  const counts = LEGS.map((_, leg) => tail.filter((i) => t.legs[leg][i] >= legCuts[leg]).length);
  const total = median(tail.map((i) => t.totals[i]));
  return `${tail.length} calls, median ${us(total)} µs; legs past their own p98: ${counts.map((c, leg) => `${leg + 1}:${c}`).join(' ')}`;
}
