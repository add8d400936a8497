import type { Clock } from '../../core/module.js';
import type { AlertPayload } from '../shared/protocol.js';
import { findUnsafeJson } from '../shared/sanitize.js';
import type { PresenceState, ProjectView, RejectedUplink, StatusChangedEvent } from './contract/topics.js';
import type { ProjectRecord } from './projects.js';

/** One project's presence. Times are ms since the epoch on the hub clock unless said otherwise. */
export interface PresenceEntry {
  readonly project_id: string;
  /** Changed only by Presence (setState), which counts the online entries as they change. */
  readonly state: PresenceState;
  state_since: number;
  last_heartbeat_at: number | null;
  instance_id: string | null;
  agent_version: string | null;
  registration: Record<string, unknown> | null;
  /** The agent-clock timestamp of the `register` that opened the current session (stale-will check). */
  session_started_at: number | null;
  metrics: Record<string, unknown> | null;
  metrics_at: number | null;
  last_alert: AlertPayload | null;
  last_alert_at: number | null;
  updated_at: number;
  /** A registration accepted and not completed yet; in the row too, so any instance can complete it. */
  handshake: Handshake | null;
  /** The row's `version` this entry last agreed with (0: never changed state). */
  version: number;
  /** The highest version whose changes were published on this instance's bus (once per change). */
  announced: number;
  /**
   * Transitions of this entry queued and not written yet: the entry shows their outcome ahead of
   * the database, so news from other instances waits for their answer instead of overwriting it.
   */
  pending: number;
  /** Memory only: malformed uplinks of this project since start, and the last one (uplinks.ts onRejected). */
  rejected_uplinks?: number;
  last_rejected?: RejectedUplink | null;
}

export interface Handshake {
  /** The state before the handshake began (online when an online agent registers again). */
  before: PresenceState;
  /** The register message's timestamp (agent clock): names the handshake in the row. */
  registered_ts: number;
}

export interface HistoryRow {
  project_id: string;
  from_state: PresenceState;
  to_state: PresenceState;
  reason: string;
  at: number;
}

/**
 * What the row must hold for a transition to apply (PostgreSQL checks it in the UPDATE, so of two
 * instances deciding on the same row at once only one wins, and none undoes a newer session).
 * Absent fields are not checked.
 */
export interface Expect {
  states?: PresenceState[];
  /** the row's handshake is this one (its register timestamp) */
  handshake_ts?: number;
  /** the row's session is this one (its register timestamp, or null for none) */
  session_started_at?: number | null;
  /** a register: not older than the handshake going on, and not the register of the session online now */
  register_ts?: number;
  /** silent since before this time (last_heartbeat_at, or state_since without one) */
  heartbeat_before?: number;
  /** in its state since before this time */
  since_before?: number;
}

/** What a transition writes besides the state (absent: kept as the row has it). */
export interface TransitionSet {
  /** the handshake the row holds afterwards (null clears it) */
  handshake: Handshake | null;
  session_started_at?: number;
  /** last_heartbeat_at is only ever moved forward */
  last_heartbeat_at?: number;
  registration?: {
    instance_id: string | null;
    agent_version: string | null;
    registration: Record<string, unknown> | null;
  };
}

/** A conditional change of one row's state, with its history rows (`steps`) and announcement. */
export interface Transition {
  project_id: string;
  /** the state the row ends in */
  to: PresenceState;
  /** when (hub clock): state_since */
  at: number;
  steps: HistoryRow[];
  expect: Expect;
  set: TransitionSet;
  /** Told once the transition's fate is known: applied with the row's new version, or not (null). */
  done?: (version: number | null) => void;
}

/** What one flush writes: snapshots of the entries whose heartbeat, metrics or alert changed, and transitions. */
export interface Batch {
  rows: PresenceEntry[];
  ops: Transition[];
}

/** Pending transitions beyond this (database down for long) are dropped oldest first, and counted. */
const MAX_PENDING_OPS = 100_000;

/**
 * The presence of every project, in memory: a read model of the `project_status` rows, which are
 * the truth every hub instance shares. Transitions this instance decides are shown here at once
 * and queued as conditional writes; their events are published once PostgreSQL applied them
 * (persist.ts), other instances' ones when their announcement arrives (sync.ts). Heartbeats,
 * metrics and alerts mark entries dirty; the flusher writes them in batches (docs/architecture.md#presence: hot
 * paths group their writes), never one write per heartbeat.
 */
export class Presence {
  private readonly entries = new Map<string, PresenceEntry>();
  private dirty = new Set<string>();
  private ops: Transition[] = [];
  /** Entries whose state is `online`, kept as states change (setState): a stats or metrics read must not walk 100 000 entries. */
  private onlineCount = 0;
  opsDropped = 0;
  /** Called when a transition is queued, so the flusher writes it soon (group commit). */
  onQueued: () => void = () => undefined;

  constructor(
    private readonly clock: Clock,
    private readonly emit: (ev: StatusChangedEvent) => void,
  ) {}

  get size(): number {
    return this.entries.size;
  }

  /** How many projects this instance shows online. */
  get online(): number {
    return this.onlineCount;
  }

  get pendingWrites(): number {
    return this.dirty.size + this.ops.length;
  }

  get(projectId: string): PresenceEntry | undefined {
    return this.entries.get(projectId);
  }

  all(): IterableIterator<PresenceEntry> {
    return this.entries.values();
  }

  /** The entry, created offline (and written at the next flush) when the project had none. */
  ensure(projectId: string): PresenceEntry {
    let e = this.entries.get(projectId);
    if (!e) {
      e = blankEntry(projectId, this.clock.now());
      this.entries.set(projectId, e);
      this.dirty.add(projectId);
    }
    return e;
  }

  /** Marks an entry whose heartbeat, metrics or alert changed for the next flush. */
  touch(e: PresenceEntry): void {
    e.updated_at = this.clock.now();
    this.dirty.add(e.project_id);
  }

  /**
   * Moves the entry through `steps` (each a state and the reason) now, and queues the conditional
   * write that makes it true for every instance. Returns the queued transition.
   */
  change(
    e: PresenceEntry,
    steps: Array<[PresenceState, string]>,
    expect: Expect,
    set: TransitionSet,
    done?: Transition['done'],
  ): Transition {
    const at = this.clock.now();
    const history: HistoryRow[] = [];
    let from = e.state;
    for (const [to, reason] of steps) {
      history.push({ project_id: e.project_id, from_state: from, to_state: to, reason, at });
      from = to;
    }
    if (steps.length > 0) e.state_since = at;
    this.setState(e, from);
    e.handshake = set.handshake;
    if (set.session_started_at !== undefined) e.session_started_at = set.session_started_at;
    if (set.last_heartbeat_at !== undefined)
      e.last_heartbeat_at = Math.max(e.last_heartbeat_at ?? set.last_heartbeat_at, set.last_heartbeat_at);
    if (set.registration) {
      e.instance_id = set.registration.instance_id;
      e.agent_version = set.registration.agent_version;
      e.registration = set.registration.registration;
    }
    e.pending++;
    this.touch(e);
    const op: Transition = { project_id: e.project_id, to: e.state, at, steps: history, expect, set, done };
    if (this.ops.length >= MAX_PENDING_OPS) this.dropOp(this.ops.shift()!);
    this.ops.push(op);
    this.onQueued();
    return op;
  }

  /** A one-step change from the state the entry is in (tests and simple callers). */
  transition(e: PresenceEntry, to: PresenceState, reason: string): boolean {
    if (e.state === to) return false;
    this.change(e, [[to, reason]], { states: [e.state] }, { handshake: e.handshake });
    return true;
  }

  private dropOp(op: Transition): void {
    this.opsDropped++;
    const e = this.entries.get(op.project_id);
    if (e) e.pending = Math.max(0, e.pending - 1);
    op.done?.(null);
  }

  /**
   * A transition's fate: applied (its events are published here, once, in order) or refused by
   * the row's condition (the caller re-reads the row: another instance decided first).
   */
  settle(op: Transition, version: number | null): void {
    const e = this.entries.get(op.project_id);
    if (e) {
      e.pending = Math.max(0, e.pending - 1);
      if (version !== null && version > e.version) e.version = version;
    }
    // Its own announcement may have come back first (another connection): published once either way.
    if (version !== null && (!e || version > e.announced)) {
      if (e) e.announced = version;
      for (const h of op.steps) {
        this.emit({ project_id: h.project_id, state: h.to_state, previous: h.from_state, reason: h.reason, at: h.at });
      }
    }
    op.done?.(version);
  }

  /**
   * Another instance's transition, announced (sync.ts): its events are published unless this
   * instance already did (its own, or a version seen before), and the state is taken at once
   * unless transitions of this instance are still on their way (their answer settles it).
   */
  announce(projectId: string, version: number, steps: HistoryRow[]): void {
    const e = this.ensureKnown(projectId);
    if (version <= e.announced) return;
    e.announced = version;
    // the state first: a watcher that asks on hearing the event gets the new one
    const last = steps[steps.length - 1];
    if (e.pending === 0 && version > e.version && last) {
      this.setState(e, last.to_state);
      e.state_since = last.at;
      if (last.to_state === 'offline' || last.to_state === 'online') e.handshake = null;
    }
    for (const h of steps) {
      this.emit({ project_id: projectId, state: h.to_state, previous: h.from_state, reason: h.reason, at: h.at });
    }
  }

  /**
   * A row read from the database (a re-read, a check, a resync): taken when it is newer than what
   * the entry agreed with and nothing of this instance is on its way. Heartbeat, metrics and alert
   * only move forward. Returns the state the entry had before, when the row changed it.
   */
  applyRow(row: PresenceEntry): PresenceState | null {
    const e = this.ensureKnown(row.project_id);
    let previous: PresenceState | null = null;
    if (e.pending === 0 && row.version >= e.version) {
      if (e.state !== row.state) previous = e.state;
      this.setState(e, row.state);
      e.state_since = row.state_since;
      e.handshake = row.handshake;
      e.session_started_at = row.session_started_at;
      e.instance_id = row.instance_id;
      e.agent_version = row.agent_version;
      e.registration = row.registration;
      e.version = row.version;
    }
    if (row.last_heartbeat_at !== null && row.last_heartbeat_at > (e.last_heartbeat_at ?? -Infinity))
      e.last_heartbeat_at = row.last_heartbeat_at;
    if (row.metrics_at !== null && row.metrics_at > (e.metrics_at ?? -Infinity)) {
      e.metrics = row.metrics;
      e.metrics_at = row.metrics_at;
    }
    if (row.last_alert_at !== null && row.last_alert_at > (e.last_alert_at ?? -Infinity)) {
      e.last_alert = row.last_alert;
      e.last_alert_at = row.last_alert_at;
    }
    return previous;
  }

  /**
   * A row read after a gap in the announcements (a resync): taken like `applyRow`, and when it is
   * newer than what this instance published and its state differs, published as one change (the
   * steps in between are in the history table, not here). Returns whether it published.
   */
  catchUp(row: PresenceEntry, reason: string): boolean {
    const e = this.get(row.project_id);
    // a transition of ours on its way: its answer (or its announcement) publishes it
    if (e && e.pending > 0) return false;
    const unseen = row.version > (e?.announced ?? 0);
    const previous = this.applyRow(row);
    const now = this.entries.get(row.project_id)!;
    if (!unseen) return false;
    now.announced = Math.max(now.announced, row.version);
    if (previous === null) return false;
    this.emit({ project_id: row.project_id, state: row.state, previous, reason, at: row.state_since });
    return true;
  }

  /**
   * A transition decided in PostgreSQL without showing it here first (the silence sweep): taken
   * once applied, with its events, so a heartbeat another instance wrote meanwhile (which makes
   * it fail) never shows this project offline, even for a moment.
   */
  decided(op: Transition, version: number): void {
    const e = this.ensureKnown(op.project_id);
    if (e.pending === 0 && version > e.version) {
      this.setState(e, op.to);
      e.state_since = op.at;
      e.handshake = op.set.handshake;
      e.version = version;
    }
    if (version <= e.announced) return;
    e.announced = version;
    for (const h of op.steps) {
      this.emit({ project_id: h.project_id, state: h.to_state, previous: h.from_state, reason: h.reason, at: h.at });
    }
  }

  /** An entry for a project another instance wrote first: known, not to be written by this one. */
  private ensureKnown(projectId: string): PresenceEntry {
    let e = this.entries.get(projectId);
    if (!e) {
      e = blankEntry(projectId, this.clock.now());
      this.entries.set(projectId, e);
    }
    return e;
  }

  /**
   * Entries read back from the database at start: everything they hold is already announced. An
   * entry an announcement brought while the rows were read (the listener listens first) is kept
   * when it is newer than its row.
   */
  load(rows: PresenceEntry[]): void {
    for (const r of rows) {
      const before = this.entries.get(r.project_id);
      if (before && before.version > r.version) continue;
      if (before?.state === 'online') this.onlineCount--;
      if (r.state === 'online') this.onlineCount++;
      this.entries.set(r.project_id, { ...r, announced: Math.max(r.version, before?.announced ?? 0), pending: 0 });
    }
  }

  /** Every change of an entry's state goes through here, so `online` stays a count, not a walk. */
  private setState(e: PresenceEntry, to: PresenceState): void {
    if (e.state === to) return;
    if (e.state === 'online') this.onlineCount--;
    if (to === 'online') this.onlineCount++;
    (e as { state: PresenceState }).state = to;
  }

  /** Takes what changed since the last flush; `restore` gives it back when the write failed. */
  takeBatch(): Batch {
    const rows: PresenceEntry[] = [];
    for (const id of this.dirty) {
      const e = this.entries.get(id);
      if (e) rows.push({ ...e });
    }
    this.dirty = new Set();
    const ops = this.ops;
    this.ops = [];
    return { rows, ops };
  }

  restore(batch: Batch): void {
    for (const r of batch.rows) this.dirty.add(r.project_id);
    const room = MAX_PENDING_OPS - this.ops.length;
    const drop = Math.max(0, batch.ops.length - room);
    for (const op of batch.ops.slice(0, drop)) this.dropOp(op);
    this.ops = batch.ops.slice(drop).concat(this.ops);
  }
}

/** An offline entry that never changed state (version 0). */
export function blankEntry(projectId: string, now: number): PresenceEntry {
  return {
    project_id: projectId,
    state: 'offline',
    state_since: now,
    last_heartbeat_at: null,
    instance_id: null,
    agent_version: null,
    registration: null,
    session_started_at: null,
    metrics: null,
    metrics_at: null,
    last_alert: null,
    last_alert_at: null,
    updated_at: now,
    handshake: null,
    version: 0,
    announced: 0,
    pending: 0,
  };
}

const iso = (ms: number | null | undefined): string | null => (ms == null ? null : new Date(ms).toISOString());

/** Free-form values already checked for views: the same object is walked once, not per listing. */
const servable = new WeakMap<object, boolean>();

/**
 * The value when a response can carry it, else null. Uplinks are checked at the edge
 * (parseUplink), but a row stored before that check, or written by another tool, may hold
 * something no serializer survives (10 000 levels deep): one such project must not turn
 * `/projects` into a 500 for everyone, so its value is left out of the view.
 */
function servableOrNull<T>(v: T | null | undefined): T | null {
  if (v === null || v === undefined || typeof v !== 'object') return v ?? null;
  let ok = servable.get(v);
  if (ok === undefined) {
    ok = findUnsafeJson(v) === null;
    servable.set(v, ok);
  }
  return ok ? v : null;
}

/** The public view of a project: its row and its presence; never the secret. */
export function projectView(rec: ProjectRecord, e: PresenceEntry | undefined): ProjectView {
  return {
    project_id: rec.project_id,
    name: rec.name,
    enabled: rec.enabled,
    state: e?.state ?? 'offline',
    state_since: iso(e?.state_since),
    last_heartbeat_at: iso(e?.last_heartbeat_at),
    instance_id: e?.instance_id ?? null,
    agent_version: e?.agent_version ?? null,
    metrics: servableOrNull(e?.metrics),
    last_alert: servableOrNull(e?.last_alert),
    created_at: new Date(rec.created_at).toISOString(),
    registration: e?.registration ?? null,
    rejected_uplinks: e?.rejected_uplinks ?? 0,
    last_rejected: e?.last_rejected ?? null,
  };
}
