/**
 * The bridge's series on /metrics (core/metrics.ts): its connection, downlink publishes, and the
 * uplinks it took, refused and wrote.
 */
import { counter, countsBy, gauge, type MetricFamily, type MetricSample } from '../../core/metrics.js';
import { UPLINK_COMMAND_TYPES, UPLINK_DATA_TYPES } from '../shared/protocol.js';
import type { BridgeStats } from './contract/topics.js';

/** Refused uplinks are labelled by their type only when it is one of ours: agents choose the string. */
const UPLINK_TYPES = new Set<string>([...UPLINK_COMMAND_TYPES, ...UPLINK_DATA_TYPES]);

/** Refused uplinks by message type and whether a project id could be read. */
export class RejectedByType {
  private readonly counts = new Map<string, MetricSample>();

  count(type: string | undefined, projectId: string | undefined): void {
    const labels = {
      type: type !== undefined && UPLINK_TYPES.has(type) ? type : 'unknown',
      attributed: projectId ? 'yes' : 'no',
    };
    const key = `${labels.type}/${labels.attributed}`;
    const s = this.counts.get(key);
    if (s) s.value++;
    else this.counts.set(key, { labels, value: 1 });
  }

  samples(): MetricSample[] {
    return [...this.counts.values()].map((s) => ({ labels: { ...s.labels }, value: s.value }));
  }
}

export function bridgeMetrics(b: BridgeStats, rejectedByType: MetricSample[]): MetricFamily[] {
  return [
    {
      ...gauge(
        'hub_mqtt_connected',
        '1 when the MQTT bridge is connected to the broker',
        b.state === 'connected' ? 1 : 0,
      ),
      absent: 0,
    },
    counter('hub_mqtt_published_total', 'Downlinks the broker acknowledged', b.published),
    counter('hub_mqtt_publish_failures_total', 'Downlink publishes that failed', b.publish_failures),
    counter('hub_mqtt_uplinks_received_total', 'Valid uplinks handed to the bus', b.received),
    counter(
      'hub_mqtt_uplinks_rejected_total',
      'Uplinks refused by the parser, by error code',
      Object.entries(b.rejected_by_code ?? {}).map(([code, n]) => ({ labels: { code }, value: n })),
      ['code'],
    ),
    counter(
      'hub_mqtt_uplink_signatures_total',
      'Valid uplink signatures by what they matched: as_sent (the text the agent sent, its signature member taken out), canonical (a canonical text built from the message: another key order or spacing)',
      countsBy('matched', { as_sent: b.signatures_as_sent ?? 0, canonical: b.signatures_canonical ?? 0 }),
      ['matched'],
    ),
    counter('hub_mqtt_reconnects_total', 'MQTT bridge reconnect attempts', b.reconnects),
    counter(
      'hub_mqtt_durable_uplinks_total',
      'State-carrying uplinks by outcome: acked (written, then acknowledged), retried (a write attempt after a failure), withheld (left for the broker to deliver again), timeout (not written within durable_wait_ms: reconnected)',
      countsBy('outcome', {
        acked: b.durable_acked,
        retried: b.durable_retried,
        withheld: b.durable_withheld,
        timeout: b.durable_timeouts,
      }),
      ['outcome'],
    ),
    gauge(
      'hub_mqtt_durable_uplinks_waiting',
      'State-carrying uplinks waiting for their write (not yet acknowledged to the broker)',
      b.durable_waiting ?? 0,
    ),
    counter(
      'hub_uplinks_rejected_by_type_total',
      'Uplinks the bridge refused (parser or verification), by message type (unknown: unreadable or not ours) and whether a project id could be read',
      rejectedByType,
      ['type', 'attributed'],
    ),
  ];
}
