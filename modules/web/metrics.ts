/**
 * /metrics: Prometheus text from a registry of this instance's own (never prom-client's global
 * one, so a restarted module registers its series again without a clash). Bus and MQTT
 * counters are read over the bus at scrape time; command latencies, final statuses and
 * presence are kept from the command and status events as they pass.
 */
import { Counter, collectDefaultMetrics, Gauge, Histogram, Registry } from 'prom-client';
import type { ModuleBus } from '../../core/bus.js';
import { HOST_TOPICS } from '../../core/host-topics.js';
import type { MailboxStats } from '../../core/mailbox.js';
import { OUTBOX_TOPICS, type RouteStats } from '../../core/services/outbox/contract.js';
import { UPLINK_COMMAND_TYPES, UPLINK_DATA_TYPES } from '../shared/protocol.js';
import {
  BRIDGE,
  BROKER,
  type BridgeRejectedEvent,
  type BridgeStats,
  type BrokerStats,
  COMMAND,
  type CommandEvent,
  type CommandView,
  type PresenceState,
  STATUS,
  type StatusChangedEvent,
} from '../shared/topics.js';

interface BusStats {
  published: number;
  unrouted: number;
  pending_requests: number;
  mailboxes: MailboxStats[];
}

/** Refused uplinks are labelled by their type only when it is one of ours: agents choose the string. */
const UPLINK_TYPES = new Set<string>([...UPLINK_COMMAND_TYPES, ...UPLINK_DATA_TYPES]);

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
  private readonly rejectedByType: Counter<'type' | 'attributed'>;
  /** The outbox service's routes (core/services/outbox), read at scrape time from the host. */
  private readonly outbox: {
    pending: Gauge<'route'>;
    dead: Gauge<'route'>;
    lag: Gauge<'route'>;
    published: Counter<'route'>;
    retried: Counter<'route'>;
    died: Counter<'route'>;
  };
  private readonly presence = new Map<string, PresenceState>();
  private readonly seen = new Map<string, number>();
  private readonly gauges: {
    mailboxQueued: Gauge<'mailbox'>;
    mailboxCounters: Record<'enqueued' | 'handled' | 'dropped' | 'rejected' | 'errors', Counter<'mailbox'>>;
    busPublished: Counter;
    busUnrouted: Counter;
    busPending: Gauge;
    mqttConnected: Gauge;
    mqttPublished: Counter;
    mqttFailures: Counter;
    mqttReceived: Counter;
    mqttRejected: Counter<'code'>;
    mqttReconnects: Counter;
    mqttDurable: Counter<'outcome'>;
    mqttDurableWaiting: Gauge;
  };
  /** Refusals outside the bridge's parser: the broker's denials and the modules' uplink refusals. */
  private readonly refusals: {
    brokerDenials: Counter<'kind' | 'reason'>;
    uplinksRefused: Counter<'module' | 'reason'>;
    commandCounters: Counter<'counter'>;
  };

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
    this.rejectedByType = new Counter({
      name: 'hub_uplinks_rejected_by_type_total',
      help: 'Uplinks the bridge refused (parser or verification), by message type (unknown: unreadable or not ours) and whether a project id could be read',
      labelNames: ['type', 'attributed'],
      registers: r,
    });
    const counter = (name: string, help: string) => new Counter({ name, help, registers: r });
    const perMailbox = (what: string) =>
      new Counter({
        name: `hub_bus_mailbox_${what}_total`,
        help: `Bus mailbox events ${what}, per subscriber mailbox`,
        labelNames: ['mailbox'],
        registers: r,
      });
    this.gauges = {
      mailboxQueued: new Gauge({
        name: 'hub_bus_mailbox_queued',
        help: 'Events waiting in each bus mailbox',
        labelNames: ['mailbox'],
        registers: r,
      }),
      mailboxCounters: {
        enqueued: perMailbox('enqueued'),
        handled: perMailbox('handled'),
        dropped: perMailbox('dropped'),
        rejected: perMailbox('rejected'),
        errors: perMailbox('errors'),
      },
      busPublished: counter('hub_bus_published_total', 'Events and requests published on the bus'),
      busUnrouted: counter('hub_bus_unrouted_total', 'Bus events no mailbox subscribed to'),
      busPending: new Gauge({ name: 'hub_bus_pending_requests', help: 'Bus requests awaiting a reply', registers: r }),
      mqttConnected: new Gauge({
        name: 'hub_mqtt_connected',
        help: '1 when the MQTT bridge is connected to the broker',
        registers: r,
      }),
      mqttPublished: counter('hub_mqtt_published_total', 'Downlinks the broker acknowledged'),
      mqttFailures: counter('hub_mqtt_publish_failures_total', 'Downlink publishes that failed'),
      mqttReceived: counter('hub_mqtt_uplinks_received_total', 'Valid uplinks handed to the bus'),
      mqttRejected: new Counter({
        name: 'hub_mqtt_uplinks_rejected_total',
        help: 'Uplinks refused by the parser, by error code',
        labelNames: ['code'],
        registers: r,
      }),
      mqttReconnects: counter('hub_mqtt_reconnects_total', 'MQTT bridge reconnect attempts'),
      mqttDurable: new Counter({
        name: 'hub_mqtt_durable_uplinks_total',
        help: 'State-carrying uplinks by outcome: acked (written, then acknowledged), retried (a write attempt after a failure), withheld (left for the broker to deliver again), timeout (not written within durable_wait_ms: reconnected)',
        labelNames: ['outcome'],
        registers: r,
      }),
      mqttDurableWaiting: new Gauge({
        name: 'hub_mqtt_durable_uplinks_waiting',
        help: 'State-carrying uplinks waiting for their write (not yet acknowledged to the broker)',
        registers: r,
      }),
    };
    const perRoute = <K extends 'g' | 'c'>(kind: K, name: string, help: string) =>
      (kind === 'g'
        ? new Gauge({ name, help, labelNames: ['route'], registers: r })
        : new Counter({ name, help, labelNames: ['route'], registers: r })) as K extends 'g'
        ? Gauge<'route'>
        : Counter<'route'>;
    this.outbox = {
      pending: perRoute('g', 'hub_outbox_pending', 'Domain events waiting for delivery, per outbox route'),
      dead: perRoute('g', 'hub_outbox_dead', 'Domain events dead (every attempt failed), per outbox route'),
      lag: perRoute('g', 'hub_outbox_lag_seconds', 'Age of the oldest pending domain event, per outbox route'),
      published: perRoute('c', 'hub_outbox_published_total', 'Domain events this instance delivered, per route'),
      retried: perRoute('c', 'hub_outbox_retried_total', 'Failed deliveries this instance rescheduled, per route'),
      died: perRoute('c', 'hub_outbox_deaths_total', 'Domain events this instance moved to dead, per route'),
    };
    this.refusals = {
      brokerDenials: new Counter({
        name: 'hub_broker_denials_total',
        help: 'What the embedded broker refused, by kind (auth, publish, subscribe) and reason (not_json, project_id, too_large, bad_credentials, revoked_disabled …)',
        labelNames: ['kind', 'reason'],
        registers: r,
      }),
      uplinksRefused: new Counter({
        name: 'hub_uplinks_refused_total',
        help: "Parsed uplinks a module refused, by module and reason (foreign: another project's command; unknown: no such command; bad_signature …)",
        labelNames: ['module', 'reason'],
        registers: r,
      }),
      commandCounters: new Counter({
        name: 'hub_command_module_total',
        help: "This instance's command module: results it wrote, results it asked for again (reasks), events of other instances it republished (cluster_events_in) or dropped as already seen (cluster_duplicates), listener connection losses",
        labelNames: ['counter'],
        registers: r,
      }),
    };
  }

  /** Keeps presence and command latencies from the events; call once when the module starts. */
  attach(): void {
    this.bus.subscribe<StatusChangedEvent>(STATUS.changedPattern, (ev) => {
      if (!ev || typeof ev.project_id !== 'string') return;
      this.presence.set(ev.project_id, ev.state);
      this.touched?.add(ev.project_id);
    });
    this.bus.subscribe<CommandEvent>('command/event/#', (ev) => this.onCommand(ev));
    this.bus.subscribe<BridgeRejectedEvent>(BRIDGE.rejected, (ev) => {
      const type = typeof ev?.type === 'string' && UPLINK_TYPES.has(ev.type) ? ev.type : 'unknown';
      this.rejectedByType.inc({ type, attributed: ev?.project_id ? 'yes' : 'no' });
    });
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

  /**
   * Broker denials (BROKER.stats) and module refusals (COMMAND.stats, STATUS.stats), mirrored at
   * scrape time; a module that does not answer (not configured) leaves its series as they were.
   */
  private async renderRefusals(): Promise<void> {
    const ask = <T>(topic: string) => this.bus.request<T>(topic, {}, { timeoutMs: SCRAPE_TIMEOUT_MS });
    const [broker, command, status] = await Promise.allSettled([
      ask<BrokerStats>(BROKER.stats),
      ask<Record<string, unknown>>(COMMAND.stats),
      ask<Record<string, unknown>>(STATUS.stats),
    ]);
    const { brokerDenials, uplinksRefused } = this.refusals;
    if (broker.status === 'fulfilled' && Array.isArray(broker.value?.denials)) {
      brokerDenials.reset();
      for (const d of broker.value.denials)
        if (d.count > 0) brokerDenials.inc({ kind: d.kind, reason: d.reason }, d.count);
    }
    const mirror = (module: string, stats: Record<string, unknown>, names: Record<string, string>) => {
      for (const [key, reason] of Object.entries(names)) {
        const n = stats[key];
        uplinksRefused.remove({ module, reason });
        if (typeof n === 'number' && Number.isFinite(n) && n > 0) uplinksRefused.inc({ module, reason }, n);
      }
    };
    if (command.status === 'fulfilled' && command.value) {
      mirror('command', command.value, COMMAND_REFUSALS);
      const c = this.refusals.commandCounters;
      c.reset();
      for (const key of COMMAND_COUNTERS) {
        const n = command.value[key];
        if (typeof n === 'number' && Number.isFinite(n) && n > 0) c.inc({ counter: key }, n);
      }
    }
    if (status.status === 'fulfilled' && status.value) mirror('status', status.value, STATUS_REFUSALS);
  }

  /** The Prometheus text, after reading the bus and bridge counters. */
  async render(): Promise<{ contentType: string; text: string }> {
    const [bus, bridge, outbox] = await Promise.allSettled([
      this.bus.request<BusStats>(HOST_TOPICS.busStats, {}, { timeoutMs: SCRAPE_TIMEOUT_MS }),
      this.bus.request<BridgeStats>(BRIDGE.stats, {}, { timeoutMs: SCRAPE_TIMEOUT_MS }),
      this.bus.request<{ routes: RouteStats[] }>(OUTBOX_TOPICS.stats, {}, { timeoutMs: SCRAPE_TIMEOUT_MS }),
      this.renderRefusals(),
    ]);
    if (outbox.status === 'fulfilled' && Array.isArray(outbox.value?.routes)) {
      const o = this.outbox;
      for (const m of Object.values(o)) m.reset();
      for (const s of outbox.value.routes) {
        const route = { route: s.route };
        o.pending.set(route, s.pending);
        o.dead.set(route, s.dead);
        o.lag.set(route, s.lag_seconds);
        o.published.inc(route, s.published);
        o.retried.inc(route, s.retried);
        o.died.inc(route, s.died);
      }
    }
    const g = this.gauges;
    if (bus.status === 'fulfilled' && bus.value) {
      const s = bus.value;
      g.mailboxQueued.reset();
      for (const c of Object.values(g.mailboxCounters)) c.reset();
      for (const m of s.mailboxes) {
        g.mailboxQueued.set({ mailbox: m.name }, m.queued);
        for (const [k, c] of Object.entries(g.mailboxCounters))
          c.inc({ mailbox: m.name }, m[k as keyof typeof g.mailboxCounters]);
      }
      setCounter(g.busPublished, s.published);
      setCounter(g.busUnrouted, s.unrouted);
      g.busPending.set(s.pending_requests);
    }
    if (bridge.status === 'fulfilled' && bridge.value) {
      const b = bridge.value;
      g.mqttConnected.set(b.state === 'connected' ? 1 : 0);
      setCounter(g.mqttPublished, b.published);
      setCounter(g.mqttFailures, b.publish_failures);
      setCounter(g.mqttReceived, b.received);
      setCounter(g.mqttReconnects, b.reconnects);
      g.mqttRejected.reset();
      for (const [code, n] of Object.entries(b.rejected_by_code ?? {})) g.mqttRejected.inc({ code }, n);
      g.mqttDurable.reset();
      const durable = {
        acked: b.durable_acked,
        retried: b.durable_retried,
        withheld: b.durable_withheld,
        timeout: b.durable_timeouts,
      };
      for (const [outcome, n] of Object.entries(durable))
        if (n !== undefined && n > 0) g.mqttDurable.inc({ outcome }, n);
      g.mqttDurableWaiting.set(b.durable_waiting ?? 0);
    } else {
      g.mqttConnected.set(0);
    }
    const [own, proc] = await Promise.all([this.registry.metrics(), processMetrics().metrics()]);
    return { contentType: this.registry.contentType, text: own.endsWith('\n') ? own + proc : `${own}\n${proc}` };
  }
}

/** Command module counters mirrored as hub_command_module_total{counter} (several instances: who did what). */
const COMMAND_COUNTERS = ['results', 'reasks', 'cluster_events_in', 'cluster_duplicates', 'cluster_listen_errors'];

/** Module counters that count a refused uplink, and the `reason` label each gets. */
const COMMAND_REFUSALS: Record<string, string> = {
  foreign_uplinks: 'foreign',
  unknown_acks: 'unknown_ack',
  unknown_results: 'unknown_result',
  unknown_logs: 'unknown_log',
  malformed_uplinks: 'malformed',
};
const STATUS_REFUSALS: Record<string, string> = {
  data_bad_signature: 'bad_signature',
  data_unsigned_refused: 'unsigned',
  data_unknown_project: 'unknown_project',
  data_disabled_project: 'disabled_project',
  malformed: 'malformed',
  registers_refused: 'register_refused',
};

/** Counters mirrored from another module's totals: reset and add, so the exposed type stays `counter`. */
function setCounter(c: Counter, v: number): void {
  c.reset();
  if (Number.isFinite(v) && v > 0) c.inc(v);
}
