/**
 * hub_uplinks_refused_total{module, reason}: parsed uplinks a module refused. One family that the
 * command and status modules both fill (core/metrics.ts), so its name and help live here once.
 */
import { counter, countsBy, type MetricFamily } from '../../core/metrics.js';

/** `reasons` maps a module counter to its `reason` label; counters at zero are left out. */
export function uplinksRefused(
  module: string,
  counters: object,
  reasons: Readonly<Record<string, string>>,
): MetricFamily {
  const values = counters as Record<string, number | undefined>;
  const byReason = Object.fromEntries(Object.entries(reasons).map(([key, reason]) => [reason, values[key]]));
  return counter(
    'hub_uplinks_refused_total',
    "Parsed uplinks a module refused, by module and reason (foreign: another project's command; unknown: no such command; bad_signature …)",
    countsBy('reason', byReason).map((s) => ({ labels: { module, ...s.labels }, value: s.value })),
    ['module', 'reason'],
  );
}
