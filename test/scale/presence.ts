/**
 * Presence agreement: every `intervalMs` each serving instance is asked `GET /projects/online`,
 * and its answer is compared with the projects whose agent is connected to the broker at that
 * moment (the agents' own logs say so). One instance that leaves out a connected project, or
 * lists one whose agent is gone, disagrees in that sample.
 */
import type { HubInstance } from './cluster.js';

export interface InstancePresence {
  name: string;
  samples: number;
  disagreed: number;
  /** Fewest and most projects it reported online in one sample. */
  minOnline: number;
  maxOnline: number;
  /** Answers that were not 200 (or no answer) while the instance was meant to serve. */
  failed: number;
  /** One disagreeing sample: what was missing and what was extra. */
  example?: { at: number; missing: string[]; extra: string[] };
}

export interface PresenceFigures {
  samples: number;
  /** Samples in which at least one instance disagreed. */
  samplesDisagreed: number;
  /** Samples in which the instances' answers differed from each other (whatever the agents said). */
  samplesSplit: number;
  /** Instance-samples that disagreed (of instanceSamples). */
  instanceSamplesDisagreed: number;
  instanceSamples: number;
  perInstance: InstancePresence[];
}

export class PresenceSampler {
  private readonly per = new Map<string, InstancePresence>();
  private samples = 0;
  private samplesDisagreed = 0;
  private samplesSplit = 0;
  private timer?: NodeJS.Timeout;
  private running?: Promise<void>;
  /** Instances not to ask (killed, not yet serving again). */
  readonly paused = new Set<string>();

  constructor(
    private readonly hubs: HubInstance[],
    private readonly connected: () => Set<string>,
    private readonly intervalMs = 500,
  ) {}

  start(): void {
    const tick = () => {
      this.running = this.sample().finally(() => {
        if (this.timer) this.timer = setTimeout(tick, this.intervalMs);
      });
    };
    this.timer = setTimeout(tick, 0);
  }

  async stop(): Promise<PresenceFigures> {
    clearTimeout(this.timer);
    this.timer = undefined;
    await this.running;
    const perInstance = [...this.per.values()];
    return {
      samples: this.samples,
      samplesDisagreed: this.samplesDisagreed,
      samplesSplit: this.samplesSplit,
      instanceSamples: perInstance.reduce((n, p) => n + p.samples, 0),
      instanceSamplesDisagreed: perInstance.reduce((n, p) => n + p.disagreed, 0),
      perInstance,
    };
  }

  private entry(name: string): InstancePresence {
    let e = this.per.get(name);
    if (!e) {
      e = { name, samples: 0, disagreed: 0, minOnline: Number.POSITIVE_INFINITY, maxOnline: 0, failed: 0 };
      this.per.set(name, e);
    }
    return e;
  }

  private async sample(): Promise<void> {
    const live = this.hubs.filter((h) => h.running && !this.paused.has(h.name));
    if (live.length === 0) return;
    const before = this.connected();
    const answers = await Promise.all(live.map((h) => onlineOf(h.base)));
    const after = this.connected();
    // an agent that connected or dropped while we asked may be either way: only the stable ones count
    const expected = new Set([...before].filter((p) => after.has(p)));
    const moving = new Set([...before, ...after].filter((p) => !expected.has(p)));
    this.samples++;
    let anyBad = false;
    live.forEach((h, i) => {
      const e = this.entry(h.name);
      const online = answers[i];
      if (!online) {
        if (h.running && !this.paused.has(h.name)) e.failed++;
        return;
      }
      e.samples++;
      e.minOnline = Math.min(e.minOnline, online.size);
      e.maxOnline = Math.max(e.maxOnline, online.size);
      const missing = [...expected].filter((p) => !online.has(p));
      const extra = [...online].filter((p) => !expected.has(p) && !moving.has(p));
      if (missing.length > 0 || extra.length > 0) {
        e.disagreed++;
        anyBad = true;
        e.example ??= { at: Date.now(), missing: missing.slice(0, 5), extra: extra.slice(0, 5) };
      }
    });
    if (anyBad) this.samplesDisagreed++;
    const keys = answers.filter((a): a is Set<string> => a !== undefined).map((a) => [...a].sort().join(' '));
    if (new Set(keys).size > 1) this.samplesSplit++;
  }
}

/** The ids an instance reports online, or undefined when it did not answer 200. */
async function onlineOf(base: string): Promise<Set<string> | undefined> {
  try {
    const res = await fetch(`${base}/api/exchange-hub/projects/online`, { signal: AbortSignal.timeout(5_000) });
    if (res.status !== 200) return undefined;
    const body = (await res.json()) as { items: { project_id: string }[] };
    return new Set(body.items.map((p) => p.project_id));
  } catch {
    return undefined;
  }
}
