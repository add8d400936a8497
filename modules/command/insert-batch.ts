/**
 * Group commit for sends (core/services/group-commit.ts). Sends accepted in the same turn of the
 * event loop are written together: every tracker row and its outbox row in ONE statement (a
 * transaction of its own), so a command is never stored without its outbox row. A group that
 * fails as a whole (one poisoned row) is written again row by row, so one bad send fails alone.
 * A command_id already stored comes back as `null` (the caller looks it up).
 *
 * A row with an idempotency key writes its key row in the same statement, first: its tracker
 * and outbox rows are written only if the key went in. A key another send holds (committed, or
 * in flight: PostgreSQL makes the insert wait for that transaction) comes back as `null` and
 * writes nothing; a keyed row whose command_id is taken fails the statement (then alone), so a
 * key never points at a command another request made.
 */
import type { Knex } from 'knex';
import { GroupCommit } from '../../core/services/group-commit.js';
import { statement } from '../../core/services/statement.js';
import { query } from './deps.js';
import { TRACKER_COLUMNS, type TrackerRow } from './rows.js';

/** One tracker + outbox row pair, ready to write. */
export interface NewCommandRow {
  command_id: string;
  project_id: string;
  command_type: string;
  module: string | null;
  operator_id: string | null;
  payload_json: string;
  offline_policy: string;
  timeout_ms: number;
  queue_expires_at: string | null;
  is_sync: boolean;
  timeout_at: string;
  created_at: string;
  /** Outbox: the downlink topic and the signed message text. */
  topic: string;
  message: string;
  /** 'scheduled' for a send that starts later (tracker and outbox alike), else 'pending'. */
  status: 'scheduled' | 'pending';
  schedule_at: string | null;
  /** Kept for a scheduled command: its queued wait, if any, starts at its time. */
  queue_ttl_ms: number | null;
  outbox_status: 'pending' | 'waiting' | 'scheduled';
  /** 1 when the send path publishes the first attempt itself (the relay's claim is then already made). */
  attempts: number;
  next_attempt_at: string;
  /** The caller's retry key and its request hash (idempotency.ts), or null. */
  idempotency_key: string | null;
  request_hash: string | null;
  /** The job that sends it (modules/jobs), or null. */
  job_id: string | null;
}

const TRACKER_INSERT = `INSERT INTO command_tracker (command_id, project_id, command_type, module, operator_id, status,
      payload, offline_policy, timeout_ms, queue_expires_at, is_sync, timeout_at, created_at, updated_at, schedule_at,
      queue_ttl_ms, job_id, attempts)`;
const TRACKER_VALUES = `v.command_id, v.project_id, v.command_type, v.module, v.operator_id, v.status,
      v.payload_json::jsonb, v.offline_policy, v.timeout_ms, v.queue_expires_at, v.is_sync, v.timeout_at, v.created_at,
      v.created_at, v.schedule_at, v.queue_ttl_ms, v.job_id, v.attempts`;

const ROWS = `v AS (
    SELECT * FROM jsonb_to_recordset(?::jsonb) AS v(command_id text, project_id text, command_type text, module text,
      operator_id text, payload_json text, offline_policy text, timeout_ms integer, queue_expires_at timestamptz,
      is_sync boolean, timeout_at timestamptz, created_at timestamptz, topic text, message text, outbox_status text,
      attempts integer, next_attempt_at timestamptz, idempotency_key text, request_hash text, status text,
      schedule_at timestamptz, queue_ttl_ms bigint, job_id text)
  )`;
/** The tracker rows of a group's sends without keys (`keyless`: the group has no others). */
const plainTracker = (keyless: boolean): string => `${TRACKER_INSERT}
    SELECT ${TRACKER_VALUES} FROM v${keyless ? '' : ' WHERE v.idempotency_key IS NULL'}
    ON CONFLICT (command_id) DO NOTHING
    RETURNING ${TRACKER_COLUMNS}`;
const OUTBOX_AND_ANSWER = `o AS (
    INSERT INTO command_outbox (command_id, project_id, topic, payload, status, attempts, next_attempt_at,
      created_at, updated_at)
    SELECT v.command_id, v.project_id, v.topic, v.message, v.outbox_status, v.attempts, v.next_attempt_at,
      v.created_at, v.created_at
      FROM v JOIN t ON t.command_id = v.command_id
    RETURNING id, command_id
  )
  SELECT t.*, o.id AS outbox_id FROM t JOIN o ON o.command_id = t.command_id`;

/** Any group: rows with and without idempotency keys. Exported for bench/statements.ts. */
export const INSERT_SQL = statement(
  `WITH ${ROWS}, k AS (
    INSERT INTO command_idempotency (idempotency_key, request_hash, command_id, created_at)
    SELECT idempotency_key, request_hash, command_id, created_at FROM v WHERE idempotency_key IS NOT NULL
    ON CONFLICT (idempotency_key) DO NOTHING
    RETURNING idempotency_key, command_id
  ), t_plain AS (
    ${plainTracker(false)}
  ), t_keyed AS (
    ${TRACKER_INSERT}
    SELECT DISTINCT ON (v.command_id) ${TRACKER_VALUES}
      FROM v JOIN k ON k.idempotency_key = v.idempotency_key AND k.command_id = v.command_id
    RETURNING ${TRACKER_COLUMNS}
  ), t AS (
    SELECT * FROM t_plain UNION ALL SELECT * FROM t_keyed
  ), ${OUTBOX_AND_ANSWER}`,
  { timesAsText: true },
);

/**
 * A group without idempotency keys (most sends): the same rows written without the key table's
 * step and the keyed tracker insert. Each step of a statement is set up on every run (its
 * tables and their indexes opened, its constraints prepared) whether it writes a row or not, and
 * at one send that set-up is a good part of the statement's cost: 230-247 us of server CPU a send
 * with those steps, 200-220 without (docs/benchmarks.md "A list of one id is an equality", its last part).
 * Nor does it filter on the key: the planner takes `idempotency_key IS NULL` for 1 row in 200,
 * so for one tracker row, and then joined the tracker and outbox steps' rows in a nested loop
 * that read one step again for each row of the other, quadratic in the group (docs/benchmarks.md "A group's
 * steps joined by hash, not in loops").
 */
export const INSERT_PLAIN_SQL = statement(
  `WITH ${ROWS}, t AS (
    ${plainTracker(true)}
  ), ${OUTBOX_AND_ANSWER}`,
  { timesAsText: true },
);

export type InsertedRow = TrackerRow & { outbox_id: string | number };

/**
 * The sends' group commit (core/services/group-commit.ts). A command_id stored before, or a
 * keyed row whose key another send holds, comes back as null (the caller looks it up).
 */
export class InsertBatch {
  private readonly group: GroupCommit<NewCommandRow, InsertedRow | null>;

  constructor(db: () => Knex) {
    this.group = new GroupCommit(async (rows) => {
      const sql = rows.some((r) => r.idempotency_key !== null) ? INSERT_SQL : INSERT_PLAIN_SQL;
      const stored = await query<InsertedRow>(db(), sql, [JSON.stringify(rows)]);
      const byId = new Map(stored.map((r) => [r.command_id, r]));
      return rows.map((row) => {
        const r = byId.get(row.command_id);
        // a second send of one id in the same group: the first one stored it
        if (r) byId.delete(row.command_id);
        return r ?? null;
      });
    });
  }

  /** Statements written, for the counters (each is one commit). */
  get statements(): number {
    return this.group.statements;
  }

  /** Resolves with the stored rows, or null when the command_id was stored before. */
  add(row: NewCommandRow): Promise<InsertedRow | null> {
    return this.group.add(row);
  }
}
