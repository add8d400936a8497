import type { BusMessage } from './bus.js';
import { deserializeError, HubError, type SerializedError, serializeError } from './errors.js';
import type { ModuleContext } from './module.js';
import { isValidPattern } from './topics.js';

/**
 * The host side of a module that lives elsewhere (a worker_thread or a child process). Both
 * speak the same small protocol, one JSON object per message:
 *
 *   peer → host  {op:'ready'} | {op:'subscribe', topic} | {op:'unsubscribe', topic}
 *                | {op:'publish', topic, payload} | {op:'request', id, topic, payload, timeout_ms?}
 *                | {op:'reply', id, payload?} | {op:'reply', id, error:{code,message}}
 *                | {op:'log', level, msg, ...fields}
 *   host → peer  {op:'hello', name, config} | {op:'event', id, topic, payload, reply}
 *                | {op:'response', id, payload?} | {op:'response', id, error} | {op:'stop'}
 *
 * `reply: true` on an event means the host waits for `{op:'reply', id}`: always so for bus
 * requests, and for every event when the transport asks for acknowledged delivery (workers),
 * which keeps the mailbox's in-order, one-at-a-time contract across the boundary. Events sent
 * with `reply: false` get no reply. A peer's own `request` is answered by a `response` with the
 * same id (ids are the peer's; the host's event ids are a separate sequence). A malformed message
 * is counted (`rejected`) and logged with a reason, never fatal; the example modules are
 * examples/exe/echo_module.py (Python, stdio) and examples/worker/greeter.mjs (worker_thread).
 */
export interface PeerTransport {
  /** Returns false when the transport is saturated; `drained` then says when to go on. */
  send(msg: object): boolean;
  drained?(): Promise<void>;
}

const LEVELS = new Set(['trace', 'debug', 'info', 'warn', 'error', 'fatal']);

export class RemotePeer {
  private readonly ctx: ModuleContext<unknown>;
  private readonly transport: PeerTransport;
  private readonly ackEveryEvent: boolean;
  private readonly subs = new Map<string, () => void>();
  private readonly inflight = new Map<number, { resolve: (v: unknown) => void; reject: (e: unknown) => void }>();
  private nextId = 1;
  private readyResolve!: () => void;
  private idleWaiters: Array<() => void> = [];
  /** Set by `failAll`: the peer is gone, nothing more is sent to it. */
  private dead = false;
  /** Resolves when the peer says `ready` (it subscribed to what it needs). */
  readonly ready: Promise<void>;
  /** Malformed messages received from the peer (each one is also logged with this count). */
  rejected = 0;

  constructor(ctx: ModuleContext<unknown>, transport: PeerTransport, opts: { ackEveryEvent: boolean }) {
    this.ctx = ctx;
    this.transport = transport;
    this.ackEveryEvent = opts.ackEveryEvent;
    this.ready = new Promise((r) => {
      this.readyResolve = r;
    });
  }

  hello(): void {
    this.transport.send({ op: 'hello', name: this.ctx.name, config: this.ctx.config });
  }

  /** Handles one message from the peer; malformed ones are logged and counted, never thrown. */
  onMessage(raw: unknown): void {
    const m = raw as Record<string, unknown>;
    if (!m || typeof m !== 'object' || typeof m.op !== 'string') {
      this.bad('message is not an object with an op', raw);
      return;
    }
    switch (m.op) {
      case 'ready':
        this.readyResolve();
        return;
      case 'subscribe':
        if (typeof m.topic !== 'string' || !isValidPattern(m.topic)) {
          this.bad('subscribe needs a valid topic filter', raw);
          return;
        }
        // a late line from a peer whose instance was already released must not claim patterns
        // in the mailbox the next instance inherits
        if (this.ctx.signal.aborted) return;
        if (!this.subs.has(m.topic)) {
          this.subs.set(
            m.topic,
            this.ctx.bus.subscribe(m.topic, (_p, msg) => this.deliver(msg)),
          );
        }
        return;
      case 'unsubscribe':
        if (typeof m.topic === 'string') {
          this.subs.get(m.topic)?.();
          this.subs.delete(m.topic);
        }
        return;
      case 'publish':
        if (typeof m.topic !== 'string') {
          this.bad('publish needs a topic', raw);
          return;
        }
        try {
          void this.ctx.bus.publish(m.topic, m.payload);
        } catch (err) {
          this.bad(`publish refused: ${(err as Error).message}`, raw);
        }
        return;
      case 'request': {
        if (typeof m.topic !== 'string' || m.id === undefined) {
          this.bad('request needs id and topic', raw);
          return;
        }
        const id = m.id;
        const timeoutMs = typeof m.timeout_ms === 'number' ? m.timeout_ms : undefined;
        let answer: Promise<unknown>;
        try {
          // a bad topic throws synchronously; it must reach the peer as an error, not the host's stack
          answer = this.ctx.bus.request(m.topic, m.payload, { timeoutMs });
        } catch (err) {
          this.bad(`request refused: ${(err as Error).message}`, raw);
          answer = Promise.reject(err);
        }
        answer.then(
          (payload) => this.respond(id, payload),
          (err) => this.respond(id, undefined, err),
        );
        return;
      }
      case 'reply': {
        const slot = this.inflight.get(m.id as number);
        if (!slot) {
          this.bad('reply for an unknown event id', raw);
          return;
        }
        this.inflight.delete(m.id as number);
        if (m.error) slot.reject(deserializeError(m.error as SerializedError));
        else slot.resolve(m.payload);
        this.notifyIdle();
        return;
      }
      case 'log': {
        const level = typeof m.level === 'string' && LEVELS.has(m.level) ? m.level : 'info';
        const { op: _op, level: _l, msg, ...fields } = m;
        (this.ctx.log as unknown as Record<string, (o: object, s: string) => void>)[level](fields, String(msg ?? ''));
        return;
      }
      default:
        this.bad(`unknown op ${m.op}`, raw);
    }
  }

  /** Counts and logs input the transport could not even decode (a line that is not JSON, too long …). */
  malformed(reason: string): void {
    this.bad(reason, undefined);
  }

  private bad(reason: string, raw: unknown): void {
    this.rejected++;
    this.ctx.log.warn(
      { reason, op: (raw as { op?: unknown })?.op, rejected: this.rejected },
      'peer sent a malformed message',
    );
  }

  /** Answers a peer's request; a reply the transport cannot carry (not serializable) becomes an error. */
  private respond(id: unknown, payload: unknown, err?: unknown): void {
    if (this.dead) return;
    try {
      if (err === undefined) {
        this.transport.send({ op: 'response', id, payload });
        return;
      }
    } catch (sendErr) {
      err = new HubError('BUS_ERR_HANDLER', `reply cannot be sent to the peer: ${(sendErr as Error).message}`);
    }
    try {
      this.transport.send({ op: 'response', id, error: serializeError(err) });
    } catch {
      // the transport is gone; the peer's own timeout (or its death) ends its wait
    }
  }

  private deliver(msg: BusMessage): unknown {
    // the peer died and the host has not paused the mailbox yet: fail this one event, do not hang on it
    if (this.dead) return Promise.reject(new HubError('BUS_ERR_CLOSED', `module ${this.ctx.name} is not running`));
    const wantsReply = msg.replyTo !== undefined;
    if (!wantsReply && !this.ackEveryEvent) {
      const ok = this.transport.send({ op: 'event', id: 0, topic: msg.topic, payload: msg.payload, reply: false });
      return ok ? undefined : this.transport.drained?.();
    }
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      this.inflight.set(id, { resolve, reject });
      try {
        this.transport.send({ op: 'event', id, topic: msg.topic, payload: msg.payload, reply: wantsReply });
      } catch (err) {
        // not serializable: the event fails here, and no reply is awaited (idle() must not hang on it)
        this.inflight.delete(id);
        this.notifyIdle();
        reject(err);
      }
    });
  }

  /** Resolves once no delivered event waits for its reply. */
  idle(): Promise<void> {
    if (this.inflight.size === 0) return Promise.resolve();
    return new Promise((r) => this.idleWaiters.push(r));
  }

  private notifyIdle(): void {
    if (this.inflight.size === 0) for (const r of this.idleWaiters.splice(0)) r();
  }

  /** The peer is gone: events it held fail (the mailbox counts them), waiters are released. */
  failAll(reason: string): void {
    this.dead = true;
    const err = new HubError('BUS_ERR_CLOSED', reason);
    for (const slot of this.inflight.values()) slot.reject(err);
    this.inflight.clear();
    this.notifyIdle();
  }
}
