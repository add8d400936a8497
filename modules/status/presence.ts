import type { Clock } from '../../core/module.js';
import type { AlertPayload } from '../shared/protocol.js';
import { findUnsafeJson } from '../shared/sanitize.js';
import type { PresenceState, ProjectView, RejectedUplink, StatusChangedEvent } from '../shared/topics.js';
import type { ProjectRecord } from './projects.js';

/** One project's presence. Times are ms since the epoch on the hub clock unless said otherwise. */
export interface PresenceEntry {
  readonly project_id: string;
  state: PresenceState;
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
  /** Memory only: a registration in progress (lost on restart, which then asks the agent to register again). */
  handshake: Handshake | null;
  /** Memory only: malformed uplinks of this project since start, and the last one (uplinks.ts onRejected). */
  rejected_uplinks?: number;
  last_rejected?: RejectedUplink | null;
}

export interface Handshake {
  /** The state before the handshake began: a refused registration goes back to it (online) or offline. */
  before: PresenceState;
  accepted: boolean;
  /** The register message's timestamp (agent clock). */
  registered_ts: number;
}

export interface HistoryRow {
  project_id: string;
  from_state: PresenceState;
  to_state: PresenceState;
  reason: string;
  at: number;
}

/** What one flush writes: snapshots of the changed entries and the history rows since the last flush. */
export interface Batch {
  rows: PresenceEntry[];
  history: HistoryRow[];
}

/** Pending history rows beyond this (database down for long) are dropped oldest first, and counted. */
const MAX_PENDING_HISTORY = 100_000;

/**
 * The presence of every project this module has seen, in memory: the authoritative copy while
 * the module runs. Changes mark entries dirty; the flusher writes them in batches (docs/architecture.md#presence:
 * hot paths group their writes), never one write per heartbeat.
 */
export class Presence {
  private readonly entries = new Map<string, PresenceEntry>();
  private dirty = new Set<string>();
  private history: HistoryRow[] = [];
  historyDropped = 0;

  constructor(
    private readonly clock: Clock,
    private readonly emit: (ev: StatusChangedEvent) => void,
  ) {}

  get size(): number {
    return this.entries.size;
  }

  get pendingWrites(): number {
    return this.dirty.size + this.history.length;
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
      const now = this.clock.now();
      e = {
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
      };
      this.entries.set(projectId, e);
      this.dirty.add(projectId);
    }
    return e;
  }

  /** Marks a changed entry for the next flush. */
  touch(e: PresenceEntry): void {
    e.updated_at = this.clock.now();
    this.dirty.add(e.project_id);
  }

  /** Moves to `to` (no-op when already there): one history row and one StatusChangedEvent. */
  transition(e: PresenceEntry, to: PresenceState, reason: string): boolean {
    if (e.state === to) return false;
    const at = this.clock.now();
    const previous = e.state;
    e.state = to;
    e.state_since = at;
    this.touch(e);
    if (this.history.length >= MAX_PENDING_HISTORY) {
      this.history.shift();
      this.historyDropped++;
    }
    this.history.push({ project_id: e.project_id, from_state: previous, to_state: to, reason, at });
    this.emit({ project_id: e.project_id, state: to, previous, reason, at });
    return true;
  }

  /** Entries read back from the database at start. */
  load(rows: PresenceEntry[]): void {
    for (const r of rows) this.entries.set(r.project_id, r);
  }

  /** Takes what changed since the last flush; `restore` gives it back when the write failed. */
  takeBatch(): Batch {
    const rows: PresenceEntry[] = [];
    for (const id of this.dirty) {
      const e = this.entries.get(id);
      if (e) rows.push({ ...e, handshake: null });
    }
    this.dirty = new Set();
    const history = this.history;
    this.history = [];
    return { rows, history };
  }

  restore(batch: Batch): void {
    for (const r of batch.rows) this.dirty.add(r.project_id);
    const room = MAX_PENDING_HISTORY - this.history.length;
    const keep = batch.history.length > room ? batch.history.slice(batch.history.length - room) : batch.history;
    this.historyDropped += batch.history.length - keep.length;
    this.history = keep.concat(this.history);
  }
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
