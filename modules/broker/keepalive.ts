/**
 * Keepalive without a timer a connection. aedes arms a `setTimeout` for each client, with a
 * closure of its own (handlers/connect.js `setKeepAlive`), and refreshes it on every packet: about
 * 170 bytes of live heap a connection with what it holds, 1.7 MB with the embedded broker holding
 * 10 000 agents (docs/benchmarks.md "Keepalive by one sweep"). Once a client is connected, `adopt` swaps its
 * timer for a mark of the time of its last packet (a small integer and the client), and one sweep
 * for the whole broker ends the clients silent for longer than their interval, as aedes' timer
 * did: `keepaliveTimeout` on the broker, then the client's 'error', on which aedes closes it (and
 * publishes its will).
 *
 * What aedes does with the timer after CONNECT, and why a mark serves: it calls
 * `client._keepaliveTimer.refresh()` after each packet (handlers/index.js), and at close
 * `clearTimeout(client._keepaliveTimer)`, which ignores an object that is no Node timer (one
 * without `_onTimeout`). A client that is not built that way (an aedes upgrade) keeps its timer,
 * and `adopt` says so (`unlike`).
 *
 * Times are counted in ticks of `TICK_MS` from the module's load on the monotonic clock, so the
 * mark's field stays a small integer (no heap number per packet) for years, and a wall clock
 * that jumps ends nobody. A client is ended between its interval and its interval plus a tick and one sweep
 * period (a quarter of the shortest interval adopted, at most a second, at least 100 ms).
 */
import { performance } from 'node:perf_hooks';
import type { Aedes, Client } from 'aedes';

const TICK_MS = 50;
const SWEEP_MAX_MS = 1_000;
const SWEEP_MIN_MS = 100;

const nowTick = (): number => Math.floor(performance.now() / TICK_MS);

/** A client's last packet, in ticks: what stands in for aedes' keepalive timer. */
export class KeepaliveMark {
  at = nowTick();
  constructor(readonly client: Client) {}
  /** Called by aedes after each packet the client sends. */
  refresh(): this {
    this.at = nowTick();
    return this;
  }
}

/** The parts of aedes' client this reads and writes. */
interface KeepaliveParts {
  _keepaliveTimer: unknown;
  _keepaliveInterval: number;
  emit(event: 'error', err: Error): boolean;
}

export class KeepaliveSweep {
  /**
   * The adopted clients' marks, in a plain array: a sweep walks it and drops the marks of clients
   * gone (aedes sets their timer to null at close). Not aedes' own table of clients: walking a
   * dictionary of 10 000 keys costs milliseconds a sweep (its keys gathered and ordered each time);
   * this array, tens of microseconds.
   */
  private marks: KeepaliveMark[] = [];
  private timer: NodeJS.Timeout | null = null;
  private periodMs = SWEEP_MAX_MS;
  private stopped = false;
  /** Clients this sweep ended, for the broker's stats and tests. */
  ended = 0;

  constructor(private readonly aedes: Aedes) {}

  /** Clients whose keepalive this sweep keeps (gone ones leave at the next sweep). */
  get size(): number {
    return this.marks.length;
  }

  /**
   * Swaps the connected client's keepalive timer for a mark: `adopted`; `none` when it asked for
   * no keepalive (0), or the sweep has stopped (the broker is closing: aedes' timer stays, and
   * aedes clears it as it closes the client, where a new sweep would outlive the broker);
   * `unlike` when its timer is not where aedes 1.x keeps it (it stays).
   */
  adopt(client: Client): 'adopted' | 'none' | 'unlike' {
    const c = client as unknown as KeepaliveParts;
    if (this.stopped || (c._keepaliveInterval === -1 && c._keepaliveTimer === null)) return 'none';
    const timer = c._keepaliveTimer as { refresh?: unknown; _onTimeout?: unknown } | null;
    if (!(c._keepaliveInterval > 0) || !timer || typeof timer.refresh !== 'function' || !('_onTimeout' in timer))
      return 'unlike';
    clearTimeout(timer as NodeJS.Timeout);
    const mark = new KeepaliveMark(client);
    c._keepaliveTimer = mark;
    this.marks.push(mark);
    const wanted = Math.max(SWEEP_MIN_MS, Math.min(SWEEP_MAX_MS, Math.floor(c._keepaliveInterval / 4)));
    if (this.timer === null || wanted < this.periodMs) this.schedule(wanted);
    return 'adopted';
  }

  /** Ends every adopted client silent for longer than its interval (aedes' `keepaliveTimeout`). */
  sweep(): void {
    const now = nowTick();
    const marks = this.marks;
    let kept = 0;
    for (let i = 0; i < marks.length; i++) {
      const mark = marks[i];
      const c = mark.client as unknown as KeepaliveParts;
      if (c._keepaliveTimer !== mark) continue; // closed (aedes cleared it): dropped
      // a tick short: both ends are floored, so the silence may be up to a tick less than it reads
      if ((now - mark.at - 1) * TICK_MS <= c._keepaliveInterval) {
        marks[kept++] = mark;
        continue;
      }
      this.ended++;
      // aedes closes the client on its 'error' (its timer then null): the mark goes with it
      this.aedes.emit('keepaliveTimeout', mark.client);
      c.emit('error', new Error('keep alive timeout'));
    }
    marks.length = kept;
  }

  /** For good: clients adopted later keep aedes' timers. */
  stop(): void {
    this.stopped = true;
    this.marks = [];
    this.clearTimer();
  }

  private clearTimer(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
  }

  private schedule(periodMs: number): void {
    this.clearTimer();
    this.periodMs = periodMs;
    this.timer = setInterval(() => this.sweep(), periodMs);
    this.timer.unref();
  }
}
