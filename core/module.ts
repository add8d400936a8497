import type { Knex } from 'knex';
import type { ZodType } from 'zod';
import type { ModuleBus } from './bus.js';
import type { Logger } from './log.js';
import type { ModuleOutbox } from './services/outbox/service.js';

/** A database migration a module owns; `up` is PostgreSQL-dialect SQL or a function. */
export interface Migration {
  id: string;
  up: string | ((db: Knex) => Promise<void>);
}

export interface Clock {
  now(): number;
}

export interface ModuleServices {
  /** A named database from `databases:` in config.yml (default `default`). */
  db(name?: string): Knex;
  /** Applies this module's migrations (recorded per module name) and returns the ids applied now. */
  migrate(migrations: Migration[], dbName?: string): Promise<string[]>;
  clock: Clock;
  /** The outbox service: declare event types, write them in your transaction (core/services/outbox). */
  outbox: ModuleOutbox;
}

export interface ModuleTimers {
  setTimeout(fn: () => void, ms: number): NodeJS.Timeout;
  setInterval(fn: () => void, ms: number): NodeJS.Timeout;
  clear(t: NodeJS.Timeout): void;
}

/**
 * What the host hands a module instance. Everything registered through it (subscriptions,
 * timers, `onStop` callbacks) is released by the host when the instance stops, so nothing
 * leaks across restarts. A module reaches the world only through this. (docs/conventions.md#a-scoped-context-no-globals)
 */
export interface ModuleContext<C = unknown> {
  /** The instance name: the key under `modules:` in config.yml. */
  readonly name: string;
  readonly config: Readonly<C>;
  readonly log: Logger;
  readonly bus: ModuleBus;
  readonly services: ModuleServices;
  readonly timers: ModuleTimers;
  /** Aborted when the instance starts stopping; pass it to anything that takes a signal. */
  readonly signal: AbortSignal;
  /** Registers a release step (close a server, end a client); run in reverse order on stop. */
  onStop(fn: () => unknown): void;
  /**
   * Runs `fn` once the host is ready: every enabled module has started (`host/ready`). An instance
   * started after that (a restart, a reload) has it run at once, in a microtask. Not run when the
   * instance stops first; a throw or rejection counts as a crash (restarted with backoff). Open
   * flows of outside input here, so every module that consumes it is up when the first item comes.
   */
  onReady(fn: () => unknown): void;
  /** Tells the host the instance died on its own (a worker or process crashed); it restarts it with backoff. */
  crashed(err: Error): void;
}

export interface ModuleInstance {
  start?(): unknown;
  stop?(): unknown;
  /**
   * A config edit changed only this module's own settings (not its host keys: type, mailbox,
   * depends_on …). Return true when the instance took the new settings in place (the host then
   * does not restart it); false, or a throw, and it is restarted as usual. For settings whose
   * change must not cut open connections (the interfaces' tokens). `settings` is validated;
   * `ctx.config` keeps the settings the instance started with (the instance holds what it
   * applied), and the next start of the module gets the new ones.
   */
  reconfigure?(settings: unknown): boolean | Promise<boolean>;
}

/**
 * A module type's registration: the host finds providers by `name` (the `provider:` key, or
 * the module's own key) and validates the module's settings with `schema` before `create`.
 *
 * @example
 *   export const provider: ModuleProvider<{ greeting: string }> = {
 *     name: 'hello',
 *     schema: z.object({ greeting: z.string().default('hi') }).strict(),
 *     create: (ctx) => ({ start: () => { ctx.bus.subscribe('hello/ask', () => ctx.config.greeting); } }),
 *   };
 */
export interface ModuleProvider<C = unknown> {
  readonly name: string;
  readonly description?: string;
  readonly schema: ZodType<C>;
  /**
   * Modules this one calls and so starts after, when they are enabled (config `depends_on` adds
   * hard ones). Not for "wait until the others are up": that is `ctx.onReady`. A cycle, through
   * these or `depends_on`, is refused (core/module-graph.ts).
   */
  readonly dependencies?: readonly string[];
  /**
   * The module brings outside input onto the bus (MQTT uplinks, HTTP or gRPC calls, broker
   * logins). The host starts it after the modules that are not one, as far as dependencies allow,
   * and so stops it before them: what it took in is still answered while it drains.
   */
  readonly ingress?: boolean;
  create(ctx: ModuleContext<C>): ModuleInstance | Promise<ModuleInstance>;
}
