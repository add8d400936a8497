/**
 * What the command path's hot statements cost as the hub sends them (core/services/statement.ts:
 * named prepared statements, run straight on a pooled connection) against how every query went
 * before (knex `db.raw`, unnamed: parsed and planned by PostgreSQL on every call, and through
 * knex's builder and runner). The statements are the command module's own: the send's INSERT
 * (one row, as at 1 in flight) and the ack + result write an agent's answer makes. Two pools on
 * one schema, one session each, alternating in blocks so drift on a busy machine hits both.
 *
 * Figures per statement: the caller's wall time (median of the blocks' means), the server's CPU
 * (the backend process's utime + stime from /proc, which a local server exposes) and this
 * process's CPU (what the hub spends on the same statement).
 */
import { randomUUID } from 'node:crypto';
import fs from 'node:fs';
import { performance } from 'node:perf_hooks';
import type { Knex } from 'knex';
import { silentLogger } from '../core/log.js';
import { type DbConfig, DbPool } from '../core/services/db.js';
import { run, type Statement } from '../core/services/statement.js';
import { query } from '../modules/command/deps.js';
import { INSERT_PLAIN_SQL, type NewCommandRow } from '../modules/command/insert-batch.js';
import { migrations } from '../modules/command/migrations.js';
import { RESULT_SQL } from '../modules/command/uplink.js';
import { envNumber, pgDatabase } from './env.js';
import { type BenchRow, machine, median, type SuiteResult } from './harness.js';

const BLOCKS = envNumber('BENCH_STMT_BLOCKS', 8, 3);
const PER_BLOCK = envNumber('BENCH_STMT_PER_BLOCK', 250, 60);
export const CLK_TCK = 100; // Linux USER_HZ: /proc/<pid>/stat counts CPU in 1/100 s

interface Side {
  name: 'knex' | 'prepared';
  pool: DbPool;
  db: Knex;
  /** The session's backend pid (pool of one connection). */
  backend: number;
  wallMs: { insert: number[]; result: number[] };
  cpuMs: { insert: number; result: number };
  /** This process's CPU (the hub's side of the same work: the module code, knex, the driver). */
  clientCpuMs: { insert: number; result: number };
  n: number;
}

/** A local process's CPU so far (utime + stime from /proc), in ms: a PostgreSQL backend's, here. */
export function backendCpuMs(pid: number): number {
  const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return ((Number(fields[11]) + Number(fields[12])) * 1000) / CLK_TCK;
}

const ownMs = (u: NodeJS.CpuUsage) => (u.user + u.system) / 1000;

/** A pending command's tracker + outbox row as a send writes it (also the plan tests' stored rows). */
export function newRow(projectId: string): NewCommandRow {
  const now = new Date().toISOString();
  return {
    command_id: randomUUID(),
    project_id: projectId,
    command_type: 'exec',
    module: null,
    operator_id: null,
    payload_json: '{"cmd":"uptime"}',
    offline_policy: 'fail',
    timeout_ms: 60_000,
    queue_expires_at: null,
    is_sync: true,
    timeout_at: now,
    created_at: now,
    topic: `gmq/${projectId}/down/command`,
    message: '{"message_id":"x","signature":"y"}',
    status: 'pending',
    schedule_at: null,
    queue_ttl_ms: null,
    outbox_status: 'pending',
    attempts: 1,
    next_attempt_at: now,
    idempotency_key: null,
    request_hash: null,
    job_id: null,
  };
}

/** The ack + result write of answered commands (uplink.ts writeResults' bindings), one or a group. */
export function resultArgs(commandIds: string | readonly string[], projectId: string): unknown[] {
  const now = new Date().toISOString();
  const list = typeof commandIds === 'string' ? [commandIds] : commandIds;
  const ids = JSON.stringify(list);
  const input = list.map((commandId) => ({
    command_id: commandId,
    project_id: projectId,
    status: 'success',
    exit_code: 0,
    output: 'up 8 min',
    error: '',
    start_time: Date.now(),
    end_time: Date.now(),
    duration: 1,
    received_at: now,
    started: now,
    ended: now,
    ack_at: now,
  }));
  return [ids, ids, JSON.stringify(input), now, now, now];
}

async function openSide(name: Side['name'], config: DbConfig): Promise<Side> {
  const pool = new DbPool({ default: { ...config, pool: { min: 1, max: 1 } } }, silentLogger());
  const db = pool.get();
  const [{ pid }] = await query<{ pid: number }>(db, 'SELECT pg_backend_pid() AS pid');
  return {
    name,
    pool,
    db,
    backend: pid,
    wallMs: { insert: [], result: [] },
    cpuMs: { insert: 0, result: 0 },
    clientCpuMs: { insert: 0, result: 0 },
    n: 0,
  };
}

/** A statement as this side sends it: knex raw unnamed (before), or run() (the hub now). */
async function exec<T>(side: Side, st: Statement, bindings: unknown[]): Promise<T[]> {
  if (side.name === 'prepared') return run<T>(side.db, st, bindings);
  return ((await side.db.raw(st.sql, bindings as Knex.RawBinding[])) as { rows: T[] }).rows;
}

/** One block on one side: PER_BLOCK inserts, then PER_BLOCK result writes for those commands. */
async function block(side: Side, measured: boolean): Promise<void> {
  const ids: string[] = [];
  let cpu0 = backendCpuMs(side.backend);
  let own0 = process.cpuUsage();
  let t0 = performance.now();
  for (let i = 0; i < PER_BLOCK; i++) {
    const row = newRow('bench-p');
    const stored = await exec<{ command_id: string }>(side, INSERT_PLAIN_SQL, [JSON.stringify([row])]);
    if (stored[0]?.command_id !== row.command_id) throw new Error('insert stored nothing');
    ids.push(row.command_id);
  }
  const insertMs = performance.now() - t0;
  const insertCpu = backendCpuMs(side.backend) - cpu0;
  const insertOwn = ownMs(process.cpuUsage(own0));
  cpu0 = backendCpuMs(side.backend);
  own0 = process.cpuUsage();
  t0 = performance.now();
  for (const id of ids) {
    const rows = await exec<{ inserted: boolean }>(side, RESULT_SQL.one, resultArgs(id, 'bench-p'));
    if (!rows[0]?.inserted) throw new Error('result stored nothing');
  }
  const resultMs = performance.now() - t0;
  const resultCpu = backendCpuMs(side.backend) - cpu0;
  const resultOwn = ownMs(process.cpuUsage(own0));
  if (!measured) return;
  side.clientCpuMs.insert += insertOwn;
  side.clientCpuMs.result += resultOwn;
  side.wallMs.insert.push(insertMs / PER_BLOCK);
  side.wallMs.result.push(resultMs / PER_BLOCK);
  side.cpuMs.insert += insertCpu;
  side.cpuMs.result += resultCpu;
  side.n += PER_BLOCK;
}

export async function runStatementsSuite(): Promise<SuiteResult> {
  const bench = await pgDatabase({ min: 1, max: 1 });
  const setup = new DbPool({ default: bench.config }, silentLogger());
  const sides: Side[] = [];
  try {
    await setup.migrate('command', migrations);
    await setup.close();
    sides.push(await openSide('knex', bench.config), await openSide('prepared', bench.config));
    for (const s of sides) await block(s, false); // warm-up: connections, caches, the first plans
    for (let b = 0; b < BLOCKS; b++) {
      // alternate which side goes first, so neither always follows the other's writes
      const order = b % 2 === 0 ? sides : [...sides].reverse();
      for (const s of order) await block(s, true);
    }
  } finally {
    await Promise.all(sides.map((s) => s.pool.close()));
    await setup.close();
    await bench.drop();
  }
  const [before, hub] = sides;
  const rows: BenchRow[] = [];
  const row = (metric: string, value: number, baseline: number): BenchRow => ({
    metric,
    value,
    unit: 'ms',
    baseline,
    against: 'knex',
    ratio: baseline / value,
  });
  for (const kind of ['insert', 'result'] as const) {
    const label = kind === 'insert' ? 'send INSERT (tracker + outbox, 1 row)' : 'ack + result write (1 command)';
    rows.push(
      row(`${label}: wall`, median(hub.wallMs[kind]), median(before.wallMs[kind])),
      row(`${label}: server CPU`, hub.cpuMs[kind] / hub.n, before.cpuMs[kind] / before.n),
      row(`${label}: hub CPU`, hub.clientCpuMs[kind] / hub.n, before.clientCpuMs[kind] / before.n),
    );
  }
  return {
    suite: 'statements',
    machine: machine(),
    rows,
    notes: [
      `PostgreSQL server, one session per side on one schema; value: the statement as the hub sends it (run(): prepared, straight on the connection); baseline: the same statement through knex db.raw, unnamed (every query before); ratio = knex / hub (> 1: the hub's way is cheaper)`,
      `${BLOCKS} blocks of ${PER_BLOCK} inserts then ${PER_BLOCK} result writes per side, sides alternating; wall = median of the blocks' means; server CPU from /proc/<backend pid>/stat (1/${CLK_TCK} s ticks), hub CPU from process.cpuUsage(), both summed over all blocks`,
    ],
  };
}
