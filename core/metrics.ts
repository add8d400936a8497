/**
 * What /metrics shows is what each owner registers: a module answers `metrics/{its name}` (the
 * host answers `metrics/host` and `metrics/outbox`) with its metric families, values as they are now (counters as
 * totals). The web module asks every running module at scrape time and renders the answers; it
 * knows no other module's counters.
 *
 * @example a module's metrics
 *   ctx.bus.subscribe(metricsTopic(ctx.name), (): MetricFamily[] => [
 *     counter('hub_widgets_made_total', 'Widgets made', made),
 *     gauge('hub_widgets_queued', 'Widgets waiting', [{ labels: { line: 'a' }, value: 3 }], ['line']),
 *   ], CONTROL);
 */

export interface MetricSample {
  labels?: Record<string, string>;
  /** A counter's total, a gauge's value, a histogram's count of observations. */
  value: number;
  /** Histogram only: observations at or below each of the family's `buckets`, cumulative, in their order. */
  counts?: number[];
  /** Histogram only: the sum of the observations. */
  sum?: number;
}

export interface MetricFamily {
  name: string;
  help: string;
  type: 'counter' | 'gauge' | 'histogram';
  labelNames?: readonly string[];
  /** Histogram only: the buckets' upper bounds, ascending (`+Inf` implied). */
  buckets?: readonly number[];
  /** The series as they are now; a series left out is no longer shown. */
  samples: MetricSample[];
  /** A gauge's value once its module stops answering (a stopped bridge is not connected); unset: kept as last seen. */
  absent?: number;
}

/** The owners of core's series, answered by the host: asked apart, so a slow outbox cannot hide the bus. */
export const CORE_METRICS = { bus: 'host', outbox: 'outbox' } as const;

/** The request topic a metrics owner answers with `MetricFamily[]`. */
export function metricsTopic(owner: string): string {
  return `metrics/${owner}`;
}

type FamilyOf = (
  name: string,
  help: string,
  samples: number | MetricSample[],
  labelNames?: readonly string[],
) => MetricFamily;

/** A counter: one unlabelled total, or labelled samples. */
export const counter: FamilyOf = (...args) => family('counter', ...args);

/** A gauge: one unlabelled value, or labelled samples. */
export const gauge: FamilyOf = (...args) => family('gauge', ...args);

/** Labelled samples from a record of counts, leaving out the zeros (a count never seen is not a series). */
export function countsBy(label: string, counts: Record<string, number | undefined>): MetricSample[] {
  const out: MetricSample[] = [];
  for (const [key, n] of Object.entries(counts)) {
    if (typeof n === 'number' && Number.isFinite(n) && n > 0) out.push({ labels: { [label]: key }, value: n });
  }
  return out;
}

function family(
  type: MetricFamily['type'],
  name: string,
  help: string,
  samples: number | MetricSample[],
  labelNames: readonly string[] = [],
): MetricFamily {
  return { name, help, type, labelNames, samples: typeof samples === 'number' ? [{ value: samples }] : samples };
}

/** A histogram: labelled samples of a `Histogram` (counts, sum and count per label set). */
export function histogram(name: string, help: string, h: Histogram, labelNames: readonly string[] = []): MetricFamily {
  return { name, help, type: 'histogram', labelNames, buckets: h.buckets, samples: h.samples() };
}

/**
 * Observations counted into buckets per label set, kept by the owner that makes them and
 * answered as a histogram family (prom-client's `le` semantics: a value counts in the first
 * bucket whose upper bound is at least the value). Label sets appear once observed.
 */
export class Histogram {
  private readonly series = new Map<
    string,
    { labels: Record<string, string>; own: number[]; sum: number; count: number }
  >();

  constructor(readonly buckets: readonly number[]) {}

  observe(labels: Record<string, string>, value: number): void {
    if (!Number.isFinite(value)) return;
    const key = JSON.stringify(labels);
    let s = this.series.get(key);
    if (!s) {
      s = { labels, own: new Array<number>(this.buckets.length).fill(0), sum: 0, count: 0 };
      this.series.set(key, s);
    }
    const i = this.buckets.findIndex((b) => value <= b);
    if (i >= 0) s.own[i]!++;
    s.sum += value;
    s.count++;
  }

  samples(): MetricSample[] {
    return [...this.series.values()].map((s) => {
      let acc = 0;
      const counts = s.own.map((n) => (acc += n));
      return { labels: { ...s.labels }, value: s.count, counts, sum: s.sum };
    });
  }
}
