import type { Knex } from 'knex';
import { isoOfMs } from '../../core/iso-time.js';
import type { Logger } from '../../core/log.js';
import type { Clock } from '../../core/module.js';
import type { ModuleOutbox } from '../../core/services/outbox/service.js';
import { inJsonList } from '../../core/services/sql-lists.js';
import { run, type Statement } from '../../core/services/statement.js';
import type { CommandConfig } from './config.js';
import type { CredentialsCache } from './credentials.js';
import type { Counters, Events } from './events.js';
import type { CommandOwners } from './owners.js';

/** What the parts of one command module instance share. */
export interface Deps {
  db: Knex;
  cfg: CommandConfig;
  log: Logger;
  clock: Clock;
  events: Events;
  counters: Counters;
  creds: CredentialsCache;
  /** command id → project id, for the ownership check of uplinks (owners.ts) */
  owners: CommandOwners;
  /** Asks the relay for a pass now (a new or released outbox row is due). */
  wakeRelay(): void;
  /** The host's outbox service: terminal commands write their domain events through it (domain-events.ts). */
  outbox: ModuleOutbox;
  /** Writes the acks and results received so far (uplink.ts settle), before the relay re-publishes. */
  settleUplinks(): Promise<void>;
}

/**
 * `rows` of a knex.raw result; both drivers (pg, PGlite) answer `{ rows }`. A hot statement
 * (core/services/statement.ts) runs prepared.
 */
export async function query<T>(db: Knex, sql: string | Statement, bindings: readonly unknown[] = []): Promise<T[]> {
  if (typeof sql !== 'string') return run<T>(db, sql, bindings);
  const r = (await db.raw(sql, bindings as Knex.RawBinding[])) as { rows: T[] };
  return r.rows;
}

/** ISO 8601 text of a time in ms (core/iso-time.ts: `toISOString` without a Date each time). */
export const isoAt = isoOfMs;

/**
 * Lets timers and other mailboxes run. PGlite answers queries in promise jobs only, and the
 * mailbox awaits a handler's promise before the next event, so a burst of sends would otherwise
 * be one long job chain in which the relay's publishes (answered by another mailbox) wait.
 */
export const yieldToLoop = (): Promise<void> => new Promise((r) => setImmediate(r));

/**
 * Lock ordering, so hub instances sharing one PostgreSQL never deadlock each other: a
 * transaction that may WAIT for row locks takes them tracker rows first, then outbox rows, each
 * in command_id order (ORDER BY sits below the row-locking step, so rows lock in that order).
 * Locks taken with SKIP LOCKED never wait and may come in any order; a statement holding outbox
 * locks never waits for tracker locks. Returns each locked tracker row's status.
 */
export async function lockInOrder(trx: Knex, ids: readonly string[]): Promise<void> {
  const json = JSON.stringify(ids);
  await query(trx, `SELECT 1 FROM command_tracker WHERE ${ID_IN} ORDER BY command_id FOR UPDATE`, [json]);
  await query(trx, `SELECT 1 FROM command_outbox WHERE ${ID_IN} ORDER BY command_id FOR UPDATE`, [json]);
}

/** `command_id` is one of the ids of a JSON array parameter (looked up in its index: core/services/sql-lists.ts). */
export const ID_IN = inJsonList('command_id');

/**
 * A single-table statement's lock step, for
 * `WITH l AS ${lockCte('command_tracker', inList)} UPDATE … FROM l`: MATERIALIZED, so the rows
 * lock in command_id order before any is updated, whatever the join plan. `inList`: the list
 * condition core/services/sql-lists.ts `listStatement` hands over.
 */
export const lockCte = (table: 'command_tracker' | 'command_outbox', inList: (column: string) => string): string =>
  `MATERIALIZED (SELECT id, status FROM ${table} WHERE ${inList('command_id')} ORDER BY command_id FOR UPDATE)`;

/**
 * Both tables' lock steps inside ONE statement, for writes that change tracker and outbox rows
 * together without a transaction around them (uplink.ts): `WITH ${lockBoth(inList)}, … k AS (…
 * WHERE ${LOCKED_BOTH}) …`, `inList` the list condition core/services/sql-lists.ts `listStatement`
 * hands over. The tracker rows lock first, then the outbox rows (`lo` waits for `lt` through its
 * scalar subquery), each in command_id order, and every change that reads `k` waits for `lo`.
 * Two bindings: the JSON array of command ids, twice. `lt` keeps each locked row's command_id and
 * project_id, so the statement checks who owns an id against the rows it locked (not another read
 * of the tracker, which the planner may do as a whole-table scan); `lo` keeps each locked outbox
 * row's command_id and status, so the outbox update goes through them (`publishLocked`).
 */
export const lockBoth = (inList: (column: string) => string): string =>
  `lt AS MATERIALIZED (SELECT id, command_id, project_id FROM command_tracker WHERE ${inList('command_id')}
                                 ORDER BY command_id FOR UPDATE),
       lo AS MATERIALIZED (SELECT id, command_id, status FROM command_outbox WHERE ${inList('command_id')}
                             AND (SELECT count(*) FROM lt) >= 0 ORDER BY command_id FOR UPDATE)`;
export const LOCKED_BOTH = '(SELECT count(*) FROM lo) >= 0';

/**
 * `column` is one of the command ids the step `cte` (of the same statement) returned: a hashed
 * SubPlan, built once, never a join. The planner estimates one row for each step of a group's
 * statement (jsonb_to_recordset's 100 rows, narrowed by a two-column join), and joined two steps
 * in a nested loop that read one of them again for every row of the other: quadratic in the
 * group, 40 000 comparisons for 200 results (docs/benchmarks.md "A group's steps joined by hash, not in
 * loops"). Wrapped in `IS TRUE` so the planner keeps it a SubPlan (it turns a bare `IN` into a
 * join); the ids are never null, so it means `IN`.
 */
export const amongIds = (column: string, cte: string): string =>
  `(${column} IN (SELECT command_id FROM ${cte})) IS TRUE`;

/**
 * An ack's or a result's outbox update (`WITH ${lockBoth(…)}, …, o AS (${publishLocked('k')})`):
 * the rows `lo` locked, by primary key, that are still unpublished and whose ids `cte` returned.
 * Written against the outbox's own status, the planner could take the partial index of every
 * unpublished row (all in flight, queued and dead) as the outer side and read `cte` again for
 * each of them: 92 ms for 200 acks with 2 600 rows unpublished and the table's statistics older
 * than them. One binding: updated_at.
 */
export const publishLocked = (cte: string): string =>
  `UPDATE command_outbox o SET status = 'published', updated_at = ?::timestamptz
           FROM lo WHERE o.id = lo.id AND lo.status <> 'published' AND ${amongIds('lo.command_id', cte)}`;

const RETRYABLE = new Set(['40P01', '40001']); // deadlock_detected, serialization_failure

/** Runs `fn` again (up to 3 times) when PostgreSQL aborted it for a deadlock or a serialization failure. */
export async function retrying<T>(fn: () => Promise<T>): Promise<T> {
  for (let attempt = 1; ; attempt++) {
    try {
      return await fn();
    } catch (err) {
      if (attempt >= 3 || !RETRYABLE.has(String((err as { code?: unknown }).code))) throw err;
    }
  }
}
