/**
 * A histogram kept by another module (core/metrics.ts `Histogram`) and mirrored by the web
 * module renders exactly as prom-client's own Histogram would have with the same observations:
 * moving `hub_command_stage_seconds` into the command module changed no line of /metrics.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { Histogram as PromHistogram, Registry } from 'prom-client';
import { Histogram, histogram } from '../../../core/metrics.js';
import { MirroredHistogram } from '../../../modules/web/mirrored-histogram.js';

const BUCKETS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 900, 3600];
const HELP =
  'Command latency by stage: queue (created→sent), delivery (sent→acked), execution (agent), total (created→final)';

describe('mirrored histogram', () => {
  test('the same text as prom-client’s Histogram for the same observations', async () => {
    const observations: Array<[string, number]> = [
      ['queue', 0.002],
      ['delivery', 0.004],
      ['execution', 0.005],
      ['total', 0.0111],
      ['execution', 7],
      ['queue', 5000],
      ['total', 0.1 + 0.2],
    ];
    const theirs = new Registry();
    const prom = new PromHistogram({
      name: 'hub_command_stage_seconds',
      help: HELP,
      labelNames: ['stage'],
      buckets: BUCKETS,
      registers: [theirs],
    });
    const kept = new Histogram(BUCKETS);
    for (const [stage, v] of observations) {
      prom.observe({ stage }, v);
      kept.observe({ stage }, v);
    }
    const ours = new Registry();
    const f = histogram('hub_command_stage_seconds', HELP, kept, ['stage']);
    const mirror = new MirroredHistogram(f.name, f.help, f.buckets!, f.labelNames!, ours);
    for (const s of f.samples) mirror.set(s.labels ?? {}, s);
    const text = await ours.metrics();
    assert.equal(text, await theirs.metrics());
    assert.match(text, /hub_command_stage_seconds_bucket\{le="0.005",stage="execution"\} 1/);

    // a label set the owner no longer reports is no longer shown
    mirror.remove({ stage: 'queue' });
    assert.doesNotMatch(await ours.metrics(), /stage="queue"/);
  });

  test('a sample that does not fit the family is refused, not shown', () => {
    const mirror = new MirroredHistogram('h_seconds', 'h', [1, 2], ['stage'], new Registry());
    assert.throws(() => mirror.set({ stage: 'a' }, { value: 1, counts: [1], sum: 1 }), /one count per bucket/);
    assert.throws(() => mirror.set({ other: 'a' }, { value: 1, counts: [1, 1], sum: 1 }), /label other/);
  });
});
