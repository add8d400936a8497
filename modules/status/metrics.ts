/** The status module's series on /metrics (core/metrics.ts). */
import { counter, countsBy, gauge, type MetricFamily } from '../../core/metrics.js';
import { uplinksRefused } from '../shared/uplink-refusals.js';
import type { UplinkCounters } from './contract/stats.js';
import type { PresenceState } from './contract/topics.js';

/** Counters that count a refused uplink, and the `reason` label each gets. */
const REFUSALS = {
  data_unknown_project: 'unknown_project',
  data_disabled_project: 'disabled_project',
  malformed: 'malformed',
  registers_refused: 'register_refused',
} as const satisfies Partial<Record<keyof UplinkCounters, string>>;

export function statusMetrics(c: UplinkCounters): MetricFamily[] {
  return [
    uplinksRefused('status', c, REFUSALS),
    // sent; throttled: the project was asked within its heartbeat interval; deferred: the
    // fleet-wide limit (reregister_per_s) left it for a later heartbeat
    counter(
      'hub_reregisters_total',
      'reregister asks to agents heard while their project is not online, by outcome',
      countsBy('outcome', {
        sent: c.reregisters_sent,
        throttled: c.reregisters_throttled,
        deferred: c.reregisters_deferred,
      }),
      ['outcome'],
    ),
  ];
}

const PRESENCE: readonly PresenceState[] = ['offline', 'connecting', 'verifying', 'online', 'disconnecting'];

/**
 * `hub_projects{state}`: every project (disabled ones too) by its presence as this instance's
 * read model has it; a project the read model does not track has never connected: offline.
 * `total` is the number of projects in the database, so one provisioned elsewhere is counted.
 */
export function projectsByState(tracked: Iterable<{ state: PresenceState }>, total: number): MetricFamily {
  const counts = new Map<PresenceState, number>(PRESENCE.map((s) => [s, 0]));
  let elsewhere = 0;
  for (const e of tracked) {
    if (e.state === 'offline') continue;
    counts.set(e.state, (counts.get(e.state) ?? 0) + 1);
    elsewhere++;
  }
  counts.set('offline', Math.max(0, total - elsewhere));
  return gauge(
    'hub_projects',
    'Projects by presence state (as seen by this instance)',
    PRESENCE.map((state) => ({ labels: { state }, value: counts.get(state) ?? 0 })),
    ['state'],
  );
}
