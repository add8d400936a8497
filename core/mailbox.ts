import { performance } from 'node:perf_hooks';
import { errorCode, HubError, isClientMistake } from './errors.js';
import type { Logger } from './log.js';
import { RouteCache, TopicIndex } from './topic-index.js';
import { assertPattern } from './topics.js';

export type OverflowPolicy = 'block' | 'drop-oldest' | 'reject';

export interface MailboxOptions {
  /** Most events waiting at once. */
  capacity: number;
  /**
   * What a full mailbox does with one more event:
   * - `block`: the publisher gets a promise that settles when there is room (or `false` after
   *   `block_timeout_ms`, the event then dropped and counted): backpressure with a bound;
   * - `drop-oldest`: the oldest waiting event is dropped and counted, the new one queued;
   * - `reject`: the new event is refused, counted, and `publish` reports `false`.
   */
  overflow: OverflowPolicy;
  block_timeout_ms: number;
}

export interface BusMessage<P = unknown> {
  readonly topic: string;
  readonly payload: P;
  /** Set on requests: the id the bus answers through. */
  readonly replyTo?: number;
  /** Name of the publishing module, for tracing. */
  readonly from?: string;
}

export type Handler<P = unknown> = (payload: P, msg: BusMessage<P>) => unknown;

export interface SubscribeOptions {
  /**
   * How many calls of this handler may be in flight at once (default 1: strictly one after
   * another, in order). Above 1, an async call does not hold up the mailbox: the next event is
   * taken while it runs, until `concurrency` calls are running; replies still reach requesters.
   * For handlers of independent work (an agent running commands), not for ordered state.
   */
  concurrency?: number;
  /**
   * `control`: the handler answers introspection (stats, metrics, module lists) and only reads
   * state. Its requests skip the data queue: they are handled on the next turn of the event loop
   * even behind a backlog of 100 000 events or while an async data handler holds the mailbox, so
   * a dashboard, `/metrics` or a benchmark never times out because the module is busy. Default
   * `data`: in order with every other event. [docs/architecture.md#mailboxes]
   */
  lane?: 'data' | 'control';
}

/** The options of an introspection subscription (stats, metrics, lists): see `lane`. */
export const CONTROL: Readonly<SubscribeOptions> = Object.freeze({ lane: 'control' });

/** What the bus needs back from a mailbox when a handler answers (or fails) a request. */
export interface ReplySink {
  settle(msg: BusMessage, value: unknown, error: unknown): void;
  /** A request that never reached a handler (dropped, refused, unclaimed). */
  lost(msg: BusMessage, reason: HubError): void;
}

export interface MailboxStats {
  name: string;
  queued: number;
  capacity: number;
  overflow: OverflowPolicy;
  paused: boolean;
  enqueued: number;
  handled: number;
  dropped: number;
  rejected: number;
  errors: number;
  blocked: number;
  /** Control-lane requests handled ahead of the data queue (see SubscribeOptions.lane). */
  control_handled: number;
  handler_ms_total: number;
  handler_ms_max: number;
  subscriptions: string[];
}

interface Subscription {
  pattern: string;
  /** null while the owning module restarts: the pattern keeps catching events for the next instance. */
  handler: Handler | null;
  concurrency: number;
  inflight: number;
  control: boolean;
}

interface BlockedPublisher {
  msg: BusMessage;
  resolve: (ok: boolean) => void;
  timer: NodeJS.Timeout;
}

/**
 * A mailbox yields to I/O and to the other mailboxes after this much handling time. A time
 * slice, not an event count: a count small enough to be fair with slow handlers lets a backlog
 * build with fast ones (measured: 512 per turn fell behind a producer of 1 000 per turn and GC
 * then took 2/3 of the time).
 *
 * The clock is not read for every event (it would cost the bus a quarter of its throughput); it
 * is read every `clockEvery` events, adapted to what events cost so that a read comes about every
 * CHECK_MS: every CLOCK_EVERY events for cheap handlers, every event for slow ones (a fan-out to
 * 1 000 WebSockets takes ~1.7 ms an event, and a fixed 256 let one turn run for 0.44 s).
 */
const SLICE_MS = 2;
const CHECK_MS = 0.5;
const CLOCK_EVERY = 256;
/** Before a mailbox has measured its handlers, read the clock this often. */
const CLOCK_FIRST = 16;
const ROUTE_CACHE_MAX = 4096;
/**
 * Control requests waiting at once. They are answered on the next turn, so this is only reached
 * by a caller flooding introspection; beyond it they are refused like a full mailbox's.
 */
const CONTROL_CAPACITY = 1024;

const isThenable = (v: unknown): v is PromiseLike<unknown> =>
  v !== null &&
  (typeof v === 'object' || typeof v === 'function') &&
  typeof (v as { then?: unknown }).then === 'function';

/**
 * A subscriber's own bounded queue, handled strictly in order (GMQ's per-module channel).
 * It belongs to the module *name*, not to an instance: while the host restarts a module the
 * mailbox is paused with its patterns kept, so events addressed to the module wait here and the
 * next instance receives them. [docs/architecture.md#mailboxes]
 */
export class Mailbox {
  readonly name: string;
  private opts: MailboxOptions;
  private readonly log: Logger;
  private readonly replies: ReplySink;
  private readonly onPatternsChanged: () => void;

  private queue: BusMessage[] = [];
  private head = 0;
  private readonly waiting: BlockedPublisher[] = [];
  private subs: Subscription[] = [];
  /** Handlers by topic, as the bus routes (topic-index.ts RouteCache), in subscription order. */
  private readonly routes = new RouteCache<Subscription[]>(
    ROUTE_CACHE_MAX,
    () => this.patterns(),
    (topic) => {
      const found = this.trie().match(topic.split('/'));
      // in subscription order, as a filter over `subs` would give them
      return found.length < 2 ? found : this.subs.filter((s) => found.includes(s));
    },
  );
  private index: TopicIndex<Subscription> | null = null;
  private scheduled = false;
  private running = false;
  /** Events between clock reads while draining, learned from what this mailbox's handlers cost. */
  private clockEvery = CLOCK_FIRST;
  private pausedFlag = false;
  private idleWaiters: Array<() => void> = [];
  /** Calls of `concurrency > 1` handlers still running, and who waits for one of them to finish. */
  private concurrent = 0;
  private slotWaiters: Array<() => void> = [];
  /** The control lane: requests for control subscriptions, handled ahead of `queue`. */
  private control: BusMessage[] = [];
  private controlScheduled = false;
  private controlRunning = 0;
  /** Data events taken off the queue and handled, and who waits for a count (`settled`). */
  private dataDone = 0;
  private dataIn = 0;
  private settledWaiters: Array<{ upTo: number; resolve: () => void }> = [];

  private c = {
    enqueued: 0,
    handled: 0,
    dropped: 0,
    rejected: 0,
    errors: 0,
    blocked: 0,
    control: 0,
    ms: 0,
    maxMs: 0,
  };

  constructor(name: string, opts: MailboxOptions, log: Logger, replies: ReplySink, onPatternsChanged: () => void) {
    this.name = name;
    this.opts = { ...opts };
    this.log = log;
    this.replies = replies;
    this.onPatternsChanged = onPatternsChanged;
  }

  get size(): number {
    return this.queue.length - this.head;
  }

  get paused(): boolean {
    return this.pausedFlag;
  }

  /** A new capacity or policy applies to events from now on; nothing waiting is dropped. */
  reconfigure(opts: MailboxOptions): void {
    this.opts = { ...opts };
    this.admitWaiting();
  }

  /**
   * True when one of this mailbox's patterns (attached or waiting for a new instance) matches the
   * topic, given split into levels (the bus splits once for every mailbox).
   */
  matchesLevels(levels: readonly string[]): boolean {
    return this.trie().test(levels);
  }

  /** The patterns as a trie, rebuilt after they change (rarely: module start, stop, restart). */
  private trie(): TopicIndex<Subscription> {
    if (this.index === null) {
      const index = new TopicIndex<Subscription>();
      for (const sub of this.subs) index.add(sub.pattern, sub);
      this.index = index;
    }
    return this.index;
  }

  /** The patterns, attached or waiting for a new instance (the bus keys its routes by all of them). */
  patterns(): string[] {
    return this.subs.map((s) => s.pattern);
  }

  private patternsChanged(): void {
    this.routes.clear();
    this.index = null;
    this.onPatternsChanged();
  }

  subscribe(pattern: string, handler: Handler, opts: SubscribeOptions = {}): () => void {
    const concurrency = Math.max(1, Math.floor(opts.concurrency ?? 1));
    const control = opts.lane === 'control';
    const detached = this.subs.find((s) => s.pattern === pattern && s.handler === null);
    let sub: Subscription;
    if (detached) {
      detached.handler = handler;
      detached.concurrency = concurrency;
      if (detached.control !== control) this.routes.clear();
      detached.control = control;
      sub = detached;
    } else {
      assertPattern(pattern);
      sub = { pattern, handler, concurrency, inflight: 0, control };
      this.subs.push(sub);
      this.patternsChanged();
    }
    this.schedule();
    return () => this.remove(sub);
  }

  private remove(sub: Subscription): void {
    const i = this.subs.indexOf(sub);
    if (i < 0) return;
    this.subs.splice(i, 1);
    this.patternsChanged();
  }

  /**
   * Offers one event. Returns true when queued, false when refused or dropped, or a promise
   * (policy `block`) that settles once the event is queued or its wait ran out.
   */
  offer(msg: BusMessage): boolean | Promise<boolean> {
    if (this.isControl(msg.topic)) return this.offerControl(msg);
    if (this.size < this.opts.capacity && this.waiting.length === 0) {
      this.push(msg);
      return true;
    }
    switch (this.opts.overflow) {
      case 'drop-oldest': {
        const old = this.shift();
        this.c.dropped++;
        this.dataDone++;
        if (old?.replyTo !== undefined) this.replies.lost(old, full(this.name));
        this.push(msg);
        return true;
      }
      case 'reject':
        this.c.rejected++;
        return false;
      default:
        return this.block(msg);
    }
  }

  /** True when every subscription the topic reaches is on the control lane. */
  private isControl(topic: string): boolean {
    const subs = this.handlersFor(topic);
    if (subs.length === 0) return false;
    for (let i = 0; i < subs.length; i++) if (!subs[i].control) return false;
    return true;
  }

  private offerControl(msg: BusMessage): boolean {
    if (this.control.length >= CONTROL_CAPACITY) {
      this.c.rejected++;
      if (msg.replyTo !== undefined) this.replies.lost(msg, full(this.name));
      return false;
    }
    this.control.push(msg);
    this.c.enqueued++;
    this.scheduleControl();
    return true;
  }

  private scheduleControl(): void {
    if (this.controlScheduled || this.pausedFlag || this.control.length === 0) return;
    this.controlScheduled = true;
    setImmediate(() => {
      this.controlScheduled = false;
      this.drainControl();
    });
  }

  /**
   * Handles every waiting control request now, beside whatever the data lane is doing: control
   * handlers only read, so they need not wait for an async data handler to finish, and an async
   * control handler does not hold up the next one.
   */
  private drainControl(): void {
    while (!this.pausedFlag && this.control.length > 0) {
      const batch = this.control;
      this.control = [];
      for (const msg of batch) {
        this.c.handled++;
        this.c.control++;
        const pending = this.dispatch(msg);
        if (pending !== undefined) {
          this.controlRunning++;
          void pending.finally(() => {
            this.controlRunning--;
            this.notifyIdle();
          });
        }
      }
    }
    this.notifyIdle();
  }

  private block(msg: BusMessage): Promise<boolean> {
    // the waiting line is bounded too, so a stuck module cannot make publishers pile up forever
    if (this.waiting.length >= this.opts.capacity) {
      this.c.dropped++;
      return Promise.resolve(false);
    }
    this.c.blocked++;
    return new Promise<boolean>((resolve) => {
      const entry: BlockedPublisher = {
        msg,
        resolve,
        timer: setTimeout(() => {
          const i = this.waiting.indexOf(entry);
          if (i >= 0) this.waiting.splice(i, 1);
          this.c.dropped++;
          resolve(false);
        }, this.opts.block_timeout_ms),
      };
      this.waiting.push(entry);
    });
  }

  private admitWaiting(): void {
    while (this.waiting.length > 0 && this.size < this.opts.capacity) {
      const w = this.waiting.shift()!;
      clearTimeout(w.timer);
      this.push(w.msg);
      w.resolve(true);
    }
  }

  private push(msg: BusMessage): void {
    this.dataIn++;
    this.queue.push(msg);
    this.c.enqueued++;
    this.schedule();
  }

  private shift(): BusMessage | undefined {
    if (this.head >= this.queue.length) return undefined;
    const msg = this.queue[this.head++];
    if (this.head === this.queue.length) {
      // drained: start a fresh young array. Reusing a long-lived one makes every push store a
      // young event into an old-space array, and the scavenger then spends most of the time
      // (measured: 2/3 of dispatch) on the remembered set.
      this.queue = [];
      this.head = 0;
    } else if (this.head > 1024 && this.head * 2 > this.queue.length) {
      // compact now and then instead of Array#shift, which is O(n) per call
      this.queue = this.queue.slice(this.head);
      this.head = 0;
    } else {
      this.queue[this.head - 1] = undefined as unknown as BusMessage;
    }
    return msg;
  }

  /**
   * Resolves once every data event queued before the call has been handled (or dropped): the
   * barrier a caller needs before reading a control answer, which no longer waits in line.
   * Events handled with `concurrency > 1` count when their call started.
   */
  settled(): Promise<void> {
    const upTo = this.dataIn;
    if (this.dataDone >= upTo) return Promise.resolve();
    return new Promise((resolve) => this.settledWaiters.push({ upTo, resolve }));
  }

  private releaseSettled(): void {
    const done = this.dataDone;
    this.settledWaiters = this.settledWaiters.filter((w) => {
      if (w.upTo > done) return true;
      w.resolve();
      return false;
    });
  }

  /** Holds events (they keep queueing) and detaches every handler; used while the module restarts. */
  pause(): void {
    this.pausedFlag = true;
    for (const s of this.subs) s.handler = null;
  }

  /**
   * Resumes after a restart: patterns the new instance did not claim are removed, and waiting
   * events only they matched are dropped and counted (the new code no longer wants them).
   */
  resume(): void {
    const unclaimed = this.subs.filter((s) => s.handler === null);
    if (unclaimed.length > 0) {
      this.subs = this.subs.filter((s) => s.handler !== null);
      this.patternsChanged();
    }
    this.pausedFlag = false;
    this.schedule();
    this.scheduleControl();
  }

  /** Removes every pattern and drops what waits: the module is gone for good. */
  close(): void {
    this.pausedFlag = true;
    this.subs = [];
    this.patternsChanged();
    let msg = this.shift();
    for (const c of this.control.splice(0)) {
      this.c.dropped++;
      if (c.replyTo !== undefined) this.replies.lost(c, new HubError('BUS_ERR_CLOSED', `module ${this.name} stopped`));
    }
    while (msg) {
      this.c.dropped++;
      if (msg.replyTo !== undefined)
        this.replies.lost(msg, new HubError('BUS_ERR_CLOSED', `module ${this.name} stopped`));
      msg = this.shift();
    }
    for (const w of this.waiting.splice(0)) {
      clearTimeout(w.timer);
      this.c.dropped++;
      w.resolve(false);
    }
    for (const w of this.settledWaiters.splice(0)) w.resolve();
    this.notifyIdle();
  }

  /** Resolves when nothing waits and no handler runs (or immediately when paused with work left). */
  idle(): Promise<void> {
    if (this.isIdle()) return Promise.resolve();
    return new Promise((resolve) => this.idleWaiters.push(resolve));
  }

  private isIdle(): boolean {
    return (
      !this.running &&
      this.concurrent === 0 &&
      this.controlRunning === 0 &&
      ((this.size === 0 && this.control.length === 0) || this.pausedFlag) &&
      this.waiting.length === 0
    );
  }

  private notifyIdle(): void {
    if (this.idleWaiters.length === 0 || !this.isIdle()) return;
    for (const r of this.idleWaiters.splice(0)) r();
  }

  private schedule(): void {
    if (this.scheduled || this.running || this.pausedFlag || this.size === 0) return;
    this.scheduled = true;
    setImmediate(() => {
      this.scheduled = false;
      void this.drain();
    });
  }

  private handlersFor(topic: string): Subscription[] {
    return this.routes.get(topic);
  }

  private async drain(): Promise<void> {
    if (this.running) return;
    this.running = true;
    try {
      let budget = this.clockEvery;
      let batchStart = performance.now();
      let lastRead = batchStart;
      while (!this.pausedFlag && this.size > 0) {
        const msg = this.shift()!;
        if (this.waiting.length > 0) this.admitWaiting();
        // only a handler that returned a promise costs an await; sync ones stay on the fast path
        const pending = this.dispatch(msg);
        if (pending !== undefined) await pending;
        this.c.handled++;
        this.dataDone++;
        if (this.settledWaiters.length > 0) this.releaseSettled();
        if (--budget === 0) {
          const now = performance.now();
          const perEvent = (now - lastRead) / this.clockEvery;
          this.clockEvery =
            perEvent > 0 ? Math.max(1, Math.min(CLOCK_EVERY, Math.floor(CHECK_MS / perEvent))) : CLOCK_EVERY;
          budget = this.clockEvery;
          lastRead = now;
          if (now - batchStart >= SLICE_MS) {
            this.c.ms += now - batchStart;
            // let I/O and the other mailboxes run: one busy subscriber must not starve them
            await new Promise<void>((r) => setImmediate(r));
            batchStart = lastRead = performance.now();
          }
        }
      }
      this.c.ms += performance.now() - batchStart;
    } finally {
      this.running = false;
      this.schedule();
      this.notifyIdle();
    }
  }

  private dispatch(msg: BusMessage): void | Promise<void> {
    const subs = this.handlersFor(msg.topic);
    let replied = false;
    // the clock is read for one event in 32 (and every async one): enough for the max, cheap on the hot path
    const sampled = (this.c.handled & 31) === 0;
    for (let i = 0; i < subs.length; i++) {
      const handler = subs[i].handler;
      if (handler === null) continue;
      const t0 = sampled ? performance.now() : 0;
      let result: unknown;
      try {
        result = handler(msg.payload, msg);
      } catch (err) {
        this.failed(msg, err, t0);
        replied = true;
        continue;
      }
      if (isThenable(result)) {
        if (subs[i].concurrency > 1) {
          const full = this.runConcurrently(msg, subs[i], result, !replied);
          replied = true;
          if (full) return full;
          continue;
        }
        return this.finishAsync(msg, subs, i, result, sampled ? t0 : performance.now(), replied);
      }
      if (sampled) this.timed(t0);
      if (msg.replyTo !== undefined && result !== undefined && !replied) {
        replied = true;
        this.replies.settle(msg, result, undefined);
      }
    }
    if (msg.replyTo !== undefined && !replied) this.replies.settle(msg, undefined, undefined);
  }

  /** The slow path, taken only once a handler returns a promise. */
  private async finishAsync(
    msg: BusMessage,
    subs: Subscription[],
    from: number,
    pending: PromiseLike<unknown>,
    t0: number,
    repliedBefore: boolean,
  ): Promise<void> {
    let replied = repliedBefore;
    for (let i = from; i < subs.length; i++) {
      let start = t0;
      let result: unknown;
      try {
        if (i === from) {
          result = await pending;
        } else {
          const handler = subs[i].handler;
          if (handler === null) continue;
          start = performance.now();
          result = await handler(msg.payload, msg);
        }
      } catch (err) {
        this.failed(msg, err, start);
        replied = true;
        continue;
      }
      this.timed(start);
      if (msg.replyTo !== undefined && result !== undefined && !replied) {
        replied = true;
        this.replies.settle(msg, result, undefined);
      }
    }
    if (msg.replyTo !== undefined && !replied) this.replies.settle(msg, undefined, undefined);
  }

  /**
   * Lets an async call of a concurrent subscription finish on its own; returns a promise only
   * when the subscription is at its limit, so the mailbox waits for a free slot.
   */
  private runConcurrently(
    msg: BusMessage,
    sub: Subscription,
    pending: PromiseLike<unknown>,
    answers: boolean,
  ): Promise<void> | undefined {
    sub.inflight++;
    this.concurrent++;
    Promise.resolve(pending)
      .then(
        (value) => {
          if (answers && msg.replyTo !== undefined) this.replies.settle(msg, value, undefined);
        },
        (err) => {
          this.logFailure(msg, err);
          if (answers && msg.replyTo !== undefined) this.replies.settle(msg, undefined, err);
        },
      )
      .finally(() => {
        sub.inflight--;
        this.concurrent--;
        for (const w of this.slotWaiters.splice(0)) w();
        this.notifyIdle();
      });
    if (sub.inflight < sub.concurrency) return undefined;
    return new Promise<void>((resolve) => {
      const check = () => (sub.inflight < sub.concurrency ? resolve() : this.slotWaiters.push(check));
      this.slotWaiters.push(check);
    });
  }

  /** Total handler time is summed per batch in drain(); this keeps the slowest single handler. */
  private timed(t0: number): void {
    const ms = performance.now() - t0;
    if (ms > this.c.maxMs) this.c.maxMs = ms;
  }

  private failed(msg: BusMessage, err: unknown, t0: number): void {
    if (t0 > 0) this.timed(t0);
    this.logFailure(msg, err);
    if (msg.replyTo !== undefined) this.replies.settle(msg, undefined, err);
  }

  /**
   * A handler that refused a caller's mistake (unknown project, project offline, invalid input:
   * `isClientMistake`) answered correctly; the caller gets the error with its code. That is a
   * debug line without a stack and no module error. Anything else is a failure of this module:
   * counted, and logged at error level with the stack.
   */
  private logFailure(msg: BusMessage, err: unknown): void {
    if (isClientMistake(err)) {
      this.log.debug(
        { code: errorCode(err), reason: (err as Error).message, topic: msg.topic, mailbox: this.name },
        'bus handler refused the request',
      );
      return;
    }
    this.c.errors++;
    this.log.error({ err, topic: msg.topic, mailbox: this.name }, 'bus handler failed');
  }

  stats(): MailboxStats {
    return {
      name: this.name,
      queued: this.size + this.control.length,
      capacity: this.opts.capacity,
      overflow: this.opts.overflow,
      paused: this.pausedFlag,
      enqueued: this.c.enqueued,
      handled: this.c.handled,
      dropped: this.c.dropped,
      rejected: this.c.rejected,
      errors: this.c.errors,
      blocked: this.c.blocked,
      control_handled: this.c.control,
      handler_ms_total: Math.round(this.c.ms * 1000) / 1000,
      handler_ms_max: Math.round(this.c.maxMs * 1000) / 1000,
      subscriptions: this.subs.map((s) => s.pattern),
    };
  }
}

function full(name: string): HubError {
  return new HubError('BUS_ERR_MAILBOX_FULL', `mailbox ${name} is full`);
}
