/**
 * growingLru (modules/shared/growing-lru.ts): bounded at `max` with least-recently-used eviction,
 * as lru-cache's `max` is, but an empty or small cache holds little memory: the preallocated form
 * holds 2.7 MB for 100 000 entries from the start, so twenty empty caches here are 54 MB of heap.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import v8 from 'node:v8';
import vm from 'node:vm';
import { LRUCache } from 'lru-cache';
import { growingLru } from '../../../modules/shared/growing-lru.js';

// set before a fresh context asks for `gc` (as test/core/leak.test.ts does)
v8.setFlagsFromString('--expose-gc');
const gc = vm.runInNewContext('gc') as () => void;

function heldBytes(make: () => unknown): number {
  gc();
  const before = process.memoryUsage();
  const held = Array.from({ length: 20 }, make);
  gc();
  const after = process.memoryUsage();
  assert.equal(held.length, 20);
  return after.heapUsed + after.arrayBuffers - (before.heapUsed + before.arrayBuffers);
}

test('twenty empty caches of 100 000 hold under 1 MB, where lru-cache given max holds them all', () => {
  const preallocated = heldBytes(() => new LRUCache<string, number>({ max: 100_000 }));
  const growing = heldBytes(() => growingLru<string, number>(100_000));
  assert.ok(preallocated > 40 * 1024 * 1024, `the preallocated form held ${preallocated} bytes`);
  assert.ok(growing < 1024 * 1024, `twenty empty growing caches held ${growing} bytes`);
});

test('it keeps at most max entries and evicts the least recently used first', () => {
  const max = 1_000;
  const cache = growingLru<string, number>(max);
  for (let i = 0; i < max; i++) cache.set(`k${i}`, i);
  // k0 is used again, so k1 is now the least recently used
  assert.equal(cache.get('k0'), 0);
  cache.set('new-1', -1);
  assert.equal(cache.size, max);
  assert.equal(cache.has('k1'), false);
  assert.equal(cache.get('k0'), 0);
  for (let i = 0; i < 3 * max; i++) cache.set(`more${i}`, i);
  assert.equal(cache.size, max);
  assert.equal(cache.get(`more${3 * max - 1}`), 3 * max - 1);
  assert.equal(cache.has(`more${2 * max - 1}`), false);
  assert.equal(cache.get(`more${2 * max}`), 2 * max);
  // emptied by deletes and filled again, it is the same bounded cache
  for (const k of [...cache.keys()]) cache.delete(k);
  assert.equal(cache.size, 0);
  for (let i = 0; i < 2 * max; i++) cache.set(`again${i}`, i);
  assert.equal(cache.size, max);
  assert.equal(cache.has(`again${max - 1}`), false);
  assert.equal(cache.get(`again${max}`), max);
});
