/**
 * host.heap_growing_percent (core/heap-growth.ts): set at run time with v8.setFlagsFromString, it
 * must change how far the heap grows between full collections. Two child processes run the same
 * allocation (a live set, then garbage), one with the setting and one with V8's own factor; the
 * peak heap of the first must be the smaller. The memory suite (`npm run bench -- memory`)
 * measures what it does for the hub.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import path from 'node:path';
import { test } from 'node:test';
import { promisify } from 'node:util';
import { REPO_ROOT } from '../helpers/process.js';

const run = promisify(execFile);

const SCRIPT = `
import v8 from 'node:v8';
import { applyHeapGrowth } from ${JSON.stringify(path.join(REPO_ROOT, 'dist/core/heap-growth.js'))};
const percent = Number(process.argv[1]);
applyHeapGrowth(percent, { info() {} });
const live = [];
for (let i = 0; i < 400; i++) live.push(new Array(25_000).fill(i)); // about 80 MB kept
// garbage that lives long enough to be promoted (a ring of the last 200 rounds, 40 MB), as a
// hub's in-flight messages do: it is the old generation whose growth the setting bounds
const ring = new Array(200);
let peak = 0;
for (let round = 0; round < 6000; round++) {
  ring[round % 200] = new Array(25_000).fill(round); // 200 KB a round
  if (round % 10 === 0) peak = Math.max(peak, v8.getHeapStatistics().total_heap_size);
}
console.log(JSON.stringify({ peak, live: live.length, ring: ring.length }));
`;

async function peakHeap(percent: number): Promise<number> {
  const { stdout } = await run(process.execPath, ['--input-type=module', '-e', SCRIPT, String(percent)], {
    timeout: 120_000,
  });
  return (JSON.parse(stdout) as { peak: number }).peak;
}

test('host.heap_growing_percent set at run time keeps the heap closer to its live size', async () => {
  const tight = await peakHeap(10);
  const own = await peakHeap(0);
  assert.ok(
    tight < own,
    `peak heap with 10 %: ${(tight / 2 ** 20).toFixed(0)} MB, with V8's own factor: ${(own / 2 ** 20).toFixed(0)} MB`,
  );
});
