/**
 * The outbox's contract: the catalogue of domain event types (the seed's route registry,
 * `event_type -> service`), the `outbox:` config section's schema, and the shapes that cross the
 * bus (dead events, stats) and the wire (the envelope). Error codes are in core/errors.ts
 * (`OUTBOX_ERR_*`). Seed 003: an event type that is not registered is refused, never sent to a
 * default table or topic.
 */
import { z } from 'zod';

export { OUTBOX_CODES } from './codes.js';

/**
 * Every event type the hub can publish, with the module that owns it. A config route naming
 * another string is refused at load (`outbox.routes.<name>.events[i]`). `job.*` is absent on
 * purpose: there are no jobs yet, so there is nothing that could emit one.
 */
export const EVENT_CATALOGUE = {
  'command.completed': { owner: 'command', description: 'A command ended with a success result' },
  'command.failed': {
    owner: 'command',
    description: 'A command ended with a failure (agent result, or its queue expired)',
  },
  'command.timeout': { owner: 'command', description: 'No result within the command’s timeout' },
  'project.online': { owner: 'status', description: 'A project finished its handshake (state online)' },
  'project.offline': { owner: 'status', description: 'A project went offline (silence, goodbye or last will)' },
} as const;

export type EventType = keyof typeof EVENT_CATALOGUE;
export const EVENT_TYPES = Object.keys(EVENT_CATALOGUE) as EventType[];

export function isEventType(s: unknown): s is EventType {
  return typeof s === 'string' && Object.hasOwn(EVENT_CATALOGUE, s);
}

/** Row statuses of every outbox table (the seed's pending → published, or → dead after max retries). */
export type OutboxStatus = 'pending' | 'published' | 'dead';

/** Table names are quoted into SQL by us: keep them plain identifiers. */
export const TABLE_RE = /^[a-z_][a-z0-9_]{0,62}$/;
export const ROUTE_NAME_RE = /^[a-z][a-z0-9_-]{0,63}$/;

/**
 * What a consumer receives: the MQTT payload and the webhook body. `event_id` is the id to
 * deduplicate on (the same id on every route the event goes to, and on every redelivery).
 */
export interface OutboxEnvelope {
  event_id: string;
  event_type: EventType;
  /** Ordering key: events of one route and key are delivered in the order they were committed. */
  key: string;
  /** When the business transaction wrote the event (ISO 8601, the writer's clock). */
  occurred_at: string;
  source: 'gmq-hub';
  data: unknown;
}

const int = (min: number) => z.number().int().min(min);

const mqttDestination = z.strictObject({
  type: z.literal('mqtt'),
  url: z
    .string()
    .regex(/^(mqtts?|wss?|tcp|tls):\/\//, { message: 'expected an mqtt://, mqtts://, ws:// or wss:// URL' }),
  username: z.string().optional(),
  password: z.string().optional(),
  /** Default `gmq-hub-outbox-<route>-<random>`: every instance its own client (two with one id kick each other). */
  client_id: z.string().min(1).optional(),
  /** `{event_type}`, `{key}` and `{route}` are replaced; the result must be a publishable topic. */
  topic: z.string().min(1).default('gmq/events/{event_type}/{key}'),
  /** 5 adds the event id as a user property; 4 for brokers without MQTT 5 (the id stays in the payload). */
  protocol_version: z.union([z.literal(4), z.literal(5)]).default(5),
  /** A publish not acknowledged (PUBACK) within this is a failed attempt. */
  timeout_ms: int(1).default(10_000),
});

const webhookDestination = z.strictObject({
  type: z.literal('webhook'),
  url: z.string().regex(/^https?:\/\//, { message: 'expected an http:// or https:// URL' }),
  /** HMAC-SHA256 key of this route's signatures (X-Gmq-Signature). */
  secret: z.string().min(16, { message: 'at least 16 characters' }),
  timeout_ms: int(1).default(10_000),
  /** Extra request headers (an API key the receiver wants, …). */
  headers: z.record(z.string(), z.string()).default({}),
});

export const routeSchema = z
  .strictObject({
    events: z.array(z.string()).min(1, { message: 'name at least one event type' }),
    destination: z.discriminatedUnion('type', [mqttDestination, webhookDestination]),
    /** Deliveries of this route in flight at once, per hub instance. */
    concurrency: int(1).default(4),
    /** Attempts before an event goes `dead` (the first delivery counts). */
    max_attempts: int(1).default(10),
    backoff: z
      .strictObject({ initial_ms: int(1).default(1_000), max_ms: int(1).default(60_000) })
      .prefault({})
      .refine((b) => b.initial_ms <= b.max_ms, { message: 'initial_ms must not exceed max_ms', path: ['initial_ms'] }),
    enable: z.boolean().default(true),
  })
  .superRefine((r, ctx) => {
    const seen = new Set<string>();
    r.events.forEach((e, i) => {
      if (seen.has(e)) ctx.addIssue({ code: 'custom', path: ['events', i], message: `"${e}" is listed twice` });
      seen.add(e);
    });
  });

export const outboxSchema = z
  .strictObject({
    /** How often an idle relay looks for due events (a commit through outbox.add also wakes it). */
    poll_interval_ms: int(10).default(500),
    /**
     * A claim's lease: an instance that dies holding events frees them after this. Longer than
     * any destination's timeout_ms, or a slow delivery would be taken over while still running.
     */
    lease_ms: int(100).default(30_000),
    /** Published rows are deleted after this (dead ones stay until replayed). */
    retention_ms: int(0).default(86_400_000),
    routes: z.record(z.string(), routeSchema).default({}),
  })
  .superRefine((o, ctx) => {
    for (const [name, r] of Object.entries(o.routes)) {
      if (!ROUTE_NAME_RE.test(name))
        ctx.addIssue({ code: 'custom', path: ['routes', name], message: `route name must match ${ROUTE_NAME_RE}` });
      if (r.destination.timeout_ms >= o.lease_ms)
        ctx.addIssue({
          code: 'custom',
          path: ['routes', name, 'destination', 'timeout_ms'],
          message: `must be shorter than outbox.lease_ms (${o.lease_ms})`,
        });
    }
  });

export type OutboxConfig = z.output<typeof outboxSchema>;
export type RouteConfig = z.output<typeof routeSchema>;
export type MqttDestinationConfig = z.output<typeof mqttDestination>;
export type WebhookDestinationConfig = z.output<typeof webhookDestination>;

/**
 * The first event name in `outbox.routes` that is not in the catalogue, as `[path, reason]`
 * with the path written `outbox.routes.<name>.events[i]`; null when all are known.
 */
export function unknownRouteEvent(cfg: OutboxConfig): [string, string] | null {
  for (const [name, r] of Object.entries(cfg.routes)) {
    for (let i = 0; i < r.events.length; i++) {
      if (!isEventType(r.events[i]))
        return [
          `outbox.routes.${name}.events[${i}]`,
          `unknown event type "${r.events[i]}" (known: ${EVENT_TYPES.join(', ')})`,
        ];
    }
  }
  return null;
}

/** One dead event as the operator surface lists it (REST, gRPC, CLI). */
export interface DeadEvent {
  event_id: string;
  route: string;
  event_type: string;
  key: string;
  attempts: number;
  last_error: string | null;
  created_at: string;
  dead_at: string;
  envelope: OutboxEnvelope;
}

/** Per route, for /metrics: gauges read from the tables, counters of this instance since start. */
export interface RouteStats {
  route: string;
  pending: number;
  dead: number;
  /** Age of the oldest pending event, seconds (0 when none). */
  lag_seconds: number;
  published: number;
  retried: number;
  /** Events this instance moved to dead. */
  died: number;
}

/** Bus topics the outbox service answers (on the host's mailbox). */
export const OUTBOX_TOPICS = {
  /** request { route?, limit?, offset? } → { items: DeadEvent[], total } */
  deadList: 'host/outbox/dead/list',
  /** request { event_id, route? } → { event_id, routes: string[] } (OUTBOX_ERR_NOT_FOUND when none) */
  deadReplay: 'host/outbox/dead/replay',
  /** request {} → { routes: RouteStats[] } */
  stats: 'host/outbox/stats',
} as const;
