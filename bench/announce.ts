/**
 * `announce`: what the cluster announcements (modules/command/cluster-events.ts, migration 010)
 * cost PostgreSQL on the command path. The send's INSERT and the ack + result write of one
 * command each (as at 1 in flight), on a schema with the announce triggers attached as a hub on
 * driver pg attaches them, in three states alternating in blocks on one session:
 * - `announced`: another instance listens (its row in command_listeners, its LISTEN session
 *   connected), so every change is announced: what every pg instance paid before migration 010;
 * - `alone`: no other instance listens: the triggers' condition says no, nothing is queued;
 * - `detached`: the announce triggers disabled, the floor of those two.
 * Figures per command: the caller's wall time (median of the blocks' means) and the backend's CPU
 * (/proc/<pid>/stat of a local server, summed over the blocks).
 */
import { performance } from 'node:perf_hooks';
import pg from 'pg';
import { silentLogger } from '../core/log.js';
import { DbPool } from '../core/services/db.js';
import { run } from '../core/services/statement.js';
import { ANNOUNCE_TRIGGERS, channelFor } from '../modules/command/cluster-events.js';
import { query } from '../modules/command/deps.js';
import { INSERT_PLAIN_SQL } from '../modules/command/insert-batch.js';
import { migrations } from '../modules/command/migrations.js';
import { RESULT_SQL } from '../modules/command/uplink.js';
import { envNumber, pgDatabase } from './env.js';
import { type BenchRow, machine, median, type SuiteResult } from './harness.js';
import { backendCpuMs, CLK_TCK, newRow, resultArgs } from './statements.js';

const BLOCKS = envNumber('BENCH_ANNOUNCE_BLOCKS', 8, 3);
const PER_BLOCK = envNumber('BENCH_ANNOUNCE_PER_BLOCK', 200, 80);

const MODES = ['detached', 'alone', 'announced'] as const;
type Mode = (typeof MODES)[number];

export async function runAnnounceSuite(): Promise<SuiteResult> {
  const bench = await pgDatabase({ min: 1, max: 1 });
  const pool = new DbPool({ default: bench.config }, silentLogger());
  const schema = bench.config.schema!;
  const figures = Object.fromEntries(MODES.map((m) => [m, { wall: [] as number[], cpu: 0, n: 0 }])) as Record<
    Mode,
    { wall: number[]; cpu: number; n: number }
  >;
  let heard = 0;
  try {
    await pool.migrate('command', migrations);
    const db = pool.get();
    // as a hub on driver pg attaches them
    await db.transaction((trx) => trx.raw(ANNOUNCE_TRIGGERS));
    const [{ pid }] = await query<{ pid: number }>(db, 'SELECT pg_backend_pid() AS pid');
    const triggers = (on: boolean) =>
      db.raw(
        ['command_tracker', 'command_result']
          .map((t) => `ALTER TABLE ${t} ${on ? 'ENABLE' : 'DISABLE'} TRIGGER ${t}_announce`)
          .join('; '),
      );
    for (let b = 0; b < (BLOCKS + 1) * MODES.length; b++) {
      const mode = MODES[b % MODES.length];
      await triggers(mode !== 'detached');
      let peer: pg.Client | undefined;
      if (mode === 'announced') {
        peer = new pg.Client({ connectionString: bench.config.url });
        await peer.connect();
        peer.on('notification', () => heard++);
        await peer.query(`LISTEN "${channelFor(schema)}"`);
        await peer.query(`INSERT INTO "${schema}".command_listeners VALUES ('bench-peer', now() + interval '1 hour')`);
      }
      const cpu0 = backendCpuMs(pid);
      const t0 = performance.now();
      const ids: string[] = [];
      for (let i = 0; i < PER_BLOCK; i++) {
        const row = newRow('bench-a');
        await run(db, INSERT_PLAIN_SQL, [JSON.stringify([row])]);
        ids.push(row.command_id);
      }
      for (const id of ids) await run(db, RESULT_SQL.one, resultArgs(id, 'bench-a'));
      const wall = (performance.now() - t0) / PER_BLOCK;
      const cpu = backendCpuMs(pid) - cpu0;
      if (peer) {
        await peer.query(`DELETE FROM "${schema}".command_listeners WHERE origin = 'bench-peer'`);
        await peer.end();
      }
      if (b < MODES.length) continue; // the first round warms up
      figures[mode].wall.push(wall);
      figures[mode].cpu += cpu;
      figures[mode].n += PER_BLOCK;
    }
  } finally {
    await pool.close();
    await bench.drop();
  }
  const rows: BenchRow[] = [];
  const announced = figures.announced;
  for (const mode of ['alone', 'detached'] as const) {
    const f = figures[mode];
    const what = mode === 'alone' ? 'no other instance listening' : 'announce triggers disabled';
    const wall = median(f.wall);
    const cpu = f.cpu / f.n;
    rows.push(
      {
        metric: `send INSERT + ack/result write, ${what}: wall`,
        value: wall,
        unit: 'ms',
        baseline: median(announced.wall),
        against: 'announced',
        ratio: median(announced.wall) / wall,
      },
      {
        metric: `same, PostgreSQL CPU per command`,
        value: cpu,
        unit: 'ms',
        baseline: announced.cpu / announced.n,
        against: 'announced',
        ratio: announced.cpu / announced.n / cpu,
      },
    );
  }
  return {
    suite: 'announce',
    machine: machine(),
    rows,
    notes: [
      `PostgreSQL server, one session; per command one send INSERT and one ack + result write (one row each, as at 1 in flight), the announce triggers attached as a hub on driver pg attaches them; baseline 'announced': another instance listening (a row in command_listeners and a LISTEN session), every change announced, as on every pg instance before migration 010; ratio = announced / value (> 1: cheaper)`,
      `${BLOCKS} blocks of ${PER_BLOCK} commands per state after a warm-up round, states alternating; wall = median of the blocks' means; CPU from /proc/<backend pid>/stat (1/${CLK_TCK} s ticks) over all blocks; notifications heard by the listening session: ${heard}`,
    ],
  };
}
