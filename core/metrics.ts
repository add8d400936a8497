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
  value: number;
}

export interface MetricFamily {
  name: string;
  help: string;
  type: 'counter' | 'gauge';
  labelNames?: readonly string[];
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
