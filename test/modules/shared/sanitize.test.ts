import assert from 'node:assert/strict';
import { test } from 'node:test';
import fc from 'fast-check';
import { findUnsafeJson, unsafeTextProblem } from '../../../modules/shared/sanitize.js';

function nested(depth: number): unknown {
  let v: unknown = 1;
  for (let i = 0; i < depth; i++) v = { a: v };
  return v;
}

test('NUL and lone surrogates are found in values and keys, with the path', () => {
  assert.deepEqual(findUnsafeJson({ cpu: 'x\u0000' }), { path: '.cpu', problem: 'contains a NUL character (\\u0000)' });
  assert.match(findUnsafeJson({ m: ['ok', '\uD800'] })!.problem, /lone UTF-16 surrogate/);
  assert.equal(findUnsafeJson({ m: ['ok', '\uD800'] })!.path, '.m[1]');
  assert.match(findUnsafeJson({ 'k\u0000': 1 })!.problem, /has a key that contains a NUL/);
  assert.equal(unsafeTextProblem('\uD83D\uDE00 emoji pairs are fine'), null);
});

test('nesting deeper than the limit is refused without recursion (10 000 levels)', () => {
  const bad = findUnsafeJson(nested(10_000));
  assert.ok(bad);
  assert.match(bad.problem, /nests deeper than 32 levels/);
  assert.equal(findUnsafeJson(nested(31)), null);
  assert.equal(findUnsafeJson(nested(40), { maxDepth: 64, maxNodes: 100 }), null);
});

test('too many values, non-finite numbers and non-JSON types are refused', () => {
  assert.match(findUnsafeJson(new Array(20_000).fill(0))!.problem, /more than 10000 values/);
  assert.match(findUnsafeJson({ x: Number.NaN })!.problem, /not a finite number/);
  assert.match(findUnsafeJson({ x: 1n })!.problem, /bigint, not JSON/);
});

test('property: every JSON value without NUL, lone surrogates or deep nesting passes', () => {
  const safeString = fc.string().filter((s) => unsafeTextProblem(s) === null);
  const { json } = fc.letrec((tie) => ({
    json: fc.oneof(
      { depthSize: 'small' },
      safeString,
      fc.integer(),
      fc.boolean(),
      fc.constant(null),
      fc.array(tie('json'), { maxLength: 5 }),
      fc.dictionary(safeString, tie('json'), { maxKeys: 5 }),
    ),
  }));
  fc.assert(
    fc.property(json, (v) => findUnsafeJson(v, { maxDepth: 64, maxNodes: 100_000 }) === null),
    { numRuns: 500 },
  );
});

test('property: a NUL anywhere in a JSON string is found', () => {
  fc.assert(
    fc.property(fc.string(), fc.string(), (a, b) => findUnsafeJson({ deep: [{ s: `${a}\u0000${b}` }] }) !== null),
    { numRuns: 300 },
  );
});

/** The walk findUnsafeJson had before its pathless first pass (a verdict, then the report): the model it must agree with. */
function referenceWalk(value: unknown, limits: { maxDepth: number; maxNodes: number }) {
  const keyPath = (parent: string, key: string | number) =>
    typeof key === 'number'
      ? `${parent}[${key}]`
      : /^[A-Za-z_][A-Za-z0-9_]*$/.test(key)
        ? `${parent}.${key}`
        : `${parent}[${JSON.stringify(key)}]`;
  const shortPath = (p: string) => (p.length > 120 ? `${p.slice(0, 117)}...` : p);
  const stack: Array<{ v: unknown; path: string; depth: number }> = [{ v: value, path: '', depth: 0 }];
  let nodes = 0;
  while (stack.length > 0) {
    const { v, path, depth } = stack.pop()!;
    if (++nodes > limits.maxNodes) return { path: '', problem: `holds more than ${limits.maxNodes} values` };
    if (v === null || typeof v === 'boolean') continue;
    if (typeof v === 'string') {
      const p = unsafeTextProblem(v);
      if (p) return { path: shortPath(path), problem: p };
      continue;
    }
    if (typeof v === 'number') {
      if (!Number.isFinite(v)) return { path: shortPath(path), problem: 'is not a finite number' };
      continue;
    }
    if (typeof v !== 'object') return { path: shortPath(path), problem: `is a ${typeof v}, not JSON` };
    if (depth >= limits.maxDepth)
      return { path: shortPath(path), problem: `nests deeper than ${limits.maxDepth} levels` };
    if (Array.isArray(v)) {
      for (let i = v.length - 1; i >= 0; i--) stack.push({ v: v[i], path: keyPath(path, i), depth: depth + 1 });
      continue;
    }
    for (const k of Object.keys(v)) {
      const kp = unsafeTextProblem(k);
      if (kp) return { path: shortPath(path), problem: `has a key that ${kp}` };
      stack.push({ v: (v as Record<string, unknown>)[k], path: keyPath(path, k), depth: depth + 1 });
    }
  }
  return null;
}

test("property: the verdict and the report are the reference walk's, for safe and unsafe values alike", () => {
  // strings and keys that are often unsafe, numbers that are sometimes not finite, other types, small limits
  const text = fc.oneof(fc.string({ maxLength: 4 }), fc.constantFrom('\u0000', 'a\uD800', '\uDC00b', '\uD83D\uDE00'));
  const { json } = fc.letrec((tie) => ({
    json: fc.oneof(
      { depthSize: 'small' },
      text,
      fc.double(),
      fc.boolean(),
      fc.constant(null),
      fc.constantFrom<unknown>(undefined, 1n, () => 1),
      fc.array(tie('json'), { maxLength: 4 }),
      fc.dictionary(text, tie('json'), { maxKeys: 4 }),
    ),
  }));
  const limits = fc.record({ maxDepth: fc.integer({ min: 0, max: 6 }), maxNodes: fc.integer({ min: 1, max: 40 }) });
  fc.assert(
    fc.property(json, limits, (v, l) => {
      assert.deepEqual(findUnsafeJson(v, l), referenceWalk(v, l));
    }),
    { numRuns: 3000 },
  );
});
