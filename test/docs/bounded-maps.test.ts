/**
 * No source bounds a Map by popping its oldest key through `keys().next()` (docs/benchmarks.md "Bounded maps
 * that stay fast when full"). V8 leaves each deleted entry as a hole that every later iterator
 * walks until the table is rebuilt, so once such a map is full each insertion cost 5–45 µs at
 * 100 000 entries instead of under 1: the command module's event gate and owners, the live feed's
 * owners and the status module's project rows were all built that way and found only by a 120 s
 * window. A bounded map is an `LRUCache` (lru-cache) or a ring (signing.ts ReplayCache). Every
 * line of code (comments left out) of core/, modules/ and bootstrap/ is read.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import { REPO_ROOT } from '../helpers/process.js';

const POP = /\.keys\(\)\s*\.next\(\)/;

function sources(dir: string): string[] {
  return fs
    .readdirSync(path.join(REPO_ROOT, dir), { withFileTypes: true, recursive: true })
    .filter((e) => e.isFile() && e.name.endsWith('.ts'))
    .map((e) => path.join(e.parentPath, e.name));
}

/** The code of a line: nothing after `//`, nothing of a block comment's line. */
function codeOf(line: string): string {
  const t = line.trim();
  if (t.startsWith('*') || t.startsWith('/*')) return '';
  const at = line.indexOf('//');
  return at === -1 ? line : line.slice(0, at);
}

test('no map is bounded by popping its oldest key through keys().next()', () => {
  const found: string[] = [];
  const files = ['core', 'modules', 'bootstrap'].flatMap(sources);
  assert.ok(files.length > 100, `read ${files.length} files`);
  for (const file of files) {
    const lines = fs.readFileSync(file, 'utf8').split('\n');
    lines.forEach((line, i) => {
      if (POP.test(codeOf(line))) found.push(`${path.relative(REPO_ROOT, file)}:${i + 1}: ${line.trim()}`);
    });
  }
  assert.deepEqual(found, [], 'use an LRUCache (lru-cache) or a ring instead');
});

test('the scan sees the pattern in code and not in comments', () => {
  assert.ok(POP.test(codeOf('    if (m.size > MAX) m.delete(m.keys().next().value);')));
  assert.ok(!POP.test(codeOf(' * popped through `keys().next()` (README)')));
  assert.ok(!POP.test(codeOf('  x = 1; // not m.keys().next()')));
});
