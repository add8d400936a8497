import { type Bus, scopedBus } from './bus.js';
import type { Logger } from './log.js';
import type { Mailbox } from './mailbox.js';
import type { Clock, Migration, ModuleContext, ModuleTimers } from './module.js';
import type { ReadyPhase } from './ready-phase.js';
import type { DbPool } from './services/db.js';
import type { OutboxService } from './services/outbox/service.js';

export interface ContextParts {
  name: string;
  config: unknown;
  log: Logger;
  bus: Bus;
  mailbox: Mailbox;
  db: DbPool;
  clock: Clock;
  outbox: OutboxService;
  ready: ReadyPhase;
  onCrash: (err: Error) => void;
}

/**
 * Builds one instance's context and remembers everything registered through it, so the host
 * can release it all when the instance stops: no timer, listener or server outlives a restart.
 */
export class ContextScope {
  readonly ctx: ModuleContext<unknown>;
  private readonly timers = new Set<NodeJS.Timeout>();
  private readonly stopFns: Array<() => unknown> = [];
  private readonly readyWaits: Array<() => void> = [];
  private readonly abort = new AbortController();
  private live = true;

  constructor(p: ContextParts) {
    const subs: Array<() => void> = [];
    const bus = scopedBus(p.bus, p.mailbox, (off) => subs.push(off));
    const guardedBus = {
      ...bus,
      // after the scope is released an old instance's unsubscribe must not touch the patterns
      // its successor has re-claimed in the same mailbox
      subscribe: ((pattern, handler, opts) => {
        const off = bus.subscribe(pattern, handler, opts);
        return () => {
          if (this.live) off();
        };
      }) as typeof bus.subscribe,
    };
    const timers: ModuleTimers = {
      setTimeout: (fn, ms) => {
        const t = setTimeout(() => {
          this.timers.delete(t);
          fn();
        }, ms);
        this.timers.add(t);
        return t;
      },
      setInterval: (fn, ms) => {
        const t = setInterval(fn, ms);
        this.timers.add(t);
        return t;
      },
      clear: (t) => {
        clearTimeout(t);
        this.timers.delete(t);
      },
    };
    this.ctx = Object.freeze({
      name: p.name,
      config: p.config,
      log: p.log,
      bus: guardedBus,
      services: Object.freeze({
        db: (name?: string) => p.db.get(name),
        migrate: (migrations: Migration[], dbName?: string) => p.db.migrate(p.name, migrations, dbName),
        clock: p.clock,
        outbox: p.outbox.forModule(p.name),
      }),
      timers,
      signal: this.abort.signal,
      onStop: (fn: () => unknown) => {
        this.stopFns.push(fn);
      },
      onReady: (fn: () => unknown) => {
        this.readyWaits.push(
          p.ready.wait(() => {
            if (!this.live) return;
            // work begun on ready that fails is the instance failing: restarted with backoff
            Promise.resolve()
              .then(fn)
              .catch((err: unknown) => {
                if (this.live) p.onCrash(err instanceof Error ? err : new Error(String(err)));
              });
          }),
        );
      },
      crashed: (err: Error) => {
        if (this.live) p.onCrash(err);
      },
    }) as ModuleContext<unknown>;
  }

  /** Marks the scope dead: from now on the instance's unsubscribes, crash reports and ready callbacks are ignored. */
  detach(): void {
    this.live = false;
    this.abort.abort();
    for (const cancel of this.readyWaits.splice(0)) cancel();
  }

  /** Runs `onStop` callbacks last-in first-out and clears timers; failures are logged, not thrown. */
  async release(log: Logger): Promise<void> {
    this.detach();
    for (const t of this.timers) clearTimeout(t);
    this.timers.clear();
    for (const fn of this.stopFns.splice(0).reverse()) {
      try {
        await fn();
      } catch (err) {
        log.warn({ err }, 'release step failed');
      }
    }
  }
}
