/**
 * What the command module tells the rest of the hub: one CommandEvent per state change, log
 * chunk or result on `command/event/{project_id}/{command_id}`, and the counters behind
 * COMMAND.stats. Counters live with the instance (they restart at zero with it); the outbox
 * depth and dead count in the stats come from the tables.
 */
import type { ModuleBus } from '../../core/bus.js';
import type { Logger } from '../../core/log.js';
import type { Clock } from '../../core/module.js';
import { growingLru } from '../shared/growing-lru.js';
import { COMMAND_STATUSES, TERMINAL_STATUSES } from './contract/schemas.js';
import { COMMAND, type CommandEvent, type CommandResultView } from './contract/topics.js';
import { LifecycleLines } from './lifecycle-lines.js';
import type { CommandOwners } from './owners.js';
import { num, type TrackerRow, timings, toView } from './rows.js';
import type { StageMetrics } from './stage-metrics.js';

export interface Counters {
  accepted: number;
  duplicates_sent: number;
  rejected: number;
  published: number;
  publish_errors: number;
  /** Publish outcomes left unwritten: the agent's ack, written first, carried everything they held (relay.ts). */
  outcomes_skipped: number;
  sent: number;
  acked: number;
  completed: number;
  failed: number;
  timeout: number;
  cancelled: number;
  expired: number;
  dead: number;
  replayed: number;
  results: number;
  duplicate_results: number;
  late_results: number;
  unknown_results: number;
  unknown_acks: number;
  malformed_uplinks: number;
  logs: number;
  /** log_result for a command that exists nowhere (not published) */
  unknown_logs: number;
  /** command_ack, exec_result or log_result naming another project's command (refused) */
  foreign_uplinks: number;
  flushes: number;
  flush_errors: number;
  /** acks/results the database refused for their own data (given up after retries) */
  uplinks_refused_by_db: number;
  /** acks/results asked for again: acked commands whose result had not come (relay re-ask) */
  reasks: number;
  /** Sends whose idempotency key named an earlier command with the same request: answered with it. */
  idempotent_replays: number;
  /** Sends refused: their idempotency key names a command made by a different request. */
  idempotency_mismatches: number;
  /** Scheduled commands this instance started at their time (sent or queued), and failed then. */
  scheduled_started: number;
  scheduled_failed: number;
  idempotency_keys_expired: number;
  /** Events of other hub instances republished here (cluster-events.ts). */
  cluster_events_in: number;
  /** Announcements of this instance's own changes and log chunks, heard back and dropped unparsed. */
  cluster_own_dropped: number;
  /** Events dropped because one of the same command with this version (or a result) already went out. */
  cluster_duplicates: number;
  /** Reads of announced changes too large for a notification, or results (one per batch). */
  cluster_reads: number;
  /** 1 while the listening connection is up (driver pg), else 0. */
  cluster_listening: number;
  cluster_listen_errors: number;
  /** Log chunk parts announced to the other instances / not announced (the database refused). */
  cluster_logs_announced: number;
  cluster_logs_unannounced: number;
}

export function newCounters(): Counters {
  return {
    accepted: 0,
    duplicates_sent: 0,
    rejected: 0,
    published: 0,
    outcomes_skipped: 0,
    publish_errors: 0,
    sent: 0,
    acked: 0,
    completed: 0,
    failed: 0,
    timeout: 0,
    cancelled: 0,
    expired: 0,
    dead: 0,
    replayed: 0,
    results: 0,
    duplicate_results: 0,
    late_results: 0,
    unknown_results: 0,
    unknown_acks: 0,
    malformed_uplinks: 0,
    logs: 0,
    unknown_logs: 0,
    foreign_uplinks: 0,
    flushes: 0,
    flush_errors: 0,
    uplinks_refused_by_db: 0,
    reasks: 0,
    idempotent_replays: 0,
    idempotency_mismatches: 0,
    scheduled_started: 0,
    scheduled_failed: 0,
    idempotency_keys_expired: 0,
    cluster_events_in: 0,
    cluster_own_dropped: 0,
    cluster_duplicates: 0,
    cluster_reads: 0,
    cluster_listening: 0,
    cluster_listen_errors: 0,
    cluster_logs_announced: 0,
    cluster_logs_unannounced: 0,
  };
}

/**
 * Commands whose last version (and result) the gate remembers; the least recently changed are
 * forgotten first. An LRU cache, not a Map whose oldest key is popped through `keys().next()`:
 * V8 leaves a deleted entry as a hole that every later iterator walks until the table is rebuilt,
 * so once full that pop cost 5-45 us an insertion instead of 0.3-0.7 (docs/benchmarks.md "Bounded maps that stay
 * fast when full").
 */
export const MAX_REMEMBERED = 100_000;

/**
 * The order of one command's events wherever they were made: a state goes out only with a
 * version above the last one that went out (the tracker's version, raised by every change), a
 * result once per command. Local and remote events pass the same gate, so this instance's own
 * announcements coming back are dropped, and when two instances' events of one command cross
 * (sent recorded on A after B recorded the ack) the older one is dropped instead of showing a
 * state going backwards.
 */
export class EventOrder {
  /**
   * Per command, in one number: the version and status of the last state that went out and
   * whether its result did (`pack`). One cache and no object per command: two caches of 100 000
   * entries with a `{ version, status }` object each held about 17 MB more of the hub's heap once
   * full (docs/benchmarks.md "A soak: the async path for ten minutes").
   */
  private readonly seen = growingLru<string, number>(MAX_REMEMBERED);

  newer(commandId: string, version: number): boolean {
    const e = this.seen.get(commandId);
    return e === undefined || statusOf(e) === NO_STATE || version > versionOf(e);
  }

  admitState(commandId: string, version: number | undefined, status: string): boolean {
    if (version === undefined || !Number.isFinite(version)) return true;
    // a version the number cannot carry (the tracker's are small whole numbers) is not gated
    if (!Number.isSafeInteger(version) || version < 0 || version > MAX_PACKED_VERSION) return true;
    const e = this.seen.get(commandId);
    const code = STATUS_CODES.get(status) ?? OTHER_STATUS;
    if (e !== undefined && statusOf(e) !== NO_STATE) {
      if (version <= versionOf(e)) return false;
      // one statement can change a row twice (ack and result together): its announcements carry the
      // row after each change, its RETURNING the last, so one terminal state can come with two
      // versions; a terminal state just shown is not shown again (another one still goes out)
      if (statusOf(e) === code && TERMINAL_STATUSES.has(status)) return false;
    }
    this.seen.set(commandId, pack(version, code, e !== undefined && resultOf(e)));
    return true;
  }

  hasResult(commandId: string): boolean {
    const e = this.seen.get(commandId);
    return e !== undefined && resultOf(e);
  }

  admitResult(commandId: string): boolean {
    const e = this.seen.get(commandId);
    if (e !== undefined && resultOf(e)) return false;
    this.seen.set(commandId, e === undefined ? pack(0, NO_STATE, true) : e + 1);
    return true;
  }
}

/** The status code of a command none of whose states went out yet (only its result did). */
const NO_STATE = 0;
/** Status codes 1… in COMMAND_STATUSES' order; a status outside it (none today) is OTHER_STATUS. */
const STATUS_CODES: ReadonlyMap<string, number> = new Map(COMMAND_STATUSES.map((s, i) => [s, i + 1]));
const OTHER_STATUS = 15;
/** version × 32 + status code × 2 + result: exact as a double up to 2^53, so versions below 2^47. */
const MAX_PACKED_VERSION = 2 ** 47 - 1;
const pack = (version: number, code: number, result: boolean): number => version * 32 + code * 2 + (result ? 1 : 0);
const versionOf = (e: number): number => Math.floor(e / 32);
const statusOf = (e: number): number => Math.floor(e / 2) % 16;
const resultOf = (e: number): boolean => e % 2 === 1;

const rowVersion = (row: TrackerRow): number | undefined =>
  row.version === undefined || row.version === null ? undefined : num(row.version);

export class Events {
  private readonly order = new EventOrder();
  /**
   * Events pass the per-command version gate (EventOrder): set by the module at start, once the
   * tracker's version trigger is there (migration 009, every backend). Off only in unit tests
   * that feed rows without versions.
   */
  ordered = false;
  /** Log chunks received here, for the other instances (cluster-events.ts announceLog). */
  announceLog?: (projectId: string, commandId: string, seq: number, content: string) => void;
  /** The lifecycle lines of this instance's own changes, written just after their I/O (lifecycle-lines.ts). */
  private readonly lines?: LifecycleLines;

  constructor(
    private readonly bus: ModuleBus,
    private readonly clock: Clock,
    readonly counters: Counters,
    /** Told of every command whose state goes out, so uplinks can be checked for ownership cheaply. */
    private readonly owners?: CommandOwners,
    /** One info line when a command is accepted and one when it ends (ids and status, never payloads). */
    trail?: Logger,
    /** The latencies and final statuses this instance reports on /metrics (stage-metrics.ts). */
    private readonly stages?: StageMetrics,
  ) {
    this.lines = trail ? new LifecycleLines(trail) : undefined;
  }

  /** Writes the lifecycle lines still held (the module stops). */
  flushLines(): void {
    this.lines?.flush();
  }

  /** Whether a state of this version would still go out (cluster-events.ts reads only those). */
  newer(commandId: string, version: number): boolean {
    return this.order.newer(commandId, version);
  }

  hasResult(commandId: string): boolean {
    return this.order.hasResult(commandId);
  }

  /**
   * A state change; counts the terminal and forward states as it goes (this instance's own
   * changes only). `remote`: announced by another instance (cluster-events.ts).
   */
  state(row: TrackerRow, remote = false): void {
    // This instance's own changes are counted whether or not they are shown: a result written
    // before the relay's `sent` reply came back makes that `sent` older than what watchers saw.
    if (!remote) {
      switch (row.status) {
        case 'sent':
        case 'acked':
        case 'completed':
        case 'failed':
        case 'timeout':
        case 'cancelled':
          this.counters[row.status]++;
          break;
        default:
          break;
      }
    }
    if (this.ordered && !this.order.admitState(row.command_id, rowVersion(row), row.status)) {
      this.counters.cluster_duplicates++;
      return;
    }
    if (remote) this.counters.cluster_events_in++;
    this.owners?.remember(row.command_id, row.project_id);
    const view = toView(row);
    // one lifecycle line per command across the instances: the one that made the change logs it
    if (!remote) this.lines?.add(view, this.clock.now());
    const ev: CommandEvent = {
      kind: 'state',
      command: view,
      at: this.clock.now(),
      ...(remote ? { remote: true as const } : {}),
    };
    this.stages?.observe(ev);
    void this.bus.publish(COMMAND.event(row.project_id, row.command_id), ev);
  }

  /** The row as the result left it, with its payload. */
  result(row: TrackerRow, result: CommandResultView, remote = false): void {
    if (this.ordered && !this.order.admitResult(row.command_id)) {
      this.counters.cluster_duplicates++;
      return;
    }
    if (remote) this.counters.cluster_events_in++;
    const ev: CommandEvent = {
      kind: 'result',
      command: toView(row),
      result,
      payload: row.payload ?? null,
      timings: timings(row, result),
      at: this.clock.now(),
      ...(remote ? { remote: true as const } : {}),
    };
    this.stages?.observe(ev);
    void this.bus.publish(COMMAND.event(row.project_id, row.command_id), ev);
  }

  /** A log chunk; the caller has checked that `commandId` belongs to `projectId` (uplink.ts). */
  log(projectId: string, commandId: string, seq: number, content: string, remote = false): void {
    if (remote) this.counters.cluster_events_in++;
    else {
      this.counters.logs++;
      this.announceLog?.(projectId, commandId, seq, content);
    }
    const ev: CommandEvent = {
      kind: 'log',
      command_id: commandId,
      project_id: projectId,
      seq,
      content,
      at: this.clock.now(),
      ...(remote ? { remote: true as const } : {}),
    };
    void this.bus.publish(COMMAND.event(projectId, commandId), ev);
  }
}
