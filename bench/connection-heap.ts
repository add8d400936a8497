/**
 * What one agent connection costs in the embedded broker's JS heap: the broker module (auth, ACL,
 * rate and packet limits, lean connections: modules/broker/lean-connection.ts) against aedes as
 * it comes with the same session queues, each in a process of its own
 * (bench/connection-heap-child.ts), the agents in another. The heap is collected before it is
 * read, so this is live state, not the collector's headroom; the memory suite measures the RSS
 * that follows from it with 10 000 agents. `BENCH_CONN_HEAP_N` connections (3 000), `BENCH_RUNS`
 * rounds (2), the two sides alternating.
 */
import { execFile } from 'node:child_process';
import path from 'node:path';
import { promisify } from 'node:util';
import { envNumber } from './env.js';
import { machine, median, type SuiteResult } from './harness.js';

const run = promisify(execFile);

interface Side {
  kind: string;
  connections: number;
  before: number;
  after: number;
}

async function side(kind: 'bare' | 'module', n: number): Promise<number> {
  const child = path.join(import.meta.dirname, 'connection-heap-child.js');
  const { stdout } = await run(process.execPath, ['--expose-gc', child, kind, String(n)], {
    timeout: 300_000,
    maxBuffer: 1 << 20,
  });
  const r = JSON.parse(stdout.trim().split('\n').at(-1) ?? '{}') as Side;
  if (r.connections !== n) throw new Error(`${kind}: ${r.connections} of ${n} agents connected`);
  return (r.after - r.before) / n;
}

export async function runConnectionHeapSuite(): Promise<SuiteResult> {
  const N = envNumber('BENCH_CONN_HEAP_N', 3000, 1000);
  const RUNS = envNumber('BENCH_RUNS', 2, 1);
  const bare: number[] = [];
  const mod: number[] = [];
  for (let i = 0; i < RUNS; i++) {
    bare.push(await side('bare', N));
    mod.push(await side('module', N));
  }
  const b = median(bare);
  const m = median(mod);
  return {
    suite: 'connection-heap',
    machine: machine(),
    rows: [
      {
        metric: `live JS heap per agent connection, the broker module (${N.toLocaleString('en-US')} connections, clean: false, 2 subscriptions)`,
        value: Math.round(m),
        unit: 'B',
        baseline: Math.round(b),
        against: 'aedes',
        ratio: m / b,
      },
    ],
    notes: [
      `per run (bytes a connection): the broker module ${mod.map((x) => Math.round(x)).join(', ')}; aedes as it comes ${bare.map((x) => Math.round(x)).join(', ')}`,
      'the broker module adds its own state per connection (its identity, rate bucket, login for re-authentication, write hold, packet limit) and removes what lean-connection.ts replaces',
    ],
  };
}
