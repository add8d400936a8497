import { type IntervalHistogram, monitorEventLoopDelay, performance } from 'node:perf_hooks';

export interface HeartbeatMetrics {
  /** Process CPU (user + system) since the previous sample, as a percentage of one core. */
  cpu_percent: number;
  rss_bytes: number;
  heap_used_bytes: number;
  /** Mean event loop delay since the previous sample (perf_hooks monitorEventLoopDelay). */
  event_loop_lag_ms: number;
  event_loop_lag_max_ms: number;
  uptime_s: number;
}

const round2 = (n: number): number => Math.round(n * 100) / 100;

/** Samples this process for the heartbeat; each sample covers the time since the previous one. */
export class ProcessMetrics {
  private readonly histogram: IntervalHistogram = monitorEventLoopDelay({ resolution: 20 });
  private prevCpu = process.cpuUsage();
  private prevAt = performance.now();
  private readonly startedAt = performance.now();

  start(): void {
    this.histogram.enable();
  }

  stop(): void {
    this.histogram.disable();
  }

  sample(): HeartbeatMetrics {
    const now = performance.now();
    const cpu = process.cpuUsage(this.prevCpu);
    const elapsedMs = Math.max(1, now - this.prevAt);
    this.prevCpu = process.cpuUsage();
    this.prevAt = now;
    const mem = process.memoryUsage();
    const h = this.histogram;
    // the histogram is in nanoseconds; with no sample yet its mean is NaN
    const lag = Number.isFinite(h.mean) ? h.mean / 1e6 : 0;
    const lagMax = h.count > 0 ? h.max / 1e6 : 0;
    h.reset();
    return {
      cpu_percent: round2(((cpu.user + cpu.system) / 1000 / elapsedMs) * 100),
      rss_bytes: mem.rss,
      heap_used_bytes: mem.heapUsed,
      event_loop_lag_ms: round2(lag),
      event_loop_lag_max_ms: round2(lagMax),
      uptime_s: Math.floor((now - this.startedAt) / 1000),
    };
  }
}
