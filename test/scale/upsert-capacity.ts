/**
 * How many presence rows per second one PostgreSQL takes through the status module's own write:
 * `writeBatch` (modules/status/persist.ts), a `json_to_recordset` UPSERT of up to 5 000 rows per
 * statement in one transaction, with rows shaped as a heartbeat leaves them (registration and
 * metrics included). docs/deployment.md scales its 10⁵ / 10⁶ projects argument from it.
 *
 *   node dist/test/scale/upsert-capacity.js [--rows 100000] [--rounds 3] [--url postgres://…]
 *
 * Runs in a fresh schema on the server (default: TEST_DATABASE_URL, the machine's PostgreSQL on
 * 127.0.0.1:5432, with its own durability settings), dropped at the end. Prints one line per case:
 * one row per commit (what an unbatched heartbeat path would do), batches of 500, 5 000 and
 * 20 000 rows, and two writers at once on disjoint projects (two hub instances flushing).
 */
import { randomBytes } from 'node:crypto';
import os from 'node:os';
import { parseArgs } from 'node:util';
import knex, { type Knex } from 'knex';
import pg from 'pg';
import { migrations } from '../../modules/status/migrations.js';
import { writeBatch } from '../../modules/status/persist.js';
import type { Batch, PresenceEntry } from '../../modules/status/presence.js';
import { TEST_DATABASE_URL } from '../helpers/db.js';

/**
 * A presence entry as a heartbeat leaves it. Built loosely and cast: the entry and batch types are
 * the status module's internals, and this measurement should keep running while they change (a
 * read model with row versions adds fields, a batch of transitions replaces the history rows); the
 * fields a heartbeat write reads are the same in every shape, the others start at their zero.
 */
function entry(projectId: string, now: number, seq: number): PresenceEntry {
  const e = {
    project_id: projectId,
    state: 'online',
    state_since: now - 3_600_000,
    last_heartbeat_at: now,
    instance_id: `${projectId}-agent-host-4242`,
    agent_version: '1.4.2',
    registration: {
      node_name: projectId,
      instance_id: `${projectId}-agent-host-4242`,
      version: '1.4.2',
      pid: 4242,
      start_time: '2026-12-01T12:00:00Z',
      capabilities: ['echo', 'host_exec'],
      metadata: { site: 'plant' },
      node_version: {
        git_version: 'v1.4.2',
        git_commit: 'abc1234',
        build_date: '2026-11-30',
        go_version: 'go1.22',
        platform: 'linux/amd64',
      },
    },
    session_started_at: now - 3_600_000,
    metrics: {
      cpu_percent: seq % 100,
      load_1m: '0.42',
      mem_total_bytes: 8_589_934_592,
      mem_free_bytes: 4_294_967_296,
      uptime_s: 3600,
    },
    metrics_at: now,
    last_alert: null,
    last_alert_at: null,
    updated_at: now,
    handshake: null,
    version: 0,
    announced: 0,
    pending: 0,
  };
  return e as unknown as PresenceEntry;
}

/** Heartbeat rows only: no state transition, no history. */
const heartbeats = (rows: PresenceEntry[]): Batch => ({ rows, history: [], ops: [] }) as unknown as Batch;

const ids = (n: number, prefix = 'p') => Array.from({ length: n }, (_, i) => `${prefix}-${i}`);

/** Writes `projects` in batches of `batch` rows, `rounds` times; rows per second. */
async function batched(db: Knex, projects: string[], batch: number, rounds: number): Promise<number> {
  let rows = 0;
  const t0 = performance.now();
  for (let r = 0; r < rounds; r++) {
    const now = Date.now();
    for (let i = 0; i < projects.length; i += batch) {
      const slice = projects.slice(i, i + batch).map((p, k) => entry(p, now, r + k));
      await writeBatch(db, heartbeats(slice));
      rows += slice.length;
    }
  }
  return rows / ((performance.now() - t0) / 1000);
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: { rows: { type: 'string' }, rounds: { type: 'string' }, url: { type: 'string' } },
    strict: true,
  });
  const rows = Number(values.rows ?? 100_000);
  const rounds = Number(values.rounds ?? 3);
  const url = values.url ?? TEST_DATABASE_URL;
  const schema = `upsert_${randomBytes(4).toString('hex')}`;
  const admin = new pg.Client({ connectionString: url });
  await admin.connect();
  await admin.query(`CREATE SCHEMA "${schema}"`);
  const db = knex({ client: 'pg', connection: url, searchPath: [schema], pool: { min: 0, max: 4 } });
  try {
    for (const m of migrations) {
      if (typeof m.up === 'string') await db.raw(m.up);
      else await m.up(db);
    }
    const settings = await admin.query(
      "SELECT name, setting FROM pg_settings WHERE name IN ('server_version', 'fsync', 'synchronous_commit', 'shared_buffers')",
    );
    console.log(
      `upsert capacity: ${os.cpus().length} cores, load average ${os.loadavg()[0].toFixed(1)}; PostgreSQL ` +
        settings.rows.map((r: { name: string; setting: string }) => `${r.name}=${r.setting}`).join(' '),
    );
    // the table holds every project first (a flush updates rows that exist), then each case is timed
    await batched(db, ids(rows), 5_000, 1);
    const single = ids(2_000);
    const t0 = performance.now();
    for (const p of single) await writeBatch(db, heartbeats([entry(p, Date.now(), 1)]));
    console.log(`  one row per commit: ${(single.length / ((performance.now() - t0) / 1000)).toFixed(0)} rows/s`);
    for (const batch of [500, 5_000, 20_000]) {
      const rate = await batched(db, ids(rows), batch, rounds);
      console.log(`  batches of ${batch}: ${rate.toFixed(0)} rows/s (${rows} projects × ${rounds} rounds)`);
    }
    const half = Math.floor(rows / 2);
    const t1 = performance.now();
    await Promise.all([
      batched(db, ids(rows).slice(0, half), 5_000, rounds),
      batched(db, ids(rows).slice(half), 5_000, rounds),
    ]);
    const both = (rows * rounds) / ((performance.now() - t1) / 1000);
    console.log(`  two writers at once, batches of 5000: ${both.toFixed(0)} rows/s together`);
  } finally {
    await db.destroy();
    await admin.query(`DROP SCHEMA IF EXISTS "${schema}" CASCADE`);
    await admin.end();
  }
}

main().catch((err: unknown) => {
  console.error(err);
  process.exit(1);
});
