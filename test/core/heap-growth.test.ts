/**
 * host.heap_growing_percent and host.heap_headroom_mb (core/heap-growth.ts): set at run time with
 * v8.setFlagsFromString, they must change how far the heap grows between full collections. Child
 * processes run the same allocation (a live set, then garbage), with and without a setting; the
 * peak heap with it must be the smaller. The memory suite (`npm run bench -- memory`) measures
 * what they do for the hub.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import path from 'node:path';
import { test } from 'node:test';
import { promisify } from 'node:util';
import { growingPercentFor, MIN_HEAP_GROWING_PERCENT } from '../../core/heap-growth.js';
import { REPO_ROOT } from '../helpers/process.js';

const run = promisify(execFile);

const SCRIPT = `
import v8 from 'node:v8';
import { applyHeapGrowth } from ${JSON.stringify(path.join(REPO_ROOT, 'dist/core/heap-growth.js'))};
const percent = Number(process.argv[1]);
const headroomMb = Number(process.argv[2]);
applyHeapGrowth({ percent, headroomMb }, { info() {} });
const live = [];
for (let i = 0; i < 4000; i++) live.push(new Array(2_500).fill(i)); // about 80 MB kept
// garbage that lives long enough to be promoted (a ring of the last 2 000 rounds, 40 MB), as a
// hub's in-flight messages do: it is the old generation whose growth the setting bounds. Each
// array is 20 KB, a regular object (larger ones go to V8's large-object space, collected apart)
const ring = new Array(2000);
let peak = 0;
for (let round = 0; round < 60_000; round++) {
  ring[round % 2000] = new Array(2_500).fill(round);
  if (round % 100 === 0) {
    peak = Math.max(peak, v8.getHeapStatistics().total_heap_size);
    // a turn of the event loop, as a hub has: the headroom bound hears of full collections there
    await new Promise((r) => setImmediate(r));
  }
}
console.log(JSON.stringify({ peak, live: live.length, ring: ring.length }));
`;

async function peakHeap(percent: number, headroomMb = 0): Promise<number> {
  const { stdout } = await run(
    process.execPath,
    ['--input-type=module', '-e', SCRIPT, String(percent), String(headroomMb)],
    {
      timeout: 120_000,
    },
  );
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

test('host.heap_headroom_mb bounds the growth in megabytes over a large live heap', async () => {
  // 80 MB live: 50 % would let it grow by 40 MB; a 10 MB bound sets about 12 % after each full collection
  const bounded = await peakHeap(50, 10);
  const percentOnly = await peakHeap(50, 0);
  assert.ok(
    bounded < percentOnly,
    `peak heap with 50 % and at most 10 MB: ${(bounded / 2 ** 20).toFixed(0)} MB, with 50 % alone: ${(percentOnly / 2 ** 20).toFixed(0)} MB`,
  );
});

test('the percent for the next collection: the bound over the live heap, between 10 and heap_growing_percent', () => {
  const MB = 2 ** 20;
  assert.equal(growingPercentFor({ percent: 50, headroomMb: 30 }, 40 * MB), 50, 'a small heap keeps the percent');
  assert.equal(growingPercentFor({ percent: 50, headroomMb: 30 }, 60 * MB), 50);
  assert.equal(growingPercentFor({ percent: 50, headroomMb: 30 }, 120 * MB), 25);
  assert.equal(growingPercentFor({ percent: 50, headroomMb: 30 }, 2000 * MB), MIN_HEAP_GROWING_PERCENT);
  assert.equal(growingPercentFor({ percent: 50, headroomMb: 0 }, 2000 * MB), 50, '0 MB: the percent alone');
  assert.equal(growingPercentFor({ percent: 0, headroomMb: 30 }, 2000 * MB), 0, "0 %: V8's own factor");
  assert.equal(growingPercentFor({ percent: 20, headroomMb: 30 }, 100 * MB), 20, 'never above the percent');
});
