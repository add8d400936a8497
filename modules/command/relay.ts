/**
 * The outbox relay (seeds/003, docs/architecture.md#the-transactional-outbox-and-its-relay). Each pass:
 *  1. rows due again after `max_attempts` publishes without an agent ack go dead, and their
 *     commands fail with error 'undeliverable';
 *  2. up to `relay_batch` due rows are claimed with FOR UPDATE SKIP LOCKED (so several hub
 *     instances share the work) and, in the same statement, attempts++ and next_attempt_at moved
 *     to now + backoff (base · 2^(attempts-1), capped). The claim commits BEFORE publishing:
 *     a crash mid-publish leaves the row due again after the backoff, never lost;
 *  3. each row is published through the bridge (BRIDGE.publish, QoS 1, answered after the
 *     broker's PUBACK); commands still pending become `sent`.
 * The row stays `pending` after a PUBACK, because a PUBACK is not delivery: only the agent's
 * command_ack (see uplink.ts) marks it `published`. Until then the same signed message (same
 * message_id, which agents de-duplicate) goes out again on the backoff schedule.
 *
 * The first attempt of a command to an online project does not wait for a pass: the send
 * writes its row already claimed (attempts 1, due again after one backoff step) and hands it to
 * `deliverSoon` (the fast lane), which publishes right after the commit. A crash in between
 * leaves a row that comes due a step later, so the relay publishes it then. That first PUBACK's
 * outcome waits in the outcome window (outcome-window.ts), and is not written when an ack is.
 */
import type { ModuleBus } from '../../core/bus.js';
import type { ModuleTimers } from '../../core/module.js';
import { forList, inJsonList, listStatement } from '../../core/services/sql-lists.js';
import { statement } from '../../core/services/statement.js';
import { BRIDGE, type MqttPublishRequest } from '../mqtt-bridge/contract/topics.js';
import { type Deps, isoAt, lockCte, lockInOrder, query, retrying } from './deps.js';
import { terminalEvent } from './domain-events.js';
import { OutcomeWindow } from './outcome-window.js';
import { TRACKER_COLUMNS, type TrackerRow } from './rows.js';

/** An outbox row taken for one publish attempt. */
export interface Claimed {
  id: string | number;
  command_id: string;
  project_id: string;
  topic: string;
  payload: string;
  attempts: number;
  had_error: boolean;
  /** The send path's first attempt (deliverSoon): its tracker row was written with it counted. */
  fast?: boolean;
}

const STOP_WAIT_MS = 3_000;
const WAKE_DELAY_MS = 2;
const T_COLS = TRACKER_COLUMNS.split(', ')
  .map((c) => `t.${c}`)
  .join(', ');

export class Relay {
  private timer?: NodeJS.Timeout;
  private running?: Promise<boolean>;
  private again = false;
  private stopped = false;
  private lastDeadCheck = 0;
  private timerDue = 0;
  /** Publishes under way (passes and the send path's fast lane), awaited on stop. */
  private readonly inFlight = new Set<Promise<void>>();
  /** Fast-lane rows waiting for the end of this turn (deliverSoon). */
  private fastLane: Claimed[] = [];
  /** Sends' first PUBACKs wait here for their outcome write (outcome-window.ts); the uplink writer shares it. */
  readonly outcomes: OutcomeWindow;

  constructor(
    private readonly d: Deps,
    private readonly bus: ModuleBus,
    private readonly timers: ModuleTimers,
  ) {
    this.outcomes = new OutcomeWindow({
      delayMs: d.cfg.publish_outcome_delay_ms,
      counters: d.counters,
      write: (rows, pubackAt) => this.writeWindow(rows, pubackAt),
      track: (run) => this.track(run),
    });
  }

  start(): void {
    this.schedule(0);
  }

  /**
   * Runs a pass within WAKE_DELAY_MS, or right after the one in progress. (With PGlite a burst
   * of sends is one chain of promise jobs in which timers get no turn; send.ts yields to the
   * event loop every few milliseconds so this timer, and the bridge's mailbox, do.)
   */
  wake(): void {
    if (this.stopped) return;
    if (this.running) {
      this.again = true;
      return;
    }
    // A short pause lets a burst of sends share one pass; an earlier timer is kept, never pushed back.
    if (this.timer && this.timerDue <= Date.now() + WAKE_DELAY_MS) return;
    this.schedule(WAKE_DELAY_MS);
  }

  /** Stops polling and waits (bounded) for the pass in progress; its rows are safe either way. */
  async stop(): Promise<void> {
    this.stopped = true;
    if (this.timer) this.timers.clear(this.timer);
    this.timer = undefined;
    this.outcomes.stop();
    const pending = [this.running, ...this.inFlight].filter((p) => p !== undefined);
    if (pending.length === 0) return;
    let t: NodeJS.Timeout | undefined;
    await Promise.race([Promise.allSettled(pending), new Promise((r) => (t = setTimeout(r, STOP_WAIT_MS)))]);
    clearTimeout(t);
  }

  private schedule(ms: number): void {
    if (this.stopped) return;
    if (this.timer) this.timers.clear(this.timer);
    this.timerDue = Date.now() + ms;
    this.timer = this.timers.setTimeout(() => this.tick(), ms);
  }

  private tick(): void {
    this.timer = undefined;
    if (this.stopped || this.running) return;
    this.again = false;
    this.running = this.pass().catch((err) => {
      this.d.log.warn({ err }, 'outbox relay pass failed; retrying at the next poll');
      return false;
    });
    void this.running.then((full) => {
      this.running = undefined;
      if (this.stopped) return;
      if (full || this.again) this.tick();
      else this.schedule(this.d.cfg.relay_interval_ms);
    });
  }

  /**
   * Rows due again after max_attempts publishes without an ack go dead and their commands fail
   * 'undeliverable'. Tracker rows first (SKIP LOCKED), then their outbox rows in order (lockInOrder).
   */
  private async markDead(now: number): Promise<TrackerRow[]> {
    const { cfg, db } = this.d;
    const at = isoAt(now);
    this.lastDeadCheck = now;
    const [due] = await query<{ any: boolean }>(
      db,
      `SELECT EXISTS (SELECT 1 FROM command_outbox
                       WHERE status = 'pending' AND next_attempt_at <= ?::timestamptz AND attempts >= ?) AS any`,
      [at, cfg.max_attempts],
    );
    if (!due.any) return [];
    const deadRows = await retrying(() =>
      db.transaction(async (trx) => {
        const rows = await query<TrackerRow>(
          trx,
          `UPDATE command_tracker t
              SET status = CASE WHEN t.status IN ('pending', 'sent') THEN 'failed' ELSE t.status END,
                  error = CASE WHEN t.status IN ('pending', 'sent') THEN 'undeliverable' ELSE t.error END,
                  completed_at = CASE WHEN t.status IN ('pending', 'sent') THEN ?::timestamptz ELSE t.completed_at END,
                  updated_at = ?::timestamptz
            WHERE t.id IN (SELECT t2.id FROM command_outbox o JOIN command_tracker t2 ON t2.command_id = o.command_id
                            WHERE o.status = 'pending' AND o.next_attempt_at <= ?::timestamptz AND o.attempts >= ?
                            ORDER BY o.next_attempt_at LIMIT ? FOR UPDATE OF t2 SKIP LOCKED)
           RETURNING ${T_COLS}`,
          [at, at, at, cfg.max_attempts, cfg.relay_batch],
        );
        if (rows.length === 0) return rows;
        const ids = rows.map((r) => r.command_id);
        await lockInOrder(trx, ids);
        await query(
          trx,
          `UPDATE command_outbox o SET status = 'dead', updated_at = ?::timestamptz,
                  last_error = 'no command_ack after ' || o.attempts || ' publishes'
                               || COALESCE('; last error: ' || o.last_error, '')
            WHERE ${inJsonList('o.command_id')} AND o.status = 'pending'`,
          [at, JSON.stringify(ids)],
        );
        // the commands failed here are terminal: their command.failed events commit with them
        // (a late ack can still bring one back; its later state then has its own event)
        const events = rows
          .filter(isUndeliverable)
          .map((r) => terminalEvent(r, null))
          .filter((e) => e !== null);
        if (events.length > 0) await this.d.outbox.addMany(trx, events);
        return rows;
      }),
    );
    const failed = deadRows.filter(isUndeliverable);
    for (const row of failed) {
      this.d.counters.dead++;
      this.d.log.warn(
        { project_id: row.project_id, command_id: row.command_id, attempts: row.attempts },
        'command undeliverable: no agent ack after the last publish; outbox row is dead',
      );
      this.d.events.state(row);
    }
    return deadRows;
  }

  /**
   * After the publishes: trackers still pending become `sent` (all get the attempt count);
   * outbox rows keep the last publish error, or lose it after a success. One transaction.
   */
  private async recordOutcomes(
    claimed: Claimed[],
    ok: Map<string, number>,
    failed: { command_id: string; err: string }[],
  ): Promise<TrackerRow[]> {
    const at = isoAt(this.d.clock.now());
    const errors = new Map(failed.map((f) => [f.command_id, f.err]));
    const v = claimed.map((c) => {
      const pubackAt = ok.get(c.command_id);
      return {
        command_id: c.command_id,
        attempts: c.attempts,
        ok: pubackAt !== undefined,
        sent: pubackAt === undefined ? null : isoAt(pubackAt),
        err: errors.get(c.command_id) ?? null,
      };
    });
    const touchOutbox = v.filter((x, i) => x.err !== null || claimed[i].had_error);
    // Two single-table statements, each locking its rows in order (deps.ts): neither holds one
    // table's locks while waiting for the other's.
    // sent_at is the first PUBACK, as the relay saw it, not the time of this write (which comes
    // after the whole batch): an agent's ack that was recorded first (sent_at = its arrival) or
    // an earlier attempt keeps the earlier moment, and nothing is sent after it was acked.
    const rows = await retrying(() =>
      query<TrackerRow & { was: string }>(this.d.db, forList(OUTCOME_SQL, v.length), [
        JSON.stringify(v.map((x) => x.command_id)),
        at,
        JSON.stringify(v),
      ]),
    );
    if (touchOutbox.length > 0) {
      await retrying(() =>
        query(this.d.db, forList(OUTBOX_ERROR_SQL, touchOutbox.length), [
          JSON.stringify(touchOutbox.map((x) => x.command_id)),
          at,
          JSON.stringify(touchOutbox),
        ]),
      );
    }
    return rows.filter((r) => r.status === 'sent' && r.was === 'pending');
  }

  /** One pass; true when the batch was full (more rows may be due at once). */
  private async pass(): Promise<boolean> {
    const { cfg, db, clock } = this.d;
    const now = clock.now();
    const at = isoAt(now);

    // Going dead is never urgent: look at most once per poll period, not on every wake.
    const deadRows = now - this.lastDeadCheck < cfg.relay_interval_ms ? [] : await this.markDead(now);

    // acks already received but not yet written would otherwise look like silence
    await this.d.settleUplinks();
    const claimed = await query<Claimed>(db, CLAIM_SQL, [
      at,
      at,
      cfg.retry_base_ms,
      cfg.retry_max_ms,
      at,
      cfg.max_attempts,
      cfg.relay_batch,
    ]);
    if (claimed.length === 0) return deadRows.length === cfg.relay_batch;
    await this.deliver(claimed);
    return claimed.length === cfg.relay_batch;
  }

  /**
   * The fast lane's entry: rows handed in before the microtask queue drains (the sends of one
   * group commit, whose continuations run back to back) are published together, their outcomes
   * recorded by the outcome window. A microtask, not the next turn of the event loop: the publish
   * request reaches the bridge's mailbox before whatever else the sends scheduled for that turn
   * (their audit records' INSERT, say, whose write to PostgreSQL could hand the server the CPU
   * first), so the bridge publishes in this turn. HTTP request to MQTT publish, strace of the
   * sync suite, medians of about 500 commands: 3.85 and 4.14 ms with setImmediate, 3.12 and 3.68 ms
   * with the microtask (strace slows both alike; the reply-to-answer leg, unchanged, 3.4–3.9 ms).
   */
  deliverSoon(row: Claimed): void {
    this.fastLane.push(row);
    if (this.fastLane.length > 1) return;
    queueMicrotask(() => {
      const rows = this.fastLane.splice(0);
      // stopping: the rows are stored and claimed only until next_attempt_at; the relay of the
      // next start (or another instance) publishes them then
      if (rows.length > 0 && !this.stopped) void this.deliver(rows);
    });
  }

  /**
   * Publishes claimed rows (attempts already counted, next_attempt_at already moved on) and
   * records the outcome. Also the send path's fast lane (send.ts): rows written with their first
   * attempt claimed go out at once instead of waiting for a pass; if this process dies before,
   * the relay publishes them when next_attempt_at comes.
   */
  deliver(claimed: Claimed[]): Promise<void> {
    return this.track(
      this.publishAndRecord(claimed).catch((err: unknown) => {
        // the rows stay due at next_attempt_at: the relay publishes them again then
        this.d.log.warn({ err, rows: claimed.length }, 'recording publish outcomes failed; the relay retries');
      }),
    );
  }

  /** Keeps `run` in the set a stop waits for. */
  private track(run: Promise<void>): Promise<void> {
    this.inFlight.add(run);
    void run.finally(() => this.inFlight.delete(run));
    return run;
  }

  /** The outcomes the window ended with (those no ack wrote meanwhile). */
  private async writeWindow(rows: Claimed[], pubackAt: Map<string, number>): Promise<void> {
    try {
      for (const row of await this.recordOutcomes(rows, pubackAt, [])) this.d.events.state(row);
    } catch (err) {
      // only the tracker's `sent` is missing: the outbox rows stay due, and an ack writes it all
      this.d.log.warn({ err, rows: rows.length }, 'recording publish outcomes failed; the acks will record them');
    }
  }

  private async publishAndRecord(claimed: Claimed[]): Promise<void> {
    const cfg = this.d.cfg;
    const replies = await Promise.all(
      claimed.map((row) => {
        const req: MqttPublishRequest = { topic: row.topic, payload: row.payload, qos: 1 };
        return this.bus.request(BRIDGE.publish, req, { timeoutMs: cfg.publish_timeout_ms }).then(
          () => ({ at: this.d.clock.now() }),
          (err: unknown) => ({ err: (err instanceof Error ? err.message : String(err)) || 'publish failed' }),
        );
      }),
    );
    /** command_id → when its PUBACK came back. */
    const ok = new Map<string, number>();
    const failed: { command_id: string; err: string }[] = [];
    replies.forEach((o, i) => {
      if ('at' in o) ok.set(claimed[i].command_id, o.at);
      else failed.push({ command_id: claimed[i].command_id, err: o.err.slice(0, 1000) });
    });
    this.d.counters.published += ok.size;
    this.d.counters.publish_errors += failed.length;
    // a send's first publish, PUBACKed: its outcome waits for the window
    const now: Claimed[] = [];
    for (const c of claimed) {
      const at = ok.get(c.command_id);
      const first = c.fast && c.attempts === 1 && !c.had_error && at !== undefined;
      if (!first || !this.outcomes.hold(c, at)) now.push(c);
    }
    const sent = now.length > 0 ? await this.recordOutcomes(now, ok, failed) : [];
    for (const row of sent) this.d.events.state(row);
    if (failed.length > 0) {
      this.d.log.warn(
        { failed: failed.length, of: claimed.length, first_error: failed[0].err, command_id: failed[0].command_id },
        'outbox publish failed; will retry on the backoff schedule',
      );
    }
    for (const row of claimed) {
      if (row.attempts > 1) {
        this.d.log.debug(
          { project_id: row.project_id, command_id: row.command_id, attempts: row.attempts },
          're-published',
        );
      }
    }
  }
}

// The relay's hot statements (core/services/statement.ts: prepared once per session).

/**
 * Claims due outbox rows for one publish attempt each (see the header, step 2). Exported for its
 * plan test (test/modules/command/statement-plans.test.ts).
 */
export const CLAIM_SQL = statement(`WITH c AS (
         UPDATE command_outbox o SET attempts = o.attempts + 1, updated_at = ?::timestamptz,
                next_attempt_at = ?::timestamptz
                  + LEAST(?::float8 * power(2::float8, LEAST(o.attempts, 40)), ?::float8) * interval '1 millisecond'
          WHERE o.id IN (SELECT id FROM command_outbox
                          WHERE status = 'pending' AND next_attempt_at <= ?::timestamptz AND attempts < ?
                          ORDER BY next_attempt_at, id LIMIT ? FOR UPDATE SKIP LOCKED)
         RETURNING o.id, o.command_id, o.project_id, o.topic, o.payload, o.attempts, o.last_error IS NOT NULL AS had_error
       )
       SELECT * FROM c ORDER BY id`);

/** Publish outcomes on the tracker: attempts, `sent` on a PUBACK (recordOutcomes). */
export const OUTCOME_SQL = listStatement(
  (inList) => `WITH l AS ${lockCte('command_tracker', inList)}
         UPDATE command_tracker t
            SET attempts = GREATEST(t.attempts, v.attempts),
                status = CASE WHEN v.ok AND t.status = 'pending' THEN 'sent' ELSE t.status END,
                sent_at = CASE WHEN v.ok THEN LEAST(t.sent_at, v.sent, t.acked_at) ELSE t.sent_at END,
                updated_at = ?::timestamptz
           FROM l, jsonb_to_recordset(?::jsonb) AS v(command_id text, attempts int, ok boolean, sent timestamptz)
          WHERE t.id = l.id AND t.command_id = v.command_id
         RETURNING ${T_COLS}, l.status AS was`,
  { timesAsText: true },
);

/** A failed publish's error on its outbox row, or a success clearing an earlier one (recordOutcomes). */
export const OUTBOX_ERROR_SQL = listStatement(
  (inList) => `WITH l AS ${lockCte('command_outbox', inList)}
           UPDATE command_outbox o SET last_error = v.err, updated_at = ?::timestamptz
             FROM l, jsonb_to_recordset(?::jsonb) AS v(command_id text, err text)
            WHERE o.id = l.id AND o.command_id = v.command_id`,
);

/** A row this relay just failed for want of an agent ack. */
function isUndeliverable(r: TrackerRow): boolean {
  return r.status === 'failed' && r.error === 'undeliverable';
}
