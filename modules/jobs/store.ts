/**
 * The job tables (migrations.ts) read and written: rows to views, counts from the targets, the
 * driver's lease, and the target state changes. Both drivers (pg, PGlite) answer knex.raw with
 * `{ rows }`; timestamptz comes back as Date and count(*) as a string or a number.
 */
import type { Knex } from 'knex';
import { isoOfMs } from '../../core/iso-time.js';
import type { OfflinePolicy } from '../command/contract/topics.js';
import type { JobCounts, JobStatus, JobTargets, JobView, TargetState } from './contract/topics.js';

export interface JobRow {
  job_id: string;
  status: JobStatus;
  targets: JobTargets;
  command_type: string;
  payload: unknown;
  timeout_ms: number | null;
  offline_policy: OfflinePolicy | null;
  max_in_flight: number;
  max_per_minute: number | null;
  failure_ratio: number | null;
  min_done: number | null;
  schedule_at: Date | string | null;
  reason: string | null;
  idempotency_key: string | null;
  request_hash: string | null;
  lease_owner: string | null;
  lease_until: Date | string | null;
  created_at: Date | string;
  started_at: Date | string | null;
  finished_at: Date | string | null;
}

export interface TargetRow {
  job_id: string;
  seq: number;
  project_id: string;
  command_id: string;
  state: TargetState;
}

export async function query<T>(db: Knex, sql: string, bindings: readonly unknown[] = []): Promise<T[]> {
  const r = (await db.raw(sql, bindings as Knex.RawBinding[])) as { rows: T[] };
  return r.rows;
}

/** ISO 8601 text of a time in ms: the process's one formatter (core/iso-time.ts), as the command module's `isoAt`. */
export const isoAt = isoOfMs;

function iso(v: Date | string | null): string | null {
  if (v === null) return null;
  return (v instanceof Date ? v : new Date(v)).toISOString();
}

export function emptyCounts(): JobCounts {
  return { total: 0, pending: 0, in_flight: 0, completed: 0, failed: 0, timeout: 0, cancelled: 0 };
}

export function toView(r: JobRow, counts: JobCounts): JobView {
  return {
    job_id: r.job_id,
    status: r.status,
    counts,
    targets: r.targets,
    command_type: r.command_type,
    payload: r.payload,
    timeout_ms: r.timeout_ms,
    offline_policy: r.offline_policy,
    rollout: { max_in_flight: r.max_in_flight, max_per_minute: r.max_per_minute },
    abort: r.failure_ratio === null ? null : { failure_ratio: r.failure_ratio, min_done: r.min_done ?? 1 },
    schedule_at: iso(r.schedule_at),
    reason: r.reason,
    created_at: iso(r.created_at)!,
    started_at: iso(r.started_at),
    finished_at: iso(r.finished_at),
  };
}

/** Counts of many jobs at once, from their targets. */
export async function countsOf(db: Knex, jobIds: readonly string[]): Promise<Map<string, JobCounts>> {
  const out = new Map<string, JobCounts>(jobIds.map((id) => [id, emptyCounts()]));
  if (jobIds.length === 0) return out;
  const rows = await query<{ job_id: string; state: TargetState; n: number | string }>(
    db,
    `SELECT job_id, state, count(*) AS n FROM job_target
      WHERE job_id IN (SELECT jsonb_array_elements_text(?::jsonb)) GROUP BY job_id, state`,
    [JSON.stringify(jobIds)],
  );
  for (const r of rows) {
    const c = out.get(r.job_id);
    if (!c) continue;
    c[r.state] = Number(r.n);
    c.total += Number(r.n);
  }
  return out;
}

export async function getRow(db: Knex, jobId: string): Promise<JobRow | null> {
  const [row] = await query<JobRow>(db, 'SELECT * FROM job WHERE job_id = ?', [jobId]);
  return row ?? null;
}

export async function viewOf(db: Knex, row: JobRow): Promise<JobView> {
  const counts = (await countsOf(db, [row.job_id])).get(row.job_id) ?? emptyCounts();
  return toView(row, counts);
}

/**
 * applyCommandStates' statement (exported for test/modules/jobs/statement-plans.test.ts). The
 * targets are found through command_id's index (`= ANY`, core/services/sql-lists.ts): joined to
 * the unpacked list alone, which the planner takes for 100 rows, a job_target of a few thousand
 * rows was scanned whole for every batch of command events.
 */
export const APPLY_STATES_SQL = `WITH v AS MATERIALIZED (SELECT * FROM jsonb_to_recordset(?::jsonb) AS v(command_id text, state text))
    UPDATE job_target t SET state = v.state, updated_at = ?::timestamptz,
           sent_at = COALESCE(t.sent_at, ?::timestamptz)
      FROM v
     WHERE t.command_id = ANY(ARRAY(SELECT command_id FROM v)) AND t.command_id = v.command_id
       AND t.state <> v.state
       AND NOT (v.state = 'in_flight' AND t.state IN ('completed', 'failed', 'timeout', 'cancelled'))
     RETURNING t.job_id`;

/**
 * Target states from their commands' statuses (events, or a re-read): a target whose command
 * exists takes its command's state (a target still `pending` was sent by a driver that died
 * before it noted so), except that a terminal one never goes back to in_flight (a re-read that
 * raced a result). Returns the jobs whose counts changed.
 */
export async function applyCommandStates(
  db: Knex,
  updates: ReadonlyArray<{ command_id: string; state: TargetState }>,
  now: number,
): Promise<string[]> {
  if (updates.length === 0) return [];
  const rows = await query<{ job_id: string }>(db, APPLY_STATES_SQL, [JSON.stringify(updates), isoAt(now), isoAt(now)]);
  return [...new Set(rows.map((r) => r.job_id))];
}
