/**
 * The series other owners register (core/metrics.ts), mirrored into the web module's registry at
 * scrape time (counters, gauges and histograms): each running module and the host are asked for their families, and each answer
 * replaces what that owner showed before. An owner that does not answer keeps its series as they
 * were, except the gauges it marked with an `absent` value (a stopped bridge is not connected).
 */
import { Counter, Gauge, type Registry } from 'prom-client';
import type { ModuleBus } from '../../core/bus.js';
import { HOST_TOPICS } from '../../core/host-topics.js';
import { CORE_METRICS, type MetricFamily, metricsTopic } from '../../core/metrics.js';
import { MirroredHistogram } from './mirrored-histogram.js';

type Labels = Record<string, string>;
type Mirrored = Counter<string> | Gauge<string> | MirroredHistogram;

interface Shown {
  labels: Labels[];
  absent?: number;
}

export class ModuleMetrics {
  private readonly metrics = new Map<string, { family: MetricFamily; metric: Mirrored }>();
  /** owner → family name → the series that owner set last. */
  private readonly shown = new Map<string, Map<string, Shown>>();

  constructor(
    private readonly bus: ModuleBus,
    private readonly registry: Registry,
    private readonly timeoutMs: number,
  ) {}

  /** Asks every owner (the host's core series, then each module) and mirrors the answers. */
  async scrape(): Promise<void> {
    const listed = await this.bus
      .request<{ name: string }[]>(HOST_TOPICS.listModules, {}, { timeoutMs: this.timeoutMs })
      .then((mods) => (Array.isArray(mods) ? mods.map((m) => m.name) : []))
      .catch(() => [] as string[]);
    // the web module is listed too: it does not answer, its own series are registered directly
    const owners = [...new Set([...Object.values(CORE_METRICS), ...listed])];
    const answers = await Promise.allSettled(
      owners.map((o) => this.bus.request<MetricFamily[]>(metricsTopic(o), {}, { timeoutMs: this.timeoutMs })),
    );
    const answered = new Set<string>();
    owners.forEach((owner, i) => {
      const a = answers[i]!;
      if (a.status === 'fulfilled' && Array.isArray(a.value)) {
        answered.add(owner);
        this.apply(owner, a.value);
      }
    });
    for (const owner of this.shown.keys()) if (!answered.has(owner)) this.absent(owner);
  }

  private apply(owner: string, families: MetricFamily[]): void {
    const byFamily = this.shown.get(owner) ?? new Map<string, Shown>();
    this.shown.set(owner, byFamily);
    for (const f of families) {
      const m = this.metricFor(f);
      if (!m) continue;
      this.clear(m, byFamily.get(f.name));
      const labels: Labels[] = [];
      for (const s of f.samples ?? []) {
        const l = s.labels ?? {};
        if (!Number.isFinite(s.value)) continue;
        try {
          if (m instanceof Gauge) m.set(l, s.value);
          else if (m instanceof MirroredHistogram) m.set(l, s);
          else if (s.value >= 0) m.inc(l, s.value);
          labels.push(l);
        } catch {
          // a label the family did not declare: the sample is left out, the others shown
        }
      }
      byFamily.set(f.name, { labels, ...(f.absent !== undefined ? { absent: f.absent } : {}) });
    }
  }

  /** The owner did not answer: its gauges with an `absent` value show it. */
  private absent(owner: string): void {
    for (const [name, shown] of this.shown.get(owner) ?? []) {
      const m = this.metrics.get(name)?.metric;
      if (shown.absent === undefined || !(m instanceof Gauge)) continue;
      for (const l of shown.labels) m.set(l, shown.absent);
    }
  }

  private clear(m: Mirrored, shown: Shown | undefined): void {
    if (!shown) return;
    for (const l of shown.labels) {
      // an unlabelled series is reset to 0, not removed (prom-client always shows it)
      if (m instanceof MirroredHistogram) m.remove(l);
      else if (Object.keys(l).length === 0) m.reset();
      else m.remove(l);
    }
  }

  /** The prom-client metric for a family, made on first sight; undefined when the shape is not one. */
  private metricFor(f: MetricFamily): Mirrored | undefined {
    if (!f || typeof f.name !== 'string' || !Array.isArray(f.samples)) return undefined;
    const known = this.metrics.get(f.name);
    if (known) return known.family.type === f.type ? known.metric : undefined;
    const opts = { name: f.name, help: f.help, labelNames: [...(f.labelNames ?? [])], registers: [this.registry] };
    let metric: Mirrored;
    try {
      if (f.type === 'counter') metric = new Counter(opts);
      else if (f.type === 'gauge') metric = new Gauge(opts);
      else if (f.type === 'histogram' && Array.isArray(f.buckets)) {
        metric = new MirroredHistogram(f.name, f.help, f.buckets, opts.labelNames, this.registry);
      } else return undefined;
    } catch {
      return undefined; // a name prom-client refuses, or one the web module registers itself
    }
    this.metrics.set(f.name, { family: f, metric });
    return metric;
  }
}
