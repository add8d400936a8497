/** The embedded broker's series on /metrics (core/metrics.ts). */
import { counter, type MetricFamily } from '../../core/metrics.js';
import type { BrokerStats } from './contract/topics.js';

export function brokerMetrics(s: BrokerStats): MetricFamily[] {
  return [
    counter(
      'hub_broker_denials_total',
      'What the embedded broker refused, by kind (auth, publish, subscribe) and reason (not_json, project_id, too_large, bad_credentials, revoked_disabled …)',
      (s.denials ?? [])
        .filter((d) => d.count > 0)
        .map((d) => ({ labels: { kind: d.kind, reason: d.reason }, value: d.count })),
      ['kind', 'reason'],
    ),
    counter(
      'hub_broker_keepalive_timeouts_total',
      'Agents the embedded broker ended for silence past 1.5× their MQTT keepalive (their wills published)',
      s.keepalive_timeouts,
    ),
  ];
}
