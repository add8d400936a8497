/**
 * The outbox as a host service (seed 003). Modules reach it through `ctx.services.outbox`:
 * they declare, once their migrations ran, which event types they emit and into which of their
 * own tables; `add` writes an event inside the module's own transaction, one row per route that
 * wants it; a relay per (table, route) delivers it. The host answers the operator surface
 * (dead list, replay, stats) for every table declared in this process.
 */
import { randomUUID } from 'node:crypto';
import type { Knex } from 'knex';
import { HubError } from '../../errors.js';
import type { Logger } from '../../log.js';
import type { DbPool } from '../db.js';
import type { Migration } from '../migrations.js';
import {
  type DeadEvent,
  EVENT_CATALOGUE,
  type EventType,
  isEventType,
  type OutboxConfig,
  type OutboxEnvelope,
  type RouteConfig,
  type RouteStats,
} from './contract.js';
import type { Destination } from './destination.js';
import { MqttDestination } from './mqtt-destination.js';
import { type RelayCounters, RouteRelay } from './relay.js';
import { checkTable, countDead, insertEvents, listDead, outboxMigration, replayDead, routeGauges } from './tables.js';
import { WebhookDestination } from './webhook-destination.js';

/** One event for `addMany`. */
export interface OutboxEvent {
  eventType: string;
  key: string;
  data: unknown;
}

/** What a module's context offers (ctx.services.outbox). */
export interface ModuleOutbox {
  /** The migration creating an outbox table; list it among the module's own migrations. */
  migration(id: string, table: string): Migration;
  /**
   * Declares the event types this module writes and the table they go to (after the table's
   * migration ran). Throws OUTBOX_ERR_UNKNOWN_EVENT for a type the catalogue lacks and
   * OUTBOX_ERR_EVENT_OWNED for one another module declared. Safe to repeat (a restart).
   */
  declare(decl: { table: string; database?: string; events: readonly string[] }): void;
  /** Whether any enabled route wants `eventType`: lets a hot path skip building an event nobody reads. */
  routed(eventType: string): boolean;
  /**
   * Writes one event inside `trx` (the module's business transaction) and returns its id, or
   * null when no route wants that type. An undeclared type throws OUTBOX_ERR_UNDECLARED_EVENT,
   * so the caller's transaction rolls back with it: a business change never commits without the
   * event it was meant to carry.
   *
   * @example
   *   await db.transaction(async (trx) => {
   *     await trx('orders').update({ status: 'done' }).where({ id });
   *     await ctx.services.outbox.add(trx, 'command.completed', projectId, { command_id: id });
   *   });
   */
  add(trx: Knex | Knex.Transaction, eventType: string, key: string, data: unknown): Promise<string | null>;
  /** `add` for several events in one statement; returns the ids written. */
  addMany(trx: Knex | Knex.Transaction, events: readonly OutboxEvent[]): Promise<string[]>;
}

interface Declared {
  module: string;
  table: string;
  database: string;
}

interface TableRef {
  table: string;
  database: string;
}

export class OutboxService {
  /** This process's lease owner id. */
  readonly owner = `${process.pid}-${randomUUID()}`;
  private readonly declared = new Map<EventType, Declared>();
  private readonly tables = new Map<string, TableRef>();
  private readonly relays = new Map<string, RouteRelay>();
  private readonly destinations = new Map<string, Destination>();
  private readonly counters = new Map<string, RelayCounters>();
  private stopped = false;

  constructor(
    private readonly cfg: OutboxConfig,
    private readonly pool: DbPool,
    private readonly log: Logger,
  ) {
    for (const name of Object.keys(cfg.routes)) this.counters.set(name, { published: 0, retried: 0, died: 0 });
  }

  private routesFor(eventType: string): string[] {
    return Object.entries(this.cfg.routes)
      .filter(([, r]) => r.enable && r.events.includes(eventType))
      .map(([name]) => name);
  }

  /** The handle a module's context carries. */
  forModule(module: string): ModuleOutbox {
    return Object.freeze({
      migration: (id: string, table: string) => outboxMigration(id, table),
      declare: (decl: { table: string; database?: string; events: readonly string[] }) => this.declare(module, decl),
      routed: (eventType: string) => this.routesFor(eventType).length > 0,
      add: async (trx: Knex | Knex.Transaction, eventType: string, key: string, data: unknown) => {
        const ids = await this.addMany(module, trx, [{ eventType, key, data }]);
        return ids[0] ?? null;
      },
      addMany: (trx: Knex | Knex.Transaction, events: readonly OutboxEvent[]) => this.addMany(module, trx, events),
    });
  }

  private declare(module: string, decl: { table: string; database?: string; events: readonly string[] }): void {
    const table = checkTable(decl.table);
    const database = decl.database ?? 'default';
    for (const e of decl.events) {
      if (!isEventType(e))
        throw new HubError('OUTBOX_ERR_UNKNOWN_EVENT', `module ${module} declared unknown event type "${e}"`, {
          module,
          event_type: e,
        });
      const had = this.declared.get(e);
      if (had && had.module !== module)
        throw new HubError('OUTBOX_ERR_EVENT_OWNED', `event type "${e}" is already declared by module ${had.module}`, {
          module,
          event_type: e,
          owner: had.module,
        });
    }
    for (const e of decl.events) this.declared.set(e as EventType, { module, table, database });
    this.tables.set(`${database}/${table}`, { table, database });
    for (const [route, r] of Object.entries(this.cfg.routes)) {
      if (r.enable && r.events.some((e) => decl.events.includes(e))) this.startRelay(route, r, { table, database });
    }
  }

  private startRelay(route: string, cfg: RouteConfig, ref: TableRef): void {
    const key = `${ref.database}/${ref.table}/${route}`;
    if (this.stopped || this.relays.has(key)) return;
    let dest = this.destinations.get(route);
    if (!dest) {
      dest =
        cfg.destination.type === 'mqtt'
          ? new MqttDestination(route, cfg.destination)
          : new WebhookDestination(route, cfg.destination);
      this.destinations.set(route, dest);
    }
    const relay = new RouteRelay({
      db: () => this.pool.get(ref.database),
      table: ref.table,
      route,
      cfg,
      outbox: this.cfg,
      owner: this.owner,
      destination: dest,
      counters: this.counters.get(route)!,
      log: this.log,
    });
    this.relays.set(key, relay);
    relay.start();
    this.log.info({ route, table: ref.table, destination: cfg.destination.type }, 'outbox relay started');
  }

  private async addMany(
    module: string,
    trx: Knex | Knex.Transaction,
    events: readonly OutboxEvent[],
  ): Promise<string[]> {
    const byTable = new Map<string, { ref: Declared; rows: Parameters<typeof insertEvents>[2] }>();
    const ids: string[] = [];
    const occurred_at = new Date().toISOString();
    for (const ev of events) {
      const d = isEventType(ev.eventType) ? this.declared.get(ev.eventType) : undefined;
      if (!d || d.module !== module)
        throw new HubError(
          'OUTBOX_ERR_UNDECLARED_EVENT',
          `module ${module} wrote event type "${ev.eventType}" it did not declare (known: ${Object.keys(EVENT_CATALOGUE).join(', ')})`,
          { module, event_type: ev.eventType },
        );
      const routes = this.routesFor(ev.eventType);
      if (routes.length === 0) continue;
      const event_id = randomUUID();
      ids.push(event_id);
      const envelope: OutboxEnvelope = {
        event_id,
        event_type: ev.eventType as EventType,
        key: ev.key,
        occurred_at,
        source: 'gmq-hub',
        data: ev.data,
      };
      const k = `${d.database}/${d.table}`;
      if (!byTable.has(k)) byTable.set(k, { ref: d, rows: [] });
      for (const route of routes)
        byTable.get(k)!.rows.push({ event_id, route, event_type: ev.eventType, event_key: ev.key, payload: envelope });
    }
    for (const { ref, rows } of byTable.values()) {
      await insertEvents(trx, ref.table, rows);
      // knex's transaction promise settles at COMMIT/ROLLBACK: wake the relays after a commit only
      const done = (trx as Partial<Knex.Transaction>).executionPromise;
      const wake = () => {
        for (const route of new Set(rows.map((r) => r.route)))
          this.relays.get(`${ref.database}/${ref.table}/${route}`)?.wake();
      };
      if (done) done.then(wake, () => undefined);
      else wake();
    }
    return ids;
  }

  private refs(): TableRef[] {
    return [...this.tables.values()];
  }

  private routeFilter(route?: string): string[] {
    if (route === undefined) return Object.keys(this.cfg.routes);
    if (!Object.hasOwn(this.cfg.routes, route))
      throw new HubError('OUTBOX_ERR_NOT_FOUND', `no outbox route named "${route}"`, { route });
    return [route];
  }

  /** Dead events, oldest first, over every declared table. */
  async deadList(q: {
    route?: string;
    limit?: number;
    offset?: number;
  }): Promise<{ items: DeadEvent[]; total: number }> {
    const routes = this.routeFilter(q.route);
    const limit = Math.min(Math.max(1, q.limit ?? 100), 500);
    const offset = Math.max(0, q.offset ?? 0);
    let total = 0;
    const all: DeadEvent[] = [];
    for (const ref of this.refs()) {
      const db = this.pool.get(ref.database);
      total += await countDead(db, ref.table, routes);
      for (const r of await listDead(db, ref.table, routes, offset + limit)) {
        all.push({
          event_id: r.event_id,
          route: r.route,
          event_type: r.event_type,
          key: r.event_key,
          attempts: Number(r.attempts),
          last_error: r.last_error,
          created_at: new Date(r.created_at).toISOString(),
          dead_at: new Date(r.updated_at).toISOString(),
          envelope: (typeof r.payload === 'string' ? JSON.parse(r.payload) : r.payload) as OutboxEnvelope,
        });
      }
    }
    all.sort((a, b) => (a.created_at < b.created_at ? -1 : a.created_at > b.created_at ? 1 : 0));
    return { items: all.slice(offset, offset + limit), total };
  }

  /** Puts a dead event back to pending (on one route, or every route it died on). */
  async replay(q: { event_id: string; route?: string }): Promise<{ event_id: string; routes: string[] }> {
    const routes = this.routeFilter(q.route);
    const replayed: string[] = [];
    for (const ref of this.refs()) {
      const got = await replayDead(this.pool.get(ref.database), ref.table, q.event_id, routes);
      replayed.push(...got);
      for (const route of got) this.relays.get(`${ref.database}/${ref.table}/${route}`)?.wake();
    }
    if (replayed.length === 0)
      throw new HubError(
        'OUTBOX_ERR_NOT_FOUND',
        `no dead event ${q.event_id}${q.route ? ` on route ${q.route}` : ''}`,
        { event_id: q.event_id, ...(q.route ? { route: q.route } : {}) },
      );
    this.log.info({ event_id: q.event_id, routes: replayed }, 'dead outbox event replayed');
    return { event_id: q.event_id, routes: replayed };
  }

  /** Per route: pending, dead and lag from the tables; published/retried/died of this instance. */
  async stats(): Promise<{ routes: RouteStats[] }> {
    const out = new Map<string, RouteStats>();
    for (const [route, c] of this.counters)
      out.set(route, {
        route,
        pending: 0,
        dead: 0,
        lag_seconds: 0,
        published: c.published,
        retried: c.retried,
        died: c.died,
      });
    for (const ref of this.refs()) {
      for (const g of await routeGauges(this.pool.get(ref.database), ref.table)) {
        const s = out.get(g.route);
        if (!s) continue; // a route since removed from the config
        s.pending += g.pending;
        s.dead += g.dead;
        s.lag_seconds = Math.max(s.lag_seconds, g.lag_seconds);
      }
    }
    return { routes: [...out.values()] };
  }

  /** Stops every relay (waiting for deliveries in flight) and closes the destinations. Before the pool closes. */
  async stop(): Promise<void> {
    if (this.stopped) return;
    this.stopped = true;
    await Promise.allSettled([...this.relays.values()].map((r) => r.stop()));
    this.relays.clear();
    await Promise.allSettled([...this.destinations.values()].map((d) => d.close()));
    this.destinations.clear();
  }
}
