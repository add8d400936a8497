/** Reading commands (get, list, dead list, stats) and cancelling one. */
import { HubError } from '../../core/errors.js';
import { likeCondition } from '../shared/project-scope.js';
import type { CommandDetail, CommandView } from './contract/topics.js';
import { type Deps, isoAt, query } from './deps.js';
import { type ResultRow, TRACKER_COLUMNS, type TrackerRow, toDetail, toView } from './rows.js';
import { checkList, checkPaging, checkPatterns } from './validate.js';

const T_COLS = TRACKER_COLUMNS.split(', ')
  .map((c) => `t.${c}`)
  .join(', ');

/** Outbox depth by state (COMMAND.stats); exported for its plan test (the unpublished rows' index). */
export const OUTBOX_COUNTS_SQL = `SELECT status, count(*) AS n FROM command_outbox
  WHERE status IN ('pending', 'waiting', 'dead') GROUP BY status`;

export interface Page<T> {
  items: T[];
  total: number;
  limit: number;
  offset: number;
}

export class Queries {
  constructor(private readonly d: Deps) {}

  async get(commandId: string): Promise<CommandDetail> {
    const [row] = await query<
      TrackerRow & {
        r_status: ResultRow['status'] | null;
        r_exit_code: number | string;
        r_output: string;
        r_error: string;
        r_start_time: number | string;
        r_end_time: number | string;
        r_duration: number | string;
        r_received_at: Date | string;
      }
    >(
      this.d.db,
      `SELECT ${T_COLS}, t.payload, r.status AS r_status, r.exit_code AS r_exit_code, r.output AS r_output,
              r.error AS r_error, r.start_time AS r_start_time, r.end_time AS r_end_time, r.duration AS r_duration,
              r.received_at AS r_received_at
         FROM command_tracker t LEFT JOIN command_result r ON r.command_id = t.command_id
        WHERE t.command_id = ?`,
      [commandId],
    );
    if (!row) throw new HubError('CMD_ERR_NOT_FOUND', `no command ${commandId}`, { command_id: commandId });
    const result: ResultRow | null = row.r_status
      ? {
          status: row.r_status,
          exit_code: row.r_exit_code,
          output: row.r_output,
          error: row.r_error,
          start_time: row.r_start_time,
          end_time: row.r_end_time,
          duration: row.r_duration,
          received_at: row.r_received_at,
        }
      : null;
    return toDetail(row, result);
  }

  /** Newest first. Filters: project_id, status (one or several), command_type, job_id, since ≤ created_at ≤ until. */
  async list(req: unknown): Promise<Page<CommandView>> {
    const f = checkList(req);
    const where: string[] = [];
    const args: unknown[] = [];
    if (f.project_id !== null) {
      where.push('project_id = ?');
      args.push(f.project_id);
    }
    const scope = likeCondition('project_id', f.project_patterns);
    if (scope) {
      where.push(scope.sql);
      args.push(...scope.args);
    }
    if (f.statuses !== null) {
      where.push(`status IN (${f.statuses.map(() => '?').join(', ')})`);
      args.push(...f.statuses);
    }
    if (f.command_type !== null) {
      where.push('command_type = ?');
      args.push(f.command_type);
    }
    if (f.job_id !== null) {
      where.push('job_id = ?');
      args.push(f.job_id);
    }
    if (f.since !== null) {
      where.push('created_at >= ?::timestamptz');
      args.push(f.since.toISOString());
    }
    if (f.until !== null) {
      where.push('created_at <= ?::timestamptz');
      args.push(f.until.toISOString());
    }
    const w = where.length > 0 ? `WHERE ${where.join(' AND ')}` : '';
    const [count] = await query<{ n: number | string }>(
      this.d.db,
      `SELECT count(*) AS n FROM command_tracker ${w}`,
      args,
    );
    const rows = await query<TrackerRow>(
      this.d.db,
      `SELECT ${TRACKER_COLUMNS} FROM command_tracker ${w} ORDER BY created_at DESC, id DESC LIMIT ? OFFSET ?`,
      [...args, f.limit, f.offset],
    );
    return { items: rows.map(toView), total: Number(count.n), limit: f.limit, offset: f.offset };
  }

  /**
   * Only a command nobody has received can be cancelled: tracker still `scheduled` (its time
   * has not come; the scheduler's claim waits for this row lock and then finds it cancelled) or
   * `pending` (no broker PUBACK yet, or queued for an offline project) and never acked. Its outbox row is removed in
   * the same statement. A publish already in flight may still reach the agent; its result would
   * then be stored as a late result on the cancelled record.
   */
  async cancel(commandId: string): Promise<CommandView> {
    const now = isoAt(this.d.clock.now());
    const rows = await query<TrackerRow>(
      this.d.db,
      `WITH t AS (
         UPDATE command_tracker t SET status = 'cancelled', error = 'cancelled', completed_at = ?::timestamptz,
                updated_at = ?::timestamptz
          WHERE t.command_id = ? AND t.status IN ('scheduled', 'pending') AND t.acked_at IS NULL
         RETURNING ${T_COLS}
       ), o AS (
         DELETE FROM command_outbox o USING t WHERE o.command_id = t.command_id
       )
       SELECT * FROM t`,
      [now, now, commandId],
    );
    if (rows.length === 0) {
      const [cur] = await query<TrackerRow>(
        this.d.db,
        `SELECT ${TRACKER_COLUMNS} FROM command_tracker WHERE command_id = ?`,
        [commandId],
      );
      if (!cur) throw new HubError('CMD_ERR_NOT_FOUND', `no command ${commandId}`, { command_id: commandId });
      throw new HubError(
        'CMD_ERR_NOT_CANCELLABLE',
        `command ${commandId} is ${cur.status}: only a scheduled or pending command never delivered can be cancelled`,
        { command_id: commandId, status: cur.status },
      );
    }
    this.d.log.info({ project_id: rows[0].project_id, command_id: commandId }, 'command cancelled');
    this.d.events.state(rows[0]);
    return toView(rows[0]);
  }

  /** Commands whose outbox row went dead (no ack after max attempts, timed out undelivered, queue expired). */
  async deadList(req: unknown): Promise<Page<CommandView & { last_error: string | null }>> {
    const r = (req ?? {}) as Record<string, unknown>;
    const { project_patterns, ...paging } = r;
    const p = checkPaging(paging);
    // a token limited to some projects sees their dead commands only (project-scope.ts)
    const scope = likeCondition('t.project_id', checkPatterns(project_patterns));
    const and = scope ? ` AND ${scope.sql}` : '';
    const scopeArgs = scope?.args ?? [];
    const [count] = await query<{ n: number | string }>(
      this.d.db,
      `SELECT count(*) AS n FROM command_outbox o JOIN command_tracker t ON t.command_id = o.command_id
        WHERE o.status = 'dead'${and}`,
      scopeArgs,
    );
    const rows = await query<TrackerRow & { last_error: string | null }>(
      this.d.db,
      `SELECT ${T_COLS}, o.last_error FROM command_outbox o JOIN command_tracker t ON t.command_id = o.command_id
        WHERE o.status = 'dead'${and} ORDER BY o.updated_at DESC, o.id DESC LIMIT ? OFFSET ?`,
      [...scopeArgs, p.limit, p.offset],
    );
    return {
      items: rows.map((r) => ({ ...toView(r), last_error: r.last_error })),
      total: Number(count.n),
      ...p,
    };
  }

  /** Outbox depth by state, for COMMAND.stats. */
  async outbox(): Promise<{ pending: number; waiting: number; dead: number }> {
    const rows = await query<{ status: string; n: number | string }>(this.d.db, OUTBOX_COUNTS_SQL);
    const out = { pending: 0, waiting: 0, dead: 0 };
    for (const r of rows) out[r.status as keyof typeof out] = Number(r.n);
    return out;
  }
}
