/**
 * The host's own series on /metrics (core/metrics.ts): the bus, each module's mailbox, and the
 * outbox service's routes. Counters are this process's totals since it started.
 */
import type { Bus } from './bus.js';
import type { MailboxStats } from './mailbox.js';
import { counter, gauge, type MetricFamily, type MetricSample } from './metrics.js';
import type { RouteStats } from './services/outbox/contract.js';

const MAILBOX_COUNTERS = ['enqueued', 'handled', 'dropped', 'rejected', 'errors'] as const;

export function busMetrics(s: ReturnType<Bus['stats']>): MetricFamily[] {
  const perMailbox = (value: (m: MailboxStats) => number): MetricSample[] =>
    s.mailboxes.map((m) => ({ labels: { mailbox: m.name }, value: value(m) }));
  return [
    gauge(
      'hub_bus_mailbox_queued',
      'Events waiting in each bus mailbox',
      perMailbox((m) => m.queued),
      ['mailbox'],
    ),
    ...MAILBOX_COUNTERS.map((what) =>
      counter(
        `hub_bus_mailbox_${what}_total`,
        `Bus mailbox events ${what}, per subscriber mailbox`,
        perMailbox((m) => m[what]),
        ['mailbox'],
      ),
    ),
    counter('hub_bus_published_total', 'Events and requests published on the bus', s.published),
    counter('hub_bus_unrouted_total', 'Bus events no mailbox subscribed to', s.unrouted),
    gauge('hub_bus_pending_requests', 'Bus requests awaiting a reply', s.pending_requests),
  ];
}

/** Per outbox route: the series, its kind, and the route's field it shows. */
const OUTBOX_SERIES: Array<[typeof counter, string, string, (r: RouteStats) => number]> = [
  [gauge, 'hub_outbox_pending', 'Domain events waiting for delivery, per outbox route', (r) => r.pending],
  [gauge, 'hub_outbox_dead', 'Domain events dead (every attempt failed), per outbox route', (r) => r.dead],
  [gauge, 'hub_outbox_lag_seconds', 'Age of the oldest pending domain event, per outbox route', (r) => r.lag_seconds],
  [counter, 'hub_outbox_published_total', 'Domain events this instance delivered, per route', (r) => r.published],
  [counter, 'hub_outbox_retried_total', 'Failed deliveries this instance rescheduled, per route', (r) => r.retried],
  [counter, 'hub_outbox_deaths_total', 'Domain events this instance moved to dead, per route', (r) => r.died],
];

export function outboxMetrics(routes: RouteStats[]): MetricFamily[] {
  return OUTBOX_SERIES.map(([kind, name, help, value]) =>
    kind(
      name,
      help,
      routes.map((r) => ({ labels: { route: r.route }, value: value(r) })),
      ['route'],
    ),
  );
}
