/**
 * The timeout sweeper, every `sweep_interval_ms` (claims with FOR UPDATE SKIP LOCKED, so several
 * hub instances can sweep one database):
 *  - live commands (pending, sent, acked) past timeout_at become `timeout`; an outbox row still
 *    trying to deliver one goes dead (the caller gave up; replay revives it);
 *  - queued commands past queue_expires_at fail with 'expired before the project came online';
 *  - every RECHECK_EVERY passes, projects with queued commands are looked up: one that is online
 *    (its online event came while no command module was running) gets its commands released;
 *  - scheduled commands whose schedule_at has come start (scheduler.ts);
 *  - every idempotency_sweep_interval_ms, idempotency keys older than idempotency_retention_ms
 *    are deleted (idempotency.ts; the commands they named stay).
 */
import type { ModuleTimers } from '../../core/module.js';
import { type Deps, ID_IN, isoAt, lockInOrder, query, retrying } from './deps.js';
import { terminalEvent } from './domain-events.js';
import { IdempotencyKeys } from './idempotency.js';
import type { Reasker } from './reask.js';
import { LIVE_SQL, TRACKER_COLUMNS, type TrackerRow } from './rows.js';
import type { Scheduler } from './scheduler.js';
import type { Sender } from './send.js';

const BATCH = 500;
const RECHECK_EVERY = 20;
/** How often the re-ask pass looks for acked commands without a result. */
const REASK_EVERY_MS = 2_000;
export const EXPIRED = 'expired before the project came online';
const T_COLS = TRACKER_COLUMNS.split(', ')
  .map((c) => `t.${c}`)
  .join(', ');

export class Sweeper {
  private timer?: NodeJS.Timeout;
  private running?: Promise<void>;
  private stopped = false;
  private passes = 0;
  private lastReask = 0;
  private readonly keys: IdempotencyKeys;
  /** When the idempotency keys were last swept (module clock); the first pass sweeps them. */
  private keysSweptAt = Number.NEGATIVE_INFINITY;

  constructor(
    private readonly d: Deps,
    private readonly timers: ModuleTimers,
    private readonly sender: Sender,
    private readonly reasker?: Reasker,
    private readonly scheduler?: Scheduler,
  ) {
    this.keys = new IdempotencyKeys(d);
  }

  start(): void {
    this.schedule(0);
  }

  async stop(): Promise<void> {
    this.stopped = true;
    if (this.timer) this.timers.clear(this.timer);
    await this.running;
  }

  private schedule(ms: number): void {
    if (this.stopped) return;
    this.timer = this.timers.setTimeout(() => {
      this.timer = undefined;
      this.running = this.pass()
        .catch((err) => this.d.log.warn({ err }, 'command sweep failed; retrying at the next one'))
        .then((more) => {
          this.running = undefined;
          this.schedule(more === true ? 0 : this.d.cfg.sweep_interval_ms);
        });
    }, ms);
  }

  /** One sweep; true when a batch was full. */
  async pass(): Promise<boolean> {
    // scheduled commands first: one due now then meets this same pass's timeouts with its new timeout_at
    const moreScheduled = this.scheduler ? await this.scheduler.pass() : false;
    const now = this.d.clock.now();
    const at = isoAt(now);
    // A cheap look first: most sweeps find nothing and need no transaction.
    const [due] = await query<{ timeouts: boolean; expiries: boolean }>(
      this.d.db,
      `SELECT EXISTS (SELECT 1 FROM command_tracker WHERE status IN ${LIVE_SQL} AND timeout_at <= ?::timestamptz) AS timeouts,
              EXISTS (SELECT 1 FROM command_outbox WHERE status = 'waiting' AND next_attempt_at <= ?::timestamptz) AS expiries`,
      [at, at],
    );
    // Tracker rows first with SKIP LOCKED, then their outbox rows in order (deps.ts lockInOrder).
    const timedOut = !due.timeouts
      ? []
      : await this.inTx(
          `UPDATE command_tracker t SET status = 'timeout', updated_at = ?::timestamptz,
              error = COALESCE(t.error, 'no result within ' || t.timeout_ms || ' ms')
        WHERE t.id IN (SELECT id FROM command_tracker WHERE status IN ${LIVE_SQL} AND timeout_at <= ?::timestamptz
                        ORDER BY timeout_at LIMIT ${BATCH} FOR UPDATE SKIP LOCKED)
       RETURNING ${T_COLS}`,
          [at, at],
          `UPDATE command_outbox SET status = 'dead', updated_at = ?::timestamptz,
              last_error = 'command timed out before the agent acknowledged it'
        WHERE ${ID_IN} AND status IN ('pending', 'waiting')`,
          at,
          (rows) => rows,
        );
    for (const row of timedOut) {
      this.d.log.info(
        { project_id: row.project_id, command_id: row.command_id, was_acked: row.acked_at !== null },
        'command timed out',
      );
      this.d.events.state(row);
    }

    const queued = !due.expiries
      ? []
      : await this.inTx(
          `UPDATE command_tracker t
          SET status = CASE WHEN t.status = 'pending' THEN 'failed' ELSE t.status END,
              error = CASE WHEN t.status = 'pending' THEN '${EXPIRED}' ELSE t.error END,
              completed_at = CASE WHEN t.status = 'pending' THEN ?::timestamptz ELSE t.completed_at END,
              updated_at = ?::timestamptz
        WHERE t.id IN (SELECT t2.id FROM command_outbox o JOIN command_tracker t2 ON t2.command_id = o.command_id
                        WHERE o.status = 'waiting' AND o.next_attempt_at <= ?::timestamptz
                        ORDER BY o.next_attempt_at LIMIT ${BATCH} FOR UPDATE OF t2 SKIP LOCKED)
       RETURNING ${T_COLS}`,
          [at, at, at],
          `UPDATE command_outbox SET status = 'dead', last_error = '${EXPIRED}', updated_at = ?::timestamptz
        WHERE ${ID_IN} AND status = 'waiting'`,
          at,
          (rows) => rows.filter((r) => r.status === 'failed' && r.error === EXPIRED),
        );
    const expired = queued.filter((r) => r.status === 'failed' && r.error === EXPIRED);
    for (const row of expired) {
      this.d.counters.expired++;
      this.d.log.info({ project_id: row.project_id, command_id: row.command_id }, 'queued command expired');
      this.d.events.state(row);
    }

    if (this.passes++ % RECHECK_EVERY === 0) await this.recheckWaiting();
    if (this.reasker && now - this.lastReask >= REASK_EVERY_MS) {
      this.lastReask = now;
      await this.reasker.pass();
    }
    if (now - this.keysSweptAt >= this.d.cfg.idempotency_sweep_interval_ms) {
      this.keysSweptAt = now;
      await this.keys.sweep();
    }
    return moreScheduled || timedOut.length === BATCH || queued.length === BATCH;
  }

  /** The tracker statement, then the outbox statement for the command ids it returned, in one transaction. */
  private inTx(
    trackerSql: string,
    args: unknown[],
    outboxSql: string,
    at: string,
    /** The rows that became terminal: their domain events commit in this transaction (domain-events.ts). */
    terminal: (rows: TrackerRow[]) => TrackerRow[],
  ): Promise<TrackerRow[]> {
    return retrying(() =>
      this.d.db.transaction(async (trx) => {
        const rows = await query<TrackerRow>(trx, trackerSql, args);
        if (rows.length === 0) return rows;
        const ids = rows.map((r) => r.command_id);
        await lockInOrder(trx, ids);
        await query(trx, outboxSql, [at, JSON.stringify(ids)]);
        const events = terminal(rows)
          .map((r) => terminalEvent(r, null))
          .filter((e) => e !== null);
        if (events.length > 0) await this.d.outbox.addMany(trx, events);
        return rows;
      }),
    );
  }

  private async recheckWaiting(): Promise<void> {
    const projects = await query<{ project_id: string }>(
      this.d.db,
      `SELECT DISTINCT project_id FROM command_outbox WHERE status = 'waiting' LIMIT 1000`,
    );
    for (const { project_id } of projects) {
      if (this.stopped) return;
      try {
        const creds = await this.d.creds.get(project_id);
        if (creds.enabled && creds.state === 'online') await this.sender.release(project_id);
      } catch (err) {
        this.d.log.debug({ err, project_id }, 'could not recheck a project with queued commands');
      }
    }
  }
}
