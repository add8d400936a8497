import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';

/** One row of a suite's table: the measured figure, its baseline from the same run, the goal. */
export interface BenchRow {
  metric: string;
  value: number;
  unit: string;
  baseline?: number;
  /**
   * What `baseline` is: 'raw' (default) a bare-library baseline such as the MQTT echo, or 'floor'
   * the hand-coded command path (bench/floor-child.ts), or 'knex' the same SQL statement sent
   * through knex unnamed, as every query went before statement.ts (bench/statements.ts), or
   * 'aedes' aedes-persistence's own outgoing queue (bench/outgoing.ts) or aedes' own client
   * (bench/connection-heap.ts), or 'announced' the same
   * statements with every change announced to another instance (bench/announce.ts), or 'earlier'
   * the same figure earlier in the same run (bench/soak.ts), or 'walk' the reporting walk over
   * free-form JSON that the first pass spares a safe value (bench/uplink.ts).
   */
  against?: 'raw' | 'floor' | 'signed floor' | 'knex' | 'aedes' | 'announced' | 'earlier' | 'walk' | 'mqtt-packet';
  /** What the ratio divides, when it is not the hub by its baseline (`signed floor/floor`). */
  ratioOf?: string;
  /**
   * Against raw: value / baseline (or baseline / value for latencies, so > 1 is always "better
   * than raw"). Against the floor: always hub / floor, as issue 13 states its goals (a latency
   * 1.5x the floor's, a rate 0.8x the floor's).
   */
  ratio?: number;
  goal?: string;
  met?: boolean;
}

export interface SuiteResult {
  suite: string;
  machine: { cores: number; cpu: string; node: string; platform: string };
  rows: BenchRow[];
  notes: string[];
}

export function machine(): SuiteResult['machine'] {
  return {
    cores: os.cpus().length,
    cpu: os.cpus()[0]?.model ?? 'unknown',
    node: process.version,
    platform: `${os.platform()} ${os.release()}`,
  };
}

export function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}

export function percentile(xs: number[], p: number): number {
  if (xs.length === 0) return Number.NaN;
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.max(0, Math.ceil((p / 100) * s.length) - 1))];
}

const fmt = (n: number) =>
  !Number.isFinite(n)
    ? String(n)
    : Math.abs(n) >= 1000
      ? Math.round(n).toLocaleString('en-US')
      : n.toFixed(n < 10 ? 3 : 1);

export function printSuite(r: SuiteResult): void {
  const m = r.machine;
  console.log(`\n== ${r.suite} ==  (${m.cores} cores, ${m.cpu}, node ${m.node})`);
  const header = ['metric', 'value', 'unit', 'baseline', 'ratio', 'goal', 'met'];
  const ratioOf = (row: BenchRow) =>
    row.ratioOf ?? (row.against === 'floor' || row.against === 'signed floor' ? `hub/${row.against}` : '');
  const lines = r.rows.map((row) => [
    row.metric,
    fmt(row.value),
    row.unit,
    row.baseline === undefined ? '' : `${fmt(row.baseline)} ${row.against ?? 'raw'}`,
    row.ratio === undefined ? '' : `${row.ratio.toFixed(3)}x${ratioOf(row) ? ` ${ratioOf(row)}` : ''}`,
    row.goal ?? '',
    row.met === undefined ? '' : row.met ? 'yes' : 'NO',
  ]);
  const widths = header.map((h, i) => Math.max(h.length, ...lines.map((l) => l[i].length)));
  const out = (cells: string[]) => console.log(cells.map((c, i) => c.padEnd(widths[i])).join('  '));
  out(header);
  out(widths.map((w) => '-'.repeat(w)));
  lines.forEach(out);
  for (const n of r.notes) console.log(`  note: ${n}`);
}

export function saveSuite(r: SuiteResult): string {
  const dir = path.resolve('bench/results');
  fs.mkdirSync(dir, { recursive: true });
  const file = path.join(dir, `${r.suite}.json`);
  fs.writeFileSync(file, `${JSON.stringify({ ...r, at: new Date().toISOString() }, null, 2)}\n`);
  return file;
}

/** Yields to the event loop, so a benchmark's own loop does not starve what it measures. */
export const tick = () => new Promise<void>((r) => setImmediate(r));

/**
 * A row against the hand-coded floor: ratio hub / floor and, with a goal, met when that ratio is
 * at most `max` (latencies: issue 13's "p50 <= 1.5x the floor") or at least `min` (rates).
 *
 * @example
 *   vsFloor('sync round trip p50', 'ms', 9.1, 4.7, { max: 1.5 }) // ratio 1.94, met false
 */
export function vsFloor(
  metric: string,
  unit: string,
  value: number,
  floor: number,
  goal?: { max: number } | { min: number },
): BenchRow {
  const ratio = value / floor;
  const row: BenchRow = { metric, value, unit, baseline: floor, against: 'floor', ratio };
  if (!goal) return row;
  return 'max' in goal
    ? { ...row, goal: `<= ${goal.max}x floor`, met: ratio <= goal.max }
    : { ...row, goal: `>= ${goal.min}x floor`, met: ratio >= goal.min };
}

/** BENCH_FLOOR=both: the hub's figure against the signed floor's (ratio hub / signed floor). */
export function vsSignedFloor(unit: string, value: number, signed: number): BenchRow {
  return {
    metric: '  against the signed floor',
    value,
    unit,
    baseline: signed,
    against: 'signed floor',
    ratio: value / signed,
  };
}

/** BENCH_FLOOR=both: the signed floor's figure (`what`) against the floor's (ratio signed floor / floor). */
export function signedVsFloor(what: string, unit: string, signed: number, floor: number): BenchRow {
  return {
    metric: `  signed floor against the floor (${what})`,
    value: signed,
    unit,
    baseline: floor,
    against: 'floor',
    ratioOf: 'signed floor/floor',
    ratio: signed / floor,
  };
}
