import { HubError } from './errors.js';
import type { Logger } from './log.js';
import {
  type BusMessage,
  type Handler,
  Mailbox,
  type MailboxOptions,
  type MailboxStats,
  type ReplySink,
  type SubscribeOptions,
} from './mailbox.js';
import { RouteCache } from './topic-index.js';
import { assertPublishTopic } from './topics.js';

export type { BusMessage, Handler, MailboxOptions, MailboxStats, OverflowPolicy, SubscribeOptions } from './mailbox.js';
export { CONTROL } from './mailbox.js';

export interface RequestOptions {
  /** Default 5000 ms. */
  timeoutMs?: number;
  from?: string;
}

export const DEFAULT_MAILBOX: MailboxOptions = { capacity: 10_000, overflow: 'block', block_timeout_ms: 1000 };
const ROUTE_CACHE_MAX = 8192;

interface PendingRequest {
  resolve: (v: unknown) => void;
  reject: (e: unknown) => void;
  timer: NodeJS.Timeout;
  outstanding: number;
  error?: unknown;
  topic: string;
}

/**
 * The in-process event bus: `/`-separated topics with MQTT wildcards, one bounded mailbox per
 * subscriber handled in order, request/reply with a timeout.
 *
 * Payloads are never copied (docs/architecture.md#performance-decisions: copying caps a bus near 0.6 M events/s): every
 * subscriber gets the same object and must treat it as read-only (see `freeze`).
 *
 * @example
 *   const bus = new Bus(log);
 *   bus.mailbox('status').subscribe('status/+/get', (p) => lookup(p));
 *   const reply = await bus.request('status/p1/get', { id: 'p1' }, { timeoutMs: 1000 });
 */
export class Bus {
  private readonly log: Logger;
  private readonly boxes = new Map<string, Mailbox>();
  /**
   * The mailboxes a topic goes to (topic-index.ts RouteCache), dropped whenever a mailbox's
   * patterns change. Every topic published is checked (assertPublishTopic) before it is routed.
   */
  private readonly routes = new RouteCache<Mailbox[]>(
    ROUTE_CACHE_MAX,
    () => [...this.boxes.values()].flatMap((b) => b.patterns()),
    (topic) => {
      const levels = topic.split('/');
      return [...this.boxes.values()].filter((b) => b.matchesLevels(levels));
    },
    assertPublishTopic,
  );
  private readonly pending = new Map<number, PendingRequest>();
  private nextRequestId = 1;
  private closed = false;
  private readonly sink: ReplySink;
  private published = 0;
  private unrouted = 0;

  /**
   * Shallow-freeze plain-object payloads so a subscriber cannot change what another one sees.
   * Off by default: it costs about a third of the dispatch rate, and payload types are
   * `readonly` already; tests and development turn it on (HUB_BUS_FREEZE=1).
   */
  readonly freeze: boolean;

  constructor(log: Logger, opts: { freeze?: boolean } = {}) {
    this.log = log;
    this.freeze = opts.freeze ?? process.env.HUB_BUS_FREEZE === '1';
    this.sink = {
      settle: (msg, value, error) => this.settle(msg.replyTo!, value, error),
      lost: (msg, reason) => this.settle(msg.replyTo!, undefined, reason),
    };
  }

  /** The mailbox of a subscriber, created on first use; it outlives restarts of its module. */
  mailbox(name: string, opts: MailboxOptions = DEFAULT_MAILBOX): Mailbox {
    let box = this.boxes.get(name);
    if (!box) {
      box = new Mailbox(name, opts, this.log, this.sink, () => this.forgetRoutes());
      this.boxes.set(name, box);
    }
    return box;
  }

  hasMailbox(name: string): boolean {
    return this.boxes.has(name);
  }

  /**
   * Resolves once the named module has handled every event queued for it before the call. A
   * control-lane answer (stats, metrics) does not wait in line; a caller that wants it to reflect
   * what it just published awaits this first.
   */
  settled(name: string): Promise<void> {
    return this.boxes.get(name)?.settled() ?? Promise.resolve();
  }

  /** Removes a mailbox for good, dropping what waits in it (counted in its last stats). */
  removeMailbox(name: string): void {
    const box = this.boxes.get(name);
    if (!box) return;
    box.close();
    this.boxes.delete(name);
    this.forgetRoutes();
  }

  private forgetRoutes(): void {
    this.routes.clear();
  }

  private route(topic: string): Mailbox[] {
    return this.routes.get(topic);
  }

  /**
   * Delivers an event to every matching mailbox. Returns true when every one queued it, false
   * when one refused or dropped it, or a promise when a `block` mailbox is full (await it for
   * backpressure; it never rejects).
   */
  publish(topic: string, payload: unknown, from?: string): boolean | Promise<boolean> {
    if (this.closed) return false;
    this.published++;
    const boxes = this.route(topic);
    if (boxes.length === 0) {
      this.unrouted++;
      return true;
    }
    const msg: BusMessage = new Envelope(topic, this.freeze ? freezeShallow(payload) : payload, undefined, from);
    if (boxes.length === 1) return boxes[0].offer(msg);
    let ok = true;
    let waits: Promise<boolean>[] | undefined;
    for (const b of boxes) {
      const r = b.offer(msg);
      if (r === false) ok = false;
      else if (r !== true) {
        waits ??= [];
        waits.push(r);
      }
    }
    if (!waits) return ok;
    return Promise.all(waits).then((all) => ok && all.every(Boolean));
  }

  /**
   * Sends a request and resolves with the first defined value a handler returns. Rejects with
   * BUS_ERR_NO_RESPONDER when nobody subscribes, BUS_ERR_REQUEST_TIMEOUT when the time runs out,
   * or the handler's own error (its `code` kept).
   */
  request<R = unknown>(topic: string, payload: unknown, opts: RequestOptions = {}): Promise<R> {
    if (this.closed) return Promise.reject(new HubError('BUS_ERR_CLOSED', 'bus is closed'));
    const boxes = this.route(topic);
    if (boxes.length === 0) {
      return Promise.reject(new HubError('BUS_ERR_NO_RESPONDER', `no subscriber for ${topic}`, { topic }));
    }
    const id = this.nextRequestId++;
    const timeoutMs = opts.timeoutMs ?? 5000;
    const msg: BusMessage = new Envelope(topic, this.freeze ? freezeShallow(payload) : payload, id, opts.from);
    return new Promise<R>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending.delete(id);
        reject(
          new HubError('BUS_ERR_REQUEST_TIMEOUT', `no reply on ${topic} within ${timeoutMs} ms`, { topic, timeoutMs }),
        );
      }, timeoutMs);
      this.pending.set(id, {
        resolve: resolve as (v: unknown) => void,
        reject,
        timer,
        outstanding: boxes.length,
        topic,
      });
      this.published++;
      for (const b of boxes) {
        const r = b.offer(msg);
        if (r === false) this.settle(id, undefined, new HubError('BUS_ERR_MAILBOX_FULL', `mailbox ${b.name} is full`));
        else if (r !== true) {
          r.then((queued) => {
            if (!queued) this.settle(id, undefined, new HubError('BUS_ERR_MAILBOX_FULL', `mailbox ${b.name} is full`));
          });
        }
      }
    });
  }

  private settle(id: number, value: unknown, error: unknown): void {
    const p = this.pending.get(id);
    if (!p) return;
    if (value !== undefined) {
      this.finish(id, p);
      p.resolve(value);
      return;
    }
    if (error !== undefined && p.error === undefined) p.error = error;
    if (--p.outstanding > 0) return;
    this.finish(id, p);
    if (p.error !== undefined) p.reject(p.error);
    else p.resolve(undefined);
  }

  private finish(id: number, p: PendingRequest): void {
    clearTimeout(p.timer);
    this.pending.delete(id);
  }

  /** Waits until every mailbox is empty and idle, or the deadline passes; returns whether it drained. */
  async drain(timeoutMs: number): Promise<boolean> {
    let timer: NodeJS.Timeout | undefined;
    const deadline = new Promise<false>((r) => {
      timer = setTimeout(() => r(false), timeoutMs);
    });
    const allIdle = (async () => {
      // a handler may publish more work while we wait, so look again until a pass finds nothing
      for (;;) {
        await Promise.all([...this.boxes.values()].map((b) => b.idle()));
        if ([...this.boxes.values()].every((b) => b.size === 0 || b.paused)) return true as const;
      }
    })();
    try {
      return await Promise.race([allIdle, deadline]);
    } finally {
      clearTimeout(timer);
    }
  }

  /** Refuses new work and fails the requests still waiting; mailboxes are left to the host. */
  close(): void {
    this.closed = true;
    for (const [id, p] of this.pending) {
      this.finish(id, p);
      p.reject(new HubError('BUS_ERR_CLOSED', 'bus closed before a reply came'));
    }
  }

  stats(): { published: number; unrouted: number; pending_requests: number; mailboxes: MailboxStats[] } {
    return {
      published: this.published,
      unrouted: this.unrouted,
      pending_requests: this.pending.size,
      mailboxes: [...this.boxes.values()].map((b) => b.stats()),
    };
  }
}

/** One allocation per event, shared by every mailbox it reaches; a class keeps call sites monomorphic. */
class Envelope implements BusMessage {
  constructor(
    readonly topic: string,
    readonly payload: unknown,
    readonly replyTo: number | undefined,
    readonly from: string | undefined,
  ) {}
}

/**
 * Freezing is cheap where copying is not. Only plain objects and arrays: freezing a Buffer or a
 * typed array throws, and class instances may rely on their own mutation.
 */
function freezeShallow<T>(v: T): T {
  if (v !== null && typeof v === 'object' && !Object.isFrozen(v)) {
    const proto = Object.getPrototypeOf(v);
    if (proto === Object.prototype || proto === null || Array.isArray(v)) Object.freeze(v);
  }
  return v;
}

/** A module's view of the bus: every subscription lands in its own mailbox. */
export interface ModuleBus {
  subscribe<P = unknown>(pattern: string, handler: Handler<P>, opts?: SubscribeOptions): () => void;
  publish(topic: string, payload: unknown): boolean | Promise<boolean>;
  request<R = unknown>(topic: string, payload: unknown, opts?: RequestOptions): Promise<R>;
  /**
   * Resolves once this module has handled every data event queued for it before the call: what
   * a timer needs before judging by state the queue may still hold (the silence sweep waits for
   * the heartbeats a backlog holds, rather than calling their agents silent).
   */
  settled(): Promise<void>;
}

/** Builds the scoped handle; `track` lets the host release subscriptions when the instance stops. */
export function scopedBus(bus: Bus, box: Mailbox, track: (release: () => void) => void): ModuleBus {
  const from = box.name;
  return {
    subscribe(pattern, handler, opts) {
      const off = box.subscribe(pattern, handler as Handler, opts);
      track(off);
      return off;
    },
    publish: (topic, payload) => bus.publish(topic, payload, from),
    request: (topic, payload, opts) => bus.request(topic, payload, { from, ...opts }),
    settled: () => box.settled(),
  };
}
