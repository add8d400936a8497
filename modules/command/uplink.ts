/**
 * Agent uplinks for commands: command_ack, exec_result (stored) and log_result (streamed only).
 *
 * Acks and results are grouped (docs/architecture.md#performance-decisions: one INSERT per commit ≈ 2 k rows/s, 500-row
 * statements ≈ 44 k rows/s): each is queued and written with the others of the same tick in ONE
 * statement per kind: on the next turn of the event loop (what arrived meanwhile joins; what
 * arrives while a group is written forms the next), or `flush_interval_ms` after the first when
 * that is set, or at once when `flush_max` wait.
 * Acks of a group are applied before its results, and a result completes a command whether or
 * not its ack came first; an ack after the result only fills in acked_at.
 *
 * Results are idempotent by command_id (QoS 1 redelivers): INSERT … ON CONFLICT DO NOTHING.
 * A result for a command already `timeout` or `cancelled` is stored, never dropped: the tracker
 * keeps that status and gets late_result = true (COMMAND.get then shows status 'timeout' with a
 * result and late_result true). A result or ack whose command_id is unknown, or belongs to
 * another project than the agent that sent it, is counted and logged, not stored; a log chunk
 * is published only for a command of the project that sent it (owners.ts), else counted.
 * A command that had gone `failed` as 'undeliverable' (no ack seen) was delivered after all
 * when its ack or result shows up, so it resumes (acked / completed / failed) like a live one.
 *
 * Durability: the bridge acknowledges an ack or a result to the broker only when the promise its
 * handler returned resolves, i.e. after the statement that wrote it committed (or after it was
 * found to name an unknown command: dropping is then the decision). A write that fails because
 * the database is unreachable is retried, with a capped backoff, for as long as it takes; the
 * broker keeps the unacknowledged copy meanwhile, so a hub killed during the outage loses
 * nothing. A write that fails for the item itself (a data error PostgreSQL will refuse again) is
 * given up after MAX_TRIES and counted. stop() writes what it can and refuses the rest (not
 * acknowledged: the next session gets them again).
 */
import { HubError } from '../../core/errors.js';
import type { ModuleTimers } from '../../core/module.js';
import { forList, listStatement } from '../../core/services/sql-lists.js';
import type { UplinkEvent } from '../mqtt-bridge/contract/topics.js';
import type { UplinkHandlers } from '../mqtt-bridge/contract/uplink-routes.js';
import { isUuid } from '../shared/contract/schemas.js';
import type { CommandAckPayload, DataMessage, ExecResultPayload, LogResultPayload } from '../shared/protocol.js';
import type { CommandResultView } from './contract/topics.js';
import { amongIds, type Deps, isoAt, LOCKED_BOTH, lockBoth, publishLocked, query, retrying } from './deps.js';
import { terminalEvent } from './domain-events.js';
import type { OutcomeWindow } from './outcome-window.js';
import { TRACKER_COLUMNS, type TrackerRow } from './rows.js';

/** Told when an item's fate is known: written (or deliberately dropped), or refused (not written). */
interface Settle {
  done?: (written: boolean) => void;
}
interface AckItem extends Settle {
  kind: 'ack';
  command_id: string;
  project_id: string;
  at: number;
  tries: number;
}
interface ResultItem extends Settle {
  kind: 'result';
  project_id: string;
  r: ExecResultPayload;
  received_at: number;
  tries: number;
}
type Item = AckItem | ResultItem;

/** Past this many queued items a handler waits for a flush (backpressure into the mailbox). */
const HIGH_WATER = 20_000;
const RETRY_DELAY_MS = 1_000;
/** Backoff cap while the database is unreachable. */
const RETRY_MAX_MS = 5_000;
/** With group commit (flush_interval_ms 0), how long acks wait for a result to share a write with. */
const ACK_WAIT_MS = 5;
/** Tries for an item whose own data the database refuses (not an outage). */
const MAX_TRIES = 5;
/** How long stop() keeps trying to write what is queued. */
const CLOSE_WAIT_MS = 3_000;
/** SQLSTATE classes that blame the statement's data, not the connection: 22 data exception, 23 integrity. */
const DATA_ERROR = /^2[23]/;
// The tracker as it is before a statement changes it ('undeliverable' failures count as live).
const REVIVABLE = `(t.status IN ('pending', 'sent', 'acked') OR (t.status = 'failed' AND t.error = 'undeliverable'))`;
const U_COLS = TRACKER_COLUMNS.split(', ')
  .map((c) => `u.${c}`)
  .join(', ');

const LONE_SURROGATE = /[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/g;
/** PostgreSQL text holds neither NUL nor lone surrogates; one bad byte must not sink a whole group. */
function clean(s: unknown): string {
  return typeof s === 'string' ? s.replaceAll('\u0000', '').replace(LONE_SURROGATE, '\uFFFD') : '';
}

/**
 * For the end-to-end test only: with HUB_CRASH_POINT=command.before_result_write the process
 * kills itself with SIGKILL when it is about to write a result it received, the moment that
 * durable-before-acknowledged exists for (test/regressions/result-survives-hub-kill).
 */
export const CRASH_BEFORE_RESULT_WRITE = 'command.before_result_write';

const stopping = (): HubError =>
  new HubError('BUS_ERR_CLOSED', 'the command module is stopping; the uplink was not written');

const receivedAt = (ev: UplinkEvent<DataMessage>): number =>
  Number.isSafeInteger(ev.received_at) ? ev.received_at : Date.now();

/** Agent times are its own ms; outside what timestamptz holds they stay only in the result row. */
function tsOrNull(msVal: number): string | null {
  return Number.isSafeInteger(msVal) && msVal >= 0 && msVal < 253_402_300_800_000 ? isoAt(msVal) : null;
}

export class Uplinks {
  private queue: Item[] = [];
  private timer?: NodeJS.Timeout;
  /** A flush asked for in a microtask (kick), not yet started; false cancels it. */
  private soon = false;
  /** Results in the queue: they go at once, while acks alone may wait for one. */
  private queuedResults = 0;
  private flushing?: Promise<void>;
  private waiters: Array<() => void> = [];
  private delayed = false;
  private closed = false;
  private lastForeignWarn = 0;

  /** @param outcomes the publish outcome window: an ack's write takes its PUBACK time and tells it the ack is written */
  constructor(
    private readonly d: Deps,
    private readonly timers: ModuleTimers,
    private readonly outcomes: OutcomeWindow,
  ) {}

  /**
   * One handler per uplink type the command module owns in the uplink table (index.ts subscribes
   * them with subscribeUplinks); the compiler refuses a map that misses one.
   */
  readonly handlers = {
    command_ack: (ev) => this.onAck(ev),
    log_result: (ev) => this.onLog(ev),
    exec_result: (ev) => this.onResult(ev),
  } satisfies UplinkHandlers<'command'>;

  // The bridge hands over parsed, schema-checked uplinks; these guards only keep a stray
  // malformed event on the bus from throwing in here (counted as malformed_uplinks).

  /** Resolves once the ack is written (the bridge then acknowledges it); rejects when it was not. */
  onAck = (ev: UplinkEvent<DataMessage>): void | Promise<void> => {
    const p = this.payload<CommandAckPayload>(ev);
    if (!p) return;
    const commandId = p.command_id.toLowerCase();
    if (this.foreign(ev, commandId, 'command_ack')) return;
    return this.pushSettled({
      kind: 'ack',
      command_id: commandId,
      project_id: ev.msg.project_id,
      at: receivedAt(ev),
      tries: 0,
    });
  };

  /** Resolves once the result is written (the bridge then acknowledges it); rejects when it was not. */
  onResult = (ev: UplinkEvent<DataMessage>): void | Promise<void> => {
    const r = this.payload<ExecResultPayload>(ev);
    if (!r || typeof r.status !== 'string') return;
    if (this.foreign(ev, r.command_id.toLowerCase(), 'exec_result')) return;
    return this.pushSettled({
      kind: 'result',
      project_id: ev.msg.project_id,
      r,
      received_at: receivedAt(ev),
      tries: 0,
    });
  };

  /**
   * Log chunks are not stored, only published: the command must exist and belong to the project
   * that sent the chunk, or the chunk would reach another project's watchers (or name a command
   * that exists nowhere). Answered from memory when the command is known (owners.ts), else after
   * one shared lookup; the mailbox keeps the order of chunks either way.
   */
  onLog = (ev: UplinkEvent<DataMessage>): void | Promise<void> => {
    const p = this.payload<LogResultPayload>(ev);
    if (!p) return;
    const commandId = p.command_id.toLowerCase();
    const projectId = ev.msg.project_id;
    const emit = (owner: string | null): void => {
      if (owner === null) {
        this.d.counters.unknown_logs++;
        this.d.log.debug({ command_id: commandId, project_id: projectId }, 'log_result for an unknown command ignored');
        return;
      }
      if (owner !== projectId) {
        this.refuseForeign(commandId, projectId, owner, 'log_result');
        return;
      }
      this.d.events.log(projectId, commandId, p.seq, clean(p.content));
    };
    const owner = this.d.owners.ownerOf(commandId);
    if (owner instanceof Promise) return owner.then(emit);
    emit(owner);
  };

  /**
   * Acks and results are checked against the tracker by their statements (a row of another
   * project is `known = false`); when memory already knows the command belongs to another
   * project, the uplink is refused here, before it costs a write.
   */
  private foreign(ev: UplinkEvent<DataMessage>, commandId: string, type: string): boolean {
    const owner = this.d.owners.cached(commandId);
    if (typeof owner !== 'string' || owner === ev.msg.project_id) return false;
    this.refuseForeign(commandId, ev.msg.project_id, owner, type);
    return true;
  }

  private refuseForeign(commandId: string, projectId: string, owner: string, type: string): void {
    this.d.counters.foreign_uplinks++;
    // a hostile agent can send thousands a second: one warning a second, the rest at debug (all counted)
    const now = Date.now();
    const loud = now - this.lastForeignWarn >= 1_000;
    if (loud) this.lastForeignWarn = now;
    this.d.log[loud ? 'warn' : 'debug'](
      { command_id: commandId, project_id: projectId, owner_project_id: owner, data_type: type },
      "uplink names another project's command; refused",
    );
  }

  private payload<P extends { command_id: string }>(ev: UplinkEvent<DataMessage>): P | null {
    const msg = ev?.msg;
    const p = msg?.payload as P | undefined;
    if (typeof msg?.project_id === 'string' && isUuid(p?.command_id)) return p;
    this.d.counters.malformed_uplinks++;
    this.d.log.debug({ topic: ev?.topic }, 'malformed command uplink ignored');
    return null;
  }

  get queued(): number {
    return this.queue.length;
  }

  /** The PUBACK time of the command's first publish while the outcome window holds it (it is then not written). */
  private pubackAt(commandId: string): string | null {
    const at = this.outcomes.pubackAt(commandId);
    return at === undefined ? null : isoAt(at);
  }

  private pushSettled(item: Item): Promise<void> {
    if (this.closed) return Promise.reject(stopping());
    return new Promise<void>((resolve, reject) => {
      item.done = (written) => (written ? resolve() : reject(stopping()));
      // no high-water wait: the answer itself waits for the write, and the mailbox runs at most
      // UPLINK_CONCURRENCY of these at once (index.ts), which bounds the queue
      this.enqueue(item);
      this.kick();
    });
  }

  private push(item: Item): void | Promise<void> {
    this.enqueue(item);
    this.kick();
    if (this.queue.length >= HIGH_WATER) return new Promise((r) => this.waiters.push(r));
  }

  private kick(): void {
    if (this.flushing || this.closed) return; // the running flush looks again when it ends
    if (this.queue.length >= this.d.cfg.flush_max && !this.delayed) {
      if (this.timer) this.timers.clear(this.timer);
      this.timer = undefined;
      void this.startFlush();
      return;
    }
    if (this.queue.length === 0) return;
    if (this.timer && this.queuedResults > 0 && !this.delayed && this.d.cfg.flush_interval_ms === 0) {
      // a result is waited for (a sync caller): it goes now, and the acks waiting go with it
      this.timers.clear(this.timer);
      this.timer = undefined;
    }
    if (!this.timer && !this.soon) {
      // Acks alone can wait a little: a result usually follows within a millisecond or two, and
      // both then share one transaction; a redelivery would come a whole backoff step later.
      const wait = this.delayed
        ? this.retryDelay
        : this.d.cfg.flush_interval_ms === 0 && this.queuedResults === 0
          ? ACK_WAIT_MS
          : this.d.cfg.flush_interval_ms;
      if (wait === 0) {
        // group commit without a timer: what the mailbox hands in before the microtask queue
        // drains joins, what arrives while the statement runs forms the next group. A microtask,
        // not the next turn: a sync caller's result goes to PostgreSQL before whatever else is
        // ready in this turn is read (as the send's fast lane, relay.ts deliverSoon)
        this.soon = true;
        queueMicrotask(() => {
          if (!this.soon) return;
          this.soon = false;
          if (!this.closed) void this.startFlush();
        });
        return;
      }
      this.timer = this.timers.setTimeout(() => {
        this.timer = undefined;
        void this.startFlush();
      }, wait);
    }
  }

  /**
   * Writes what is queued (bounded by `ms`), then refuses the rest: not acknowledged to the
   * broker, so the next session writes them. After it nothing schedules another flush.
   */
  async close(ms = CLOSE_WAIT_MS): Promise<void> {
    let timer: NodeJS.Timeout | undefined;
    const drained = await Promise.race([
      this.drain().then(() => true),
      new Promise<boolean>((r) => (timer = setTimeout(() => r(false), ms))),
    ]);
    clearTimeout(timer);
    this.closed = true;
    if (!drained) {
      const left = this.queue.splice(0);
      this.queuedResults = 0;
      for (const it of left) it.done?.(false);
      if (left.length > 0) {
        this.d.log.warn(
          { items: left.length },
          'command uplinks not written before stop; the broker delivers them again',
        );
      }
    }
    if (this.timer) this.timers.clear(this.timer);
    this.timer = undefined;
    this.soon = false;
  }

  /**
   * Writes what has arrived until now (not what arrives meanwhile, so it ends under load). The
   * relay calls it before re-publishing: an ack that already came in must not be answered with
   * another copy of its command (under load that feedback doubled the traffic).
   */
  async settle(): Promise<void> {
    if (this.flushing) await this.flushing;
    if (this.queue.length > 0 && !this.closed) await this.startFlush();
  }

  /** Writes everything queued now. */
  async drain(): Promise<void> {
    if (this.timer) this.timers.clear(this.timer);
    this.timer = undefined;
    this.soon = false;
    this.delayed = false;
    while (this.flushing || this.queue.length > 0) {
      if (this.flushing) await this.flushing;
      else await this.startFlush();
    }
  }

  /**
   * Starts writing what is queued, unless a write is under way. `flushing` is set before the
   * write can settle (a `.finally` runs on a later job), so it never outlives its write.
   */
  private startFlush(): Promise<void> {
    if (this.flushing) return this.flushing;
    this.soon = false;
    const run: Promise<void> = this.flush()
      .catch((err: unknown) => this.d.log.error({ err }, 'writing command uplinks failed'))
      .finally(() => {
        if (this.flushing === run) this.flushing = undefined;
        if (this.queue.length < HIGH_WATER) for (const w of this.waiters.splice(0)) w();
        this.kick();
      });
    this.flushing = run;
    return run;
  }

  private enqueue(item: Item): void {
    this.queue.push(item);
    if (item.kind === 'result') this.queuedResults++;
  }

  private async flush(): Promise<void> {
    const items = this.queue.splice(0, 2000);
    for (const it of items) if (it.kind === 'result') this.queuedResults--;
    this.delayed = false;
    if (items.length === 0) return;
    await this.guarded(items);
    this.d.counters.flushes++;
  }

  /**
   * A failed group is retried item by item, so one poisoned item cannot block the rest. An item
   * that fails because of its own data is given up after MAX_TRIES (counted; its uplink is then
   * acknowledged: the database will refuse it again); one that fails because the database is
   * unreachable waits and is tried again for as long as the module runs.
   */
  private async guarded(group: Item[]): Promise<void> {
    try {
      await this.apply(group);
      this.outageEnded();
      for (const it of group) it.done?.(true);
      return;
    } catch (err) {
      this.d.counters.flush_errors++;
      if (!this.outageSince) {
        this.d.log.warn({ err, items: group.length }, 'writing a group of command uplinks failed; trying one by one');
      }
    }
    for (const item of group) {
      try {
        await this.apply([item]);
        this.outageEnded();
        item.done?.(true);
      } catch (err) {
        item.tries++;
        const id = item.kind === 'ack' ? item.command_id : item.r.command_id;
        const dataError = DATA_ERROR.test(String((err as { code?: unknown }).code ?? ''));
        if (dataError && item.tries >= MAX_TRIES) {
          this.d.counters.uplinks_refused_by_db++;
          this.d.log.error(
            { err, command_id: id, project_id: item.project_id, kind: item.kind },
            'command uplink refused by the database; given up',
          );
          item.done?.(true);
        } else {
          if (!dataError) this.outageStarted(err);
          this.enqueue(item);
          this.delayed = true;
        }
      }
    }
  }

  /** When writes started failing for a reason other than their data (the database is away). */
  private outageSince = 0;
  private retryDelay = RETRY_DELAY_MS;

  private outageStarted(err: unknown): void {
    if (this.outageSince) {
      this.retryDelay = Math.min(RETRY_MAX_MS, this.retryDelay * 2);
      return;
    }
    this.outageSince = this.d.clock.now();
    this.d.log.warn(
      { err, queued: this.queue.length + 1 },
      'command uplinks cannot be written; kept unacknowledged and retried until the database answers',
    );
  }

  private outageEnded(): void {
    if (!this.outageSince) return;
    this.d.log.info(
      { down_ms: this.d.clock.now() - this.outageSince, queued: this.queue.length },
      'command uplinks are written again',
    );
    this.outageSince = 0;
    this.retryDelay = RETRY_DELAY_MS;
  }

  /**
   * The whole group in two statements, acks then results, each one transaction that locks its
   * rows in the global order before it changes them (deps.ts lockBoth). Both are idempotent, so a group
   * retried after a failure between them applies nothing twice. Events go out after each commit.
   */
  private async apply(items: Item[]): Promise<void> {
    // test hook (see CRASH_BEFORE_RESULT_WRITE): the hub dies holding a result it has not written
    if (process.env.HUB_CRASH_POINT === CRASH_BEFORE_RESULT_WRITE && items.some((it) => it.kind === 'result')) {
      process.kill(process.pid, 'SIGKILL');
    }
    const acks = new Map<string, AckItem>();
    const results = new Map<string, ResultItem>();
    let dupes = 0;
    for (const it of items) {
      if (it.kind === 'ack') {
        if (!acks.has(it.command_id)) acks.set(it.command_id, it);
      } else {
        const id = it.r.command_id.toLowerCase();
        if (results.has(id)) dupes++;
        else results.set(id, it);
      }
    }
    const now = isoAt(this.d.clock.now());
    // Two statements, each its own transaction that locks its rows in the global order first
    // (deps.ts lockBoth): no BEGIN/COMMIT and no separate lock statements, since a sync caller waits on
    // this write. Acks first, so a result of the same group lands on an acked command.
    // An ack whose result is in the same group rides with it: one statement, not two.
    const carried = new Map<string, AckItem>();
    for (const id of results.keys()) {
      const ack = acks.get(id);
      if (ack && ack.project_id === results.get(id)!.project_id) {
        carried.set(id, ack);
        acks.delete(id);
      }
    }
    const ackRows = acks.size > 0 ? await retrying(() => this.writeAcks(acks, now)) : [];
    const resultRows = results.size > 0 ? await retrying(() => this.writeResults(results, carried, now)) : [];
    this.d.counters.duplicate_results += dupes;
    this.reportAcks(ackRows);
    this.reportResults(resultRows, results);
    // a result already stored (QoS 1 redelivery) applied nothing: its ack still fills acked_at
    const applied = new Set(resultRows.filter((r) => r.inserted).map((r) => r.in_id));
    // an ack carried by its result is written with it (acked_at, sent_at, the outbox row published)
    for (const id of applied) if (carried.has(id)) this.outcomes.ackWritten(id);
    const unapplied = new Map([...carried].filter(([id]) => !applied.has(id)));
    if (unapplied.size > 0) this.reportAcks(await retrying(() => this.writeAcks(unapplied, now)));
  }

  private writeAcks(acks: Map<string, AckItem>, now: string): Promise<AckRow[]> {
    const ids = JSON.stringify([...acks.keys()]);
    const input = [...acks.values()].map((a) => ({
      command_id: a.command_id,
      project_id: a.project_id,
      ack_at: isoAt(a.at),
      sent: this.pubackAt(a.command_id),
    }));
    return query<AckRow>(this.d.db, forList(ACK_SQL, acks.size), [ids, ids, JSON.stringify(input), now, now]);
  }

  private reportAcks(rows: AckRow[]): void {
    for (const row of rows) {
      if (!row.known) {
        this.d.counters.unknown_acks++;
        this.d.log.warn({ command_id: row.in_id, project_id: row.in_project }, 'command_ack for an unknown command');
      } else if (row.command_id) {
        // written: acked_at, sent_at and the outbox row's `published` are in the tracker now
        this.outcomes.ackWritten(row.command_id);
        if (row.status === 'acked') this.d.events.state(row);
      }
    }
  }

  private writeResults(
    results: Map<string, ResultItem>,
    acks: Map<string, AckItem>,
    now: string,
  ): Promise<ResultRowOut[]> {
    const ids = JSON.stringify([...results.keys()]);
    const input = [...results.entries()].map(([id, it]) => ({
      command_id: id,
      project_id: it.project_id,
      status: it.r.status,
      exit_code: it.r.exit_code,
      output: clean(it.r.output),
      error: clean(it.r.error),
      start_time: it.r.start_time,
      end_time: it.r.end_time,
      duration: it.r.duration,
      received_at: isoAt(it.received_at),
      started: tsOrNull(it.r.start_time),
      ended: tsOrNull(it.r.end_time),
      ack_at: acks.has(id) ? isoAt(acks.get(id)!.at) : null,
      sent: this.pubackAt(id),
    }));
    const args = [ids, ids, JSON.stringify(input), now, now, now];
    const sql = forList(RESULT_SQL, results.size);
    const { outbox } = this.d;
    if (!outbox.routed('command.completed') && !outbox.routed('command.failed'))
      return query<ResultRowOut>(this.d.db, sql, args);
    // A route wants them: the domain events commit with the results that make the commands terminal.
    return this.d.db.transaction(async (trx) => {
      const rows = await query<ResultRowOut>(trx, sql, args);
      const events = rows
        .filter((r) => r.known && r.inserted && !r.late_result)
        .map((r) => terminalEvent(r, resultView(results.get(r.in_id)!)))
        .filter((e) => e !== null);
      if (events.length > 0) await outbox.addMany(trx, events);
      return rows;
    });
  }

  private reportResults(rows: ResultRowOut[], results: Map<string, ResultItem>): void {
    for (const row of rows) {
      if (!row.known) {
        this.d.counters.unknown_results++;
        this.d.log.warn({ command_id: row.in_id, project_id: row.in_project }, 'exec_result for an unknown command');
        continue;
      }
      if (!row.inserted) {
        this.d.counters.duplicate_results++;
        this.d.log.debug({ command_id: row.in_id, project_id: row.in_project }, 'duplicate exec_result ignored');
        continue;
      }
      this.d.counters.results++;
      const result = resultView(results.get(row.in_id)!);
      if (row.late_result) {
        this.d.counters.late_results++;
        this.d.log.info(
          { command_id: row.command_id, project_id: row.project_id, status: row.status },
          'late result stored; the command keeps its status',
        );
      } else {
        this.d.events.state(row);
      }
      this.d.events.result(row, result);
    }
  }
}

/** The result as the bus and the domain events show it. */
function resultView(it: ResultItem): CommandResultView {
  return {
    status: it.r.status,
    exit_code: it.r.exit_code,
    output: clean(it.r.output),
    error: clean(it.r.error),
    start_time: it.r.start_time,
    end_time: it.r.end_time,
    duration: it.r.duration,
    received_at: isoAt(it.received_at),
  };
}

type AckRow = TrackerRow & { in_id: string; in_project: string; known: boolean };

type ResultRowOut = AckRow & { inserted: boolean };

/**
 * Acks: the outbox row is done (no more re-publishing); the tracker gets acked_at and, when it
 * was still live (or failed 'undeliverable'), status acked. Unknown ids and other projects' ids
 * come back with known = false. sent_at is the earliest of what the row holds, the PUBACK time
 * the outcome window still holds for a send's first publish (`sent`: its outcome is then never
 * written; outcome-window.ts) and the ack's arrival: the PUBACK and the ack race, and
 * the PUBACK may be seen a moment after the ack arrived, so sent_at never comes after acked_at.
 */
export const ACK_SQL = listStatement(
  (inList) => `WITH ${lockBoth(inList)},
       v AS (SELECT * FROM jsonb_to_recordset(?::jsonb) AS v(command_id text, project_id text, ack_at timestamptz, sent timestamptz)),
       k AS (SELECT v.* FROM v JOIN lt ON lt.command_id = v.command_id AND lt.project_id = v.project_id
              WHERE ${LOCKED_BOTH}),
       o AS (${publishLocked('k')}),
       u AS (
         UPDATE command_tracker t SET
                status = CASE WHEN ${REVIVABLE} AND t.status <> 'acked' THEN 'acked' ELSE t.status END,
                error = CASE WHEN t.status = 'failed' AND t.error = 'undeliverable' THEN NULL ELSE t.error END,
                completed_at = CASE WHEN t.status = 'failed' AND t.error = 'undeliverable' THEN NULL ELSE t.completed_at END,
                acked_at = k.ack_at, sent_at = LEAST(t.sent_at, k.sent, k.ack_at), updated_at = ?::timestamptz
           FROM k WHERE t.command_id = k.command_id AND t.acked_at IS NULL
         RETURNING t.*
       )
       SELECT v.command_id AS in_id, v.project_id AS in_project, (k.command_id IS NOT NULL) AS known, ${U_COLS}
         FROM v LEFT JOIN k ON k.command_id = v.command_id LEFT JOIN u ON u.command_id = v.command_id`,
  { timesAsText: true },
);

/**
 * Results: stored once per command_id (ON CONFLICT DO NOTHING), then the tracker completes or
 * fails, or, when it had already ended (timeout, cancelled), keeps its status with late_result.
 * completed_at is when the result reached the hub, on the hub's clock like created_at, sent_at
 * and acked_at, so total_ms never mixes in an agent's clock (agents may be off by up to the
 * ±300 s window); the agent's own start/end stay in the result (execution_ms). An ack that came
 * in the same group (`ack_at`) is applied here too, so the usual ack + result pair is one write.
 * Exported for bench/statements.ts.
 */
export const RESULT_SQL = listStatement(
  (inList) => `WITH ${lockBoth(inList)},
       v AS (
         SELECT * FROM jsonb_to_recordset(?::jsonb) AS v(command_id text, project_id text, status text,
           exit_code bigint, output text, error text, start_time bigint, end_time bigint, duration bigint,
           received_at timestamptz, started timestamptz, ended timestamptz, ack_at timestamptz, sent timestamptz)
       ),
       k AS (SELECT v.* FROM v JOIN lt ON lt.command_id = v.command_id AND lt.project_id = v.project_id
              WHERE ${LOCKED_BOTH}),
       ins AS (
         INSERT INTO command_result (command_id, status, exit_code, output, error, start_time, end_time, duration,
                                     received_at, created_at)
         SELECT command_id, status, exit_code, output, error, start_time, end_time, duration, received_at, ?::timestamptz
           FROM k
         ON CONFLICT (command_id) DO NOTHING
         RETURNING command_id
       ),
       o AS (${publishLocked('ins')}),
       u AS (
         UPDATE command_tracker t SET
                status = CASE WHEN NOT ${REVIVABLE} THEN t.status
                              WHEN k.status = 'success' THEN 'completed' ELSE 'failed' END,
                error = CASE WHEN NOT ${REVIVABLE} THEN t.error
                             WHEN k.status = 'success' THEN NULL
                             ELSE COALESCE(NULLIF(k.error, ''), 'agent reported ' || k.status) END,
                late_result = NOT ${REVIVABLE},
                started_at = COALESCE(k.started, t.started_at),
                acked_at = COALESCE(t.acked_at, k.ack_at),
                sent_at = LEAST(t.sent_at, k.sent, k.ack_at),
                completed_at = k.received_at,
                updated_at = ?::timestamptz
           FROM k
          WHERE t.command_id = k.command_id AND ${amongIds('k.command_id', 'ins')}
         RETURNING t.*
       )
       SELECT v.command_id AS in_id, v.project_id AS in_project, (k.command_id IS NOT NULL) AS known,
              (u.command_id IS NOT NULL) AS inserted, ${U_COLS}, u.payload
         FROM v LEFT JOIN k ON k.command_id = v.command_id LEFT JOIN u ON u.command_id = v.command_id`,
  { timesAsText: true },
);
