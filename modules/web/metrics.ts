/**
 * /metrics: Prometheus text from a registry of this instance's own (never prom-client's global
 * one, so a restarted module registers its series again without a clash). The web module's own
 * series (HTTP, WebSocket, sync calls) are kept here, and so are command latencies, final
 * statuses and presence as this instance sees them pass in the command and status events. What
 * the host and the other modules count they register themselves (core/metrics.ts): their
 * families are read over the bus at scrape time (module-metrics.ts).
 */
import { Counter, collectDefaultMetrics, Gauge, Histogram, Registry } from 'prom-client';
import type { ModuleBus } from '../../core/bus.js';
import {
  type CommandEvent,
  type CommandView,
  type PresenceState,
  STATUS,
  type StatusChangedEvent,
} from '../shared/topics.js';
import { ModuleMetrics } from './module-metrics.js';

const FINAL = new Set(['completed', 'failed', 'timeout', 'cancelled']);
const PRESENCE: readonly PresenceState[] = ['offline', 'connecting', 'verifying', 'online', 'disconnecting'];
const STAGE_BUCKETS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 900, 3600];
/** Commands whose stages were observed, so a repeated event is not counted twice (oldest forgotten first). */
const SEEN_MAX = 50_000;
const SCRAPE_TIMEOUT_MS = 1_000;

const Q = 1; // queue observed
const D = 2; // delivery
const E = 4; // execution
const T = 8; // total + final status

const ms = (iso: string | null) => (iso ? Date.parse(iso) : Number.NaN);

/**
 * prom-client's default process metrics (`process_cpu_seconds_total`, `process_resident_memory_bytes`,
 * `nodejs_eventloop_lag_seconds`, `nodejs_heap_size_used_bytes`, GC durations …), the series every
 * Node service dashboard expects. They describe the process, not one module instance, and
 * collecting them installs process-wide observers (a GC PerformanceObserver, an event-loop delay
 * histogram) that nothing can remove: so one registry per process, made on first use and shared
 * by every web module instance and restart, instead of one per instance (which would add
 * observers at every restart).
 */
let processRegistry: Registry | undefined;
function processMetrics(): Registry {
  if (!processRegistry) {
    processRegistry = new Registry();
    collectDefaultMetrics({ register: processRegistry });
  }
  return processRegistry;
}

export class WebMetrics {
  readonly registry = new Registry();
  readonly httpRequests: Counter<'method' | 'route' | 'status'>;
  readonly httpDuration: Histogram<'route'>;
  /** Every 4xx the HTTP server answers, by its error code (auth, validation, routing, framework). */
  readonly httpRefusals: Counter<'code'>;
  readonly wsRejected: Counter<'reason'>;
  readonly wsSlow: Counter;
  readonly wsSent: Counter;
  private readonly stage: Histogram<'stage'>;
  private readonly finals: Counter<'status'>;
  private readonly presence = new Map<string, PresenceState>();
  private readonly seen = new Map<string, number>();
  private readonly modules: ModuleMetrics;

  constructor(
    private readonly bus: ModuleBus,
    live: {
      wsClients: () => number;
      syncWaiting: () => number;
      feedEvents: () => number;
      /** Sync calls answered, by how the result was found (command-waiter.ts). */
      syncAnswers?: () => { event: number; poll: number };
    },
  ) {
    const r = [this.registry];
    this.modules = new ModuleMetrics(bus, this.registry, SCRAPE_TIMEOUT_MS);
    this.httpRequests = new Counter({
      name: 'hub_http_requests_total',
      help: 'HTTP requests by route pattern and status',
      labelNames: ['method', 'route', 'status'],
      registers: r,
    });
    this.httpDuration = new Histogram({
      name: 'hub_http_request_duration_seconds',
      help: 'HTTP request time by route pattern (a sync call includes its wait)',
      labelNames: ['route'],
      buckets: [0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 30, 300],
      registers: r,
    });
    this.httpRefusals = new Counter({
      name: 'hub_http_refusals_total',
      help: 'HTTP requests refused with a 4xx, by error code (AUTH_ERR_TOKEN, *_ERR_INVALID, WEB_ERR_NOT_FOUND …)',
      labelNames: ['code'],
      registers: r,
    });
    this.wsRejected = new Counter({
      name: 'hub_ws_messages_rejected_total',
      help: 'WebSocket client messages answered with an error (malformed JSON, unknown op, bad fields)',
      labelNames: ['reason'],
      registers: r,
    });
    this.wsSlow = new Counter({
      name: 'hub_ws_slow_disconnects_total',
      help: 'WebSocket clients closed with 1013 because they did not read fast enough',
      registers: r,
    });
    this.wsSent = new Counter({
      name: 'hub_ws_events_sent_total',
      help: 'Events sent to WebSocket clients',
      registers: r,
    });
    new Gauge({
      name: 'hub_ws_clients',
      help: 'Open WebSocket connections',
      registers: r,
      collect() {
        this.set(live.wsClients());
      },
    });
    new Gauge({
      name: 'hub_sync_waiting',
      help: 'Synchronous command calls waiting for a result',
      registers: r,
      collect() {
        this.set(live.syncWaiting());
      },
    });
    new Counter({
      name: 'hub_sync_answers_total',
      help: 'Sync calls answered with their result, by how it came: event (pushed, this or another instance) or poll (the slow database re-read)',
      labelNames: ['via'],
      registers: r,
      collect() {
        const a = live.syncAnswers?.();
        if (!a) return;
        this.reset();
        if (a.event > 0) this.inc({ via: 'event' }, a.event);
        if (a.poll > 0) this.inc({ via: 'poll' }, a.poll);
      },
    });
    new Gauge({
      name: 'hub_feed_last_event_id',
      help: 'Events numbered by the live feed since this instance started',
      registers: r,
      collect() {
        this.set(live.feedEvents());
      },
    });
    this.stage = new Histogram({
      name: 'hub_command_stage_seconds',
      help: 'Command latency by stage: queue (created→sent), delivery (sent→acked), execution (agent), total (created→final)',
      labelNames: ['stage'],
      buckets: STAGE_BUCKETS,
      registers: r,
    });
    this.finals = new Counter({
      name: 'hub_commands_final_total',
      help: 'Commands that reached a final status',
      labelNames: ['status'],
      registers: r,
    });
    const presence = this.presence;
    new Gauge({
      name: 'hub_projects',
      help: 'Projects by presence state (as seen by this instance)',
      labelNames: ['state'],
      registers: r,
      collect() {
        const counts = new Map<PresenceState, number>(PRESENCE.map((s) => [s, 0]));
        for (const s of presence.values()) counts.set(s, (counts.get(s) ?? 0) + 1);
        for (const [state, n] of counts) this.set({ state }, n);
      },
    });
  }

  /** Keeps presence and command latencies from the events; call once when the module starts. */
  attach(): void {
    this.bus.subscribe<StatusChangedEvent>(STATUS.changedPattern, (ev) => {
      if (!ev || typeof ev.project_id !== 'string') return;
      this.presence.set(ev.project_id, ev.state);
      this.touched?.add(ev.project_id);
    });
    this.bus.subscribe<CommandEvent>('command/event/#', (ev) => this.onCommand(ev));
  }

  /** Projects whose state changed while a re-read of the list was under way (their event is newer). */
  private touched: Set<string> | null = null;

  /**
   * Re-reads every project's state from the status module (at start, then now and then, so
   * projects provisioned or removed since are counted right); an event that arrives meanwhile
   * wins over the list. Best effort: without an answer the counts stay as they are.
   */
  async syncPresence(timeoutMs: number): Promise<void> {
    if (this.touched) return;
    this.touched = new Set();
    try {
      const next = new Map<string, PresenceState>();
      for (let offset = 0; offset < 10_000_000; offset += 1000) {
        const page = await this.bus.request<{ items: { project_id: string; state: PresenceState }[] }>(
          STATUS.list,
          { include_disabled: true, limit: 1000, offset },
          { timeoutMs },
        );
        for (const p of page.items) next.set(p.project_id, p.state);
        if (page.items.length < 1000) break;
      }
      for (const id of this.touched) {
        const s = this.presence.get(id);
        if (s) next.set(id, s);
      }
      this.presence.clear();
      for (const [id, s] of next) this.presence.set(id, s);
    } finally {
      this.touched = null;
    }
  }

  private onCommand(ev: CommandEvent): void {
    // another instance's command: its latencies and final counts are that instance's to report
    if (!ev || ev.kind === 'log' || ev.remote) return;
    const c = ev.command;
    if (!c?.command_id) return;
    let mask = this.seen.get(c.command_id) ?? 0;
    const before = mask;
    if (ev.kind === 'result') {
      if (!(mask & E) && Number.isFinite(ev.result.duration) && ev.result.duration >= 0) {
        this.stage.observe({ stage: 'execution' }, ev.result.duration / 1000);
        mask |= E;
      }
    } else {
      mask = this.observeState(c, mask);
    }
    if (mask === before) return;
    if (FINAL.has(c.status)) {
      // the command is done: forget it once its last stage is in
      if (mask & E || c.status !== 'completed') this.seen.delete(c.command_id);
      else this.remember(c.command_id, mask);
    } else this.remember(c.command_id, mask);
  }

  private observeState(c: CommandView, mask: number): number {
    const created = ms(c.created_at);
    const sent = ms(c.sent_at);
    const acked = ms(c.acked_at);
    if (!(mask & Q) && sent >= created) {
      this.stage.observe({ stage: 'queue' }, (sent - created) / 1000);
      mask |= Q;
    }
    if (!(mask & D) && acked >= sent) {
      this.stage.observe({ stage: 'delivery' }, (acked - sent) / 1000);
      mask |= D;
    }
    if (!(mask & T) && FINAL.has(c.status)) {
      this.finals.inc({ status: c.status });
      const done = ms(c.completed_at);
      if (done >= created) this.stage.observe({ stage: 'total' }, (done - created) / 1000);
      mask |= T;
    }
    return mask;
  }

  private remember(id: string, mask: number): void {
    this.seen.delete(id);
    this.seen.set(id, mask);
    if (this.seen.size > SEEN_MAX) this.seen.delete(this.seen.keys().next().value as string);
  }

  /** The Prometheus text, after reading the host's and the modules' series. */
  async render(): Promise<{ contentType: string; text: string }> {
    await this.modules.scrape();
    const [own, proc] = await Promise.all([this.registry.metrics(), processMetrics().metrics()]);
    return { contentType: this.registry.contentType, text: own.endsWith('\n') ? own + proc : `${own}\n${proc}` };
  }
}
