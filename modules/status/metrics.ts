/** The status module's series on /metrics (core/metrics.ts). */
import type { MetricFamily } from '../../core/metrics.js';
import { uplinksRefused } from '../shared/uplink-refusals.js';
import type { UplinkCounters } from './uplinks.js';

/** Counters that count a refused uplink, and the `reason` label each gets. */
const REFUSALS = {
  data_bad_signature: 'bad_signature',
  data_unsigned_refused: 'unsigned',
  data_unknown_project: 'unknown_project',
  data_disabled_project: 'disabled_project',
  malformed: 'malformed',
  registers_refused: 'register_refused',
} as const satisfies Partial<Record<keyof UplinkCounters, string>>;

export function statusMetrics(c: UplinkCounters): MetricFamily[] {
  return [uplinksRefused('status', c, REFUSALS)];
}
