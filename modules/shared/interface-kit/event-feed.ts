import { randomUUID } from 'node:crypto';
import type { LRUCache } from 'lru-cache';
import type { ModuleBus } from '../../../core/bus.js';
import { COMMAND, type CommandEvent } from '../../command/contract/topics.js';
import { STATUS, type StatusChangedEvent } from '../../status/contract/topics.js';
import { growingLru } from '../growing-lru.js';

/** What live clients (WebSocket, gRPC WatchEvents) receive, one object per event. */
export interface FeedEvent {
  /** Monotonically increasing within one feed `epoch`; a client resumes from the last it saw. */
  id: number;
  type: 'command.state' | 'command.log' | 'command.result' | 'project.status' | 'job.progress';
  /** Empty for a job event (a job spans projects). */
  project_id: string;
  command_id?: string;
  /** job.progress: the job's id (data is the job view). */
  job_id?: string;
  at: number;
  data: unknown;
}

/** Which events a watcher wants: all of them, or those of some projects and/or commands. */
export interface FeedFilter {
  all?: boolean;
  projects?: readonly string[];
  commands?: readonly string[];
  /**
   * The projects the watcher's token may see (permissions.ts): an event of any other project is
   * never delivered, whatever the rest of the filter says (`all` included). Absent: every project.
   */
  allow?: (projectId: string) => boolean;
}

export interface Watcher {
  /** Called synchronously for each matching event; return false when the client is too slow (it is then dropped). */
  deliver(ev: FeedEvent): boolean;
  filter: FeedFilter;
}

export type ResumeResult =
  | { ok: true; events: FeedEvent[] }
  /** The id is older than the buffer or from another epoch: the client must re-read state (REST/DB). */
  | { ok: false; reason: 'unknown_epoch' | 'too_old'; oldest: number | null };

/**
 * Whether a watcher wants an event. A command is followed by its id, but an event for it counts
 * only when it names the command's own project (`owner`, learned from the command's state
 * events, which come from its tracker row): an event naming another project — an agent's log
 * line about a command not its own — never reaches the command's watchers. Without a known
 * owner (a command created before this feed started) the event's project is taken as is; the
 * command module has already checked it against the tracker.
 */
export function matches(filter: FeedFilter, ev: FeedEvent, owner?: string): boolean {
  if (filter.allow && !filter.allow(ev.project_id)) return false;
  if (filter.all) return true;
  if (filter.projects?.includes(ev.project_id)) return true;
  if (ev.command_id && filter.commands?.includes(ev.command_id)) return owner === undefined || owner === ev.project_id;
  return false;
}

/**
 * Commands whose project the feed remembers (about 100 bytes each; the least recently used
 * forgotten first), while it keeps events (`idleMs`).
 */
const MAX_OWNERS = 100_000;

export interface EventFeedOptions {
  /** Events kept for resume (the replay buffer's size); 0 keeps none. Default 10 000. */
  replay?: number;
  /**
   * How long the buffer goes on keeping events after the last client holding the feed let go
   * (`hold`, `watch`), in ms; null (the default): always, from the start, with or without
   * clients. Only a client that was connected knows an id to resume from, so with nobody
   * connected for longer than this nobody can ask for what the buffer would keep: it is emptied
   * and stays empty until a client comes (README "WebSocket", its resume).
   */
  idleMs?: number | null;
  /** The clock, in ms (tests). */
  now?: () => number;
}

/** A module's `replay_idle_s` setting as the feed's `idleMs` (null stays null: always keep). */
export const idleMsOf = (seconds: number | null): number | null => (seconds === null ? null : seconds * 1000);

/**
 * The live event stream of one interface module: command state changes, log chunks, results and
 * project status changes, numbered, kept in a bounded replay buffer so a client that reconnects
 * gets exactly what it missed. Events are built once and shared by every watcher (never copied
 * per client); each watcher's `deliver` decides how to send and when a client is too slow.
 */
export class EventFeed {
  /** Changes whenever the feed restarts; ids from another epoch cannot be resumed. */
  readonly epoch = randomUUID();
  /** The replay buffer as a ring: `ring[(start + i) % capacity]` is the i-th oldest kept event. */
  private readonly ring: FeedEvent[] = [];
  private start = 0;
  private readonly capacity: number;
  private nextId = 1;
  private readonly watchers = new Set<Watcher>();
  /**
   * command_id → project_id, from state and result events only (never from a log chunk); made
   * when first needed and let go when the feed stops keeping events. An LRU cache, not a Map
   * popped through `keys().next()` (docs/benchmarks.md "Bounded maps that stay fast when full").
   */
  private owners: LRUCache<string, string> | null = null;
  /** Clients holding the feed now (connections that were told its epoch, watchers). */
  private holders = 0;
  /** When the last holder let go; -Infinity before the first one came. */
  private releasedAt = Number.NEGATIVE_INFINITY;
  private readonly idleMs: number | null;
  private readonly now: () => number;
  delivered = 0;
  dropped = 0;

  constructor(opts: EventFeedOptions = {}) {
    this.capacity = opts.replay ?? 10_000;
    this.idleMs = opts.idleMs ?? null;
    this.now = opts.now ?? Date.now;
  }

  /**
   * Subscribes the feed to the command and status events of the bus, and to the jobs module's
   * progress events when `jobEvents` names their pattern (the interface module passes it from
   * the jobs contract: this file imports no module). A job event goes to `all` watchers.
   */
  attach(bus: ModuleBus, jobEvents?: string): void {
    if (jobEvents) {
      bus.subscribe<{ job: { job_id: string }; at: number }>(jobEvents, (ev) => {
        if (typeof ev?.job?.job_id !== 'string') return;
        this.push({ type: 'job.progress', project_id: '', job_id: ev.job.job_id, at: ev.at, data: ev.job });
      });
    }
    bus.subscribe<CommandEvent>(COMMAND.eventPattern, (ev) => this.fromCommand(ev));
    bus.subscribe<StatusChangedEvent>(STATUS.changedPattern, (ev) =>
      this.push({ type: 'project.status', project_id: ev.project_id, at: ev.at, data: ev }),
    );
  }

  private fromCommand(ev: CommandEvent): void {
    if (ev.kind === 'log') {
      this.push({ type: 'command.log', project_id: ev.project_id, command_id: ev.command_id, at: ev.at, data: ev });
    } else {
      this.push({
        type: ev.kind === 'state' ? 'command.state' : 'command.result',
        project_id: ev.command.project_id,
        command_id: ev.command.command_id,
        at: ev.at,
        data: ev.kind === 'state' ? ev.command : { command: ev.command, result: ev.result },
      });
    }
  }

  /** From a command's state or result event only (never from a log chunk, which names any project). */
  private learnOwner(commandId: string | undefined, projectId: string): void {
    if (typeof commandId !== 'string' || typeof projectId !== 'string') return;
    this.owners ??= growingLru<string, string>(MAX_OWNERS);
    if (this.owners.get(commandId) === projectId) return;
    this.owners.set(commandId, projectId);
  }

  private ownerOf(ev: FeedEvent): string | undefined {
    return ev.command_id ? this.owners?.get(ev.command_id) : undefined;
  }

  push(partial: Omit<FeedEvent, 'id'>): FeedEvent {
    const ev: FeedEvent = { id: this.nextId++, ...partial };
    if (!this.keeping()) {
      // Nobody can resume from here: what the ring holds ends before this event, so it is
      // dropped whole (a resume into it would miss this one), and the events let go at once
      // instead of living on into the old generation (docs/benchmarks.md "Live events nobody watches").
      // The owners go too: learned again once a client comes; until then a command's events
      // are matched on their own project, as those of a command older than the feed.
      if (this.ring.length > 0) {
        this.ring.length = 0;
        this.start = 0;
      }
      this.owners = null;
    } else {
      if (ev.type === 'command.state' || ev.type === 'command.result') this.learnOwner(ev.command_id, ev.project_id);
      this.keep(ev);
    }
    const owner = this.ownerOf(ev);
    for (const w of this.watchers) {
      if (!matches(w.filter, ev, owner)) continue;
      if (w.deliver(ev)) this.delivered++;
      else {
        this.dropped++;
        this.watchers.delete(w);
      }
    }
    return ev;
  }

  /** Puts `ev` in the replay buffer (none when `replay` is 0). */
  private keep(ev: FeedEvent): void {
    if (this.capacity === 0) return;
    if (this.ring.length < this.capacity) this.ring.push(ev);
    else {
      // a ring, not shift/splice: dropping the oldest of 10 000 must not move the other 9 999
      this.ring[this.start] = ev;
      this.start = (this.start + 1) % this.capacity;
    }
  }

  /** Events after `lastId` that match, when the buffer still holds them all. */
  since(epoch: string, lastId: number, filter: FeedFilter): ResumeResult {
    const oldest = this.ring.length > 0 ? this.ring[this.start].id : null;
    if (epoch !== this.epoch) return { ok: false, reason: 'unknown_epoch', oldest };
    if (lastId >= this.nextId - 1) return { ok: true, events: [] };
    if (oldest === null || lastId < oldest - 1) return { ok: false, reason: 'too_old', oldest };
    // ids are dense, so the position of lastId+1 is computed, not searched
    const events: FeedEvent[] = [];
    for (let i = lastId + 1 - oldest; i < this.ring.length; i++) {
      const e = this.ring[(this.start + i) % this.ring.length];
      if (matches(filter, e, this.ownerOf(e))) events.push(e);
    }
    return { ok: true, events };
  }

  get lastId(): number {
    return this.nextId - 1;
  }

  /**
   * Whether events are kept for resume now: while a client holds the feed, and for `idleMs`
   * after the last one let go (always when `idleMs` is null).
   */
  private keeping(): boolean {
    return this.holders > 0 || this.idleMs === null || this.now() - this.releasedAt < this.idleMs;
  }

  /**
   * A client that was told the feed's position (its epoch and last id: a WebSocket's `hello`)
   * holds the feed, so the events after it are kept for its resume; the function returned lets
   * go (once; later calls do nothing).
   */
  hold(): () => void {
    this.holders++;
    let held = true;
    return () => {
      if (!held) return;
      held = false;
      this.holders--;
      if (this.holders === 0) this.releasedAt = this.now();
    };
  }

  /** Delivers matching events to `w` until the function returned is called; a watcher holds the feed. */
  watch(w: Watcher): () => void {
    this.watchers.add(w);
    const release = this.hold();
    return () => {
      this.watchers.delete(w);
      release();
    };
  }

  /** Events kept for resume now. */
  get kept(): number {
    return this.ring.length;
  }

  get watcherCount(): number {
    return this.watchers.size;
  }
}
