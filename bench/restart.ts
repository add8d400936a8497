import { performance } from 'node:perf_hooks';
import { z } from 'zod';
import { parseConfig } from '../core/config.js';
import { Host } from '../core/host.js';
import { silentLogger } from '../core/log.js';
import type { ModuleProvider } from '../core/module.js';
import { ProviderRegistry } from '../core/registry.js';
import { machine, percentile, type SuiteResult } from './harness.js';

const RATE = 5000; // events per second offered
const RESTARTS = 40;

/**
 * Pause and loss while a module restarts under a steady 5 000 events/s: the pause is how long
 * restartModule takes (events wait in the mailbox meanwhile); latency is publish → handler.
 */
export async function runRestartSuite(): Promise<SuiteResult> {
  const seen: number[] = [];
  const latency: number[] = [];
  const sink: ModuleProvider<Record<string, never>> = {
    name: 'sink',
    schema: z.object({}).strict(),
    create: (ctx) => ({
      start() {
        ctx.bus.subscribe('load/e', (p) => {
          const e = p as { i: number; t: number };
          seen.push(e.i);
          latency.push(performance.now() - e.t);
        });
      },
    }),
  };
  const host = new Host({
    config: parseConfig('modules:\n  sink: { mailbox: { capacity: 100000 } }\n', '/bench/config.yml', {}),
    registry: new ProviderRegistry().register(sink),
    log: silentLogger(),
  });
  await host.start();
  let published = 0;
  let stop = false;
  const perTick = RATE / 100;
  const publisher = setInterval(() => {
    if (stop) return;
    for (let k = 0; k < perTick; k++) host.bus.publish('load/e', { i: published++, t: performance.now() });
  }, 10);
  const pauses: number[] = [];
  for (let r = 0; r < RESTARTS; r++) {
    await new Promise((res) => setTimeout(res, 50));
    const t0 = performance.now();
    await host.restartModule('sink');
    pauses.push(performance.now() - t0);
  }
  stop = true;
  clearInterval(publisher);
  await host.bus.drain(10_000);
  await host.stop();
  let inOrder = true;
  for (let i = 0; i < seen.length; i++) if (seen[i] !== i) inOrder = false;
  const lost = published - seen.length;
  const p99 = percentile(pauses, 99);
  return {
    suite: 'restart',
    machine: machine(),
    rows: [
      { metric: 'events published', value: published, unit: 'events' },
      { metric: 'events lost', value: lost, unit: 'events', goal: '0', met: lost === 0 && inOrder },
      { metric: 'restart pause p50', value: percentile(pauses, 50), unit: 'ms' },
      { metric: 'restart pause p99', value: p99, unit: 'ms', goal: '< 50 ms', met: p99 < 50 },
      { metric: 'event latency p99 across restarts', value: percentile(latency, 99), unit: 'ms' },
    ],
    notes: [`${RESTARTS} restarts of an inner module under ${RATE} events/s; delivered in order: ${inOrder}`],
  };
}
