/**
 * A histogram another owner observes (core/metrics.ts `Histogram`), shown on /metrics as the
 * owner last reported it. prom-client's own Histogram can only be observed into, not set, so
 * this is a metric of its own kind, registered with `registerMetric`: it gives the registry the
 * same values prom-client's histogram does (`_bucket` per bound then `+Inf`, `_sum`, `_count`,
 * `le` first), so the exposition does not change with who keeps the histogram.
 */
import type { Metric, Registry } from 'prom-client';
import type { MetricSample } from '../../core/metrics.js';

type Labels = Record<string, string>;

interface Series {
  labels: Labels;
  counts: number[];
  sum: number;
  count: number;
}

export class MirroredHistogram {
  readonly type = 'histogram';
  private readonly series = new Map<string, Series>();

  constructor(
    readonly name: string,
    readonly help: string,
    readonly buckets: readonly number[],
    readonly labelNames: readonly string[],
    registry: Registry,
  ) {
    registry.registerMetric(this as unknown as Metric);
  }

  /** One label set's counts; throws on a sample that does not fit the family (left out by the caller). */
  set(labels: Labels, s: MetricSample): void {
    const counts = s.counts;
    if (!Array.isArray(counts) || counts.length !== this.buckets.length || !Number.isFinite(s.sum)) {
      throw new Error(`${this.name}: a histogram sample needs one count per bucket and a sum`);
    }
    for (const k of Object.keys(labels)) {
      if (!this.labelNames.includes(k)) throw new Error(`${this.name}: label ${k} not declared`);
    }
    this.series.set(JSON.stringify(labels), { labels, counts: [...counts], sum: s.sum as number, count: s.value });
  }

  remove(labels: Labels): void {
    this.series.delete(JSON.stringify(labels));
  }

  /** What prom-client's registry renders (the shape its Histogram's `get()` has). */
  get() {
    const values: Array<{ labels: Labels; sharedLabels: Labels; value: number; metricName: string }> = [];
    for (const s of this.series.values()) {
      this.buckets.forEach((le, i) => {
        values.push({
          labels: { le: String(le) },
          sharedLabels: s.labels,
          value: s.counts[i]!,
          metricName: `${this.name}_bucket`,
        });
      });
      values.push({
        labels: { le: '+Inf' },
        sharedLabels: s.labels,
        value: s.count,
        metricName: `${this.name}_bucket`,
      });
      values.push({ labels: {}, sharedLabels: s.labels, value: s.sum, metricName: `${this.name}_sum` });
      values.push({ labels: {}, sharedLabels: s.labels, value: s.count, metricName: `${this.name}_count` });
    }
    return { name: this.name, help: this.help, type: this.type, values, aggregator: 'sum' as const };
  }
}
