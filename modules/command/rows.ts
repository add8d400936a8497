/**
 * Row shapes of the command tables and their mapping to the bus views (modules/command/contract/topics.ts).
 * Times come as Date (PGlite, knex queries), as PostgreSQL's text (the hot statements on pg:
 * TIMES_AS_TEXT) or as ISO text (announced rows), all read through `iso`/`ms`; bigint may come
 * back as a string (pg) or a number (PGlite), so numbers are read through `num`.
 */
import { isoOfPgTime, isPgTimeText, msOfPgTime } from '../../core/services/pg-times.js';
import type {
  CommandDetail,
  CommandResultView,
  CommandStatus,
  CommandTimings,
  CommandView,
} from './contract/topics.js';

/** A command row as the database returns it: the view's own fields as they are, times and counts as stored. */
export interface TrackerRow
  extends Pick<
    CommandView,
    'command_id' | 'project_id' | 'command_type' | 'module' | 'operator_id' | 'status' | 'offline_policy'
  > {
  id: string | number;
  payload?: unknown;
  timeout_ms: number;
  queue_expires_at: Date | string | null;
  attempts: number | string;
  late_result: boolean;
  error: string | null;
  is_sync: boolean;
  sent_at: Date | string | null;
  acked_at: Date | string | null;
  started_at: Date | string | null;
  completed_at: Date | string | null;
  timeout_at: Date | string;
  created_at: Date | string;
  updated_at: Date | string;
  /** Raised by one at every change (migration 004): orders the events of one command across instances. */
  version?: number | string;
  /** The job that sent the command (modules/jobs), or null. */
  job_id?: string | null;
  /** Migration 006: when a scheduled send starts (null: it started at once). */
  schedule_at?: Date | string | null;
}

export interface ResultRow {
  status: CommandResultView['status'];
  exit_code: number | string;
  output: string;
  error: string;
  start_time: number | string;
  end_time: number | string;
  duration: number | string;
  received_at: Date | string;
}

/**
 * Statuses the relay, the sweeper and the uplink handlers may still move forward. Not
 * `scheduled`: nothing was sent yet and no timeout runs; only the scheduler (or a cancel) moves it.
 */
export const LIVE_STATUSES: readonly CommandStatus[] = ['pending', 'sent', 'acked'];
/** `status IN (…)` text for LIVE_STATUSES (constants only, never user input). */
export const LIVE_SQL = `('pending', 'sent', 'acked')`;

export const TRACKER_COLUMNS =
  'id, command_id, project_id, command_type, module, operator_id, status, offline_policy, timeout_ms, ' +
  'queue_expires_at, attempts, late_result, error, is_sync, sent_at, acked_at, started_at, completed_at, ' +
  'timeout_at, created_at, updated_at, version, schedule_at, job_id';

export function num(v: number | string | null | undefined): number {
  return typeof v === 'number' ? v : Number(v ?? 0);
}

/**
 * A time as a row holds it: a Date (PGlite, knex queries), PostgreSQL's text (the hot statements,
 * TIMES_AS_TEXT: core/services/pg-times.ts) or ISO text (announcements' rows, from to_jsonb).
 */
function ms(v: Date | string | null | undefined): number | null {
  if (v === null || v === undefined) return null;
  if (typeof v === 'string' && isPgTimeText(v)) return msOfPgTime(v);
  const t = v instanceof Date ? v.getTime() : Date.parse(v);
  return Number.isFinite(t) ? t : null;
}

export function iso(v: Date | string | null | undefined): string | null {
  if (typeof v === 'string' && isPgTimeText(v)) return isoOfPgTime(v);
  const t = ms(v);
  return t === null ? null : new Date(t).toISOString();
}

export function toView(r: TrackerRow): CommandView {
  return {
    command_id: r.command_id,
    project_id: r.project_id,
    command_type: r.command_type,
    module: r.module,
    operator_id: r.operator_id,
    status: r.status,
    is_sync: r.is_sync,
    offline_policy: r.offline_policy,
    attempts: num(r.attempts),
    created_at: iso(r.created_at)!,
    sent_at: iso(r.sent_at),
    acked_at: iso(r.acked_at),
    started_at: iso(r.started_at),
    completed_at: iso(r.completed_at),
    timeout_at: iso(r.timeout_at)!,
    schedule_at: iso(r.schedule_at),
    late_result: r.late_result,
    error: r.error,
    job_id: r.job_id ?? null,
  };
}

export function toResultView(r: ResultRow): CommandResultView {
  return {
    status: r.status,
    exit_code: num(r.exit_code),
    output: r.output,
    error: r.error,
    start_time: num(r.start_time),
    end_time: num(r.end_time),
    duration: num(r.duration),
    received_at: iso(r.received_at)!,
  };
}

const diff = (a: number | null, b: number | null): number | null => (a === null || b === null ? null : b - a);

/**
 * The seed's "command time" figures: queue = created → sent (broker PUBACK), delivery = sent →
 * acked (agent), execution = the agent's start_time → end_time, total = created → completed.
 * Null where a moment is unknown (never sent, never acked, no result yet …).
 */
export function timings(r: TrackerRow, result: CommandResultView | null): CommandTimings {
  return {
    queue_ms: diff(ms(r.created_at), ms(r.sent_at)),
    delivery_ms: diff(ms(r.sent_at), ms(r.acked_at)),
    execution_ms: result ? result.end_time - result.start_time : null,
    total_ms: diff(ms(r.created_at), ms(r.completed_at)),
  };
}

export function toDetail(r: TrackerRow, res: ResultRow | null): CommandDetail {
  const result = res ? toResultView(res) : null;
  return { ...toView(r), payload: r.payload ?? null, result, timings: timings(r, result) };
}
