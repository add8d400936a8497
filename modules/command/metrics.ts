/** The command module's series on /metrics (core/metrics.ts). */
import { counter, countsBy, type MetricFamily } from '../../core/metrics.js';
import { uplinksRefused } from '../shared/uplink-refusals.js';
import type { Counters } from './events.js';

/** Counters that count a refused uplink, and the `reason` label each gets. */
const REFUSALS = {
  foreign_uplinks: 'foreign',
  unknown_acks: 'unknown_ack',
  unknown_results: 'unknown_result',
  unknown_logs: 'unknown_log',
  malformed_uplinks: 'malformed',
} as const satisfies Partial<Record<keyof Counters, string>>;

/** Counters shown as hub_command_module_total{counter} (several instances: who did what). */
const MODULE_COUNTERS = [
  'results',
  'reasks',
  'scheduled_started',
  'scheduled_failed',
  'cluster_events_in',
  'cluster_own_dropped',
  'cluster_duplicates',
  'cluster_listen_errors',
] as const;

export function commandMetrics(c: Counters): MetricFamily[] {
  return [
    uplinksRefused('command', c, REFUSALS),
    counter(
      'hub_command_module_total',
      "This instance's command module: results it wrote, results it asked for again (reasks), scheduled commands it started or failed at their time (scheduled_started, scheduled_failed), events of other instances it republished (cluster_events_in) or dropped as already seen (cluster_duplicates), its own announcements heard back and dropped (cluster_own_dropped), listener connection losses",
      countsBy('counter', Object.fromEntries(MODULE_COUNTERS.map((k) => [k, c[k]]))),
      ['counter'],
    ),
  ];
}
