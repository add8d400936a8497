/**
 * /metrics: Prometheus text from a registry of this instance's own (never prom-client's global
 * one, so a restarted module registers its series again without a clash). The web module's own
 * series (HTTP, WebSocket, sync calls) are kept here; what the host and the other modules count
 * (command latencies, presence, the bridge …) they register themselves (core/metrics.ts), and
 * their families are read over the bus at scrape time (module-metrics.ts).
 */
import { Counter, collectDefaultMetrics, Gauge, Histogram, Registry } from 'prom-client';
import type { ModuleBus } from '../../core/bus.js';
import { ModuleMetrics } from './module-metrics.js';

const SCRAPE_TIMEOUT_MS = 1_000;

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
  private readonly modules: ModuleMetrics;

  constructor(
    bus: ModuleBus,
    live: {
      wsClients: () => number;
      syncWaiting: () => number;
      feedEvents: () => number;
      /** Events the feed keeps for resume now. */
      feedKept: () => number;
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
    new Gauge({
      name: 'hub_feed_replay_kept',
      help: 'Events the live feed keeps for WebSocket resume now (none once nobody has been connected for ws.replay_idle_s)',
      registers: r,
      collect() {
        this.set(live.feedKept());
      },
    });
  }

  /** The Prometheus text, after reading the host's and the modules' series. */
  async render(): Promise<{ contentType: string; text: string }> {
    await this.modules.scrape();
    const [own, proc] = await Promise.all([this.registry.metrics(), processMetrics().metrics()]);
    return { contentType: this.registry.contentType, text: own.endsWith('\n') ? own + proc : `${own}\n${proc}` };
  }
}
