import assert from 'node:assert/strict';
import { test } from 'node:test';
import fc from 'fast-check';
import { findUnsafeJson, locateUnsafeJson, unsafeTextProblem } from '../../../modules/shared/sanitize.js';

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

test('a depth limit past what the first pass recurses to is still walked, without recursion', () => {
  const limits = { maxDepth: 100_000, maxNodes: 100_000 };
  assert.equal(findUnsafeJson(nested(20_000), limits), null);
  assert.match(findUnsafeJson({ deep: nested(20_000), bad: 'x\u0000' }, limits)!.problem, /NUL/);
});

test('only own keys are read, as Object.keys reads them', () => {
  const withInherited = Object.create({ inherited: 'x\u0000' }) as Record<string, unknown>;
  withInherited.own = 'fine';
  assert.equal(findUnsafeJson(withInherited), null);
  assert.equal(findUnsafeJson({ a: [withInherited] }), null);
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

test("property: the pathless first pass gives the reporting walk's verdict and report, for safe and unsafe values alike", () => {
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
      assert.deepEqual(findUnsafeJson(v, l), locateUnsafeJson(v, l));
    }),
    { numRuns: 3000 },
  );
});
