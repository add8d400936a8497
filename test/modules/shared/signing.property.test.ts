/**
 * canonicalJson is safe-stable-stringify plus a lone-surrogate check (signing.ts); the
 * `canonicalize` package (RFC 8785's reference for JavaScript, kept as a dev dependency) is the
 * oracle: the same text for every JSON value, and a TypeError exactly where it refuses.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import canonicalize from 'canonicalize';
import fc from 'fast-check';
import { canonicalJson } from '../../../modules/shared/signing.js';

const RUNS = { numRuns: 5000 };

/** The reference's answer: its text, or 'refused'. */
function reference(v: unknown): string {
  try {
    return canonicalize(v) ?? 'refused';
  } catch {
    return 'refused';
  }
}

function ours(v: unknown): string {
  try {
    return canonicalJson(v);
  } catch (err) {
    assert.ok(err instanceof TypeError, `not a TypeError: ${String(err)}`);
    return 'refused';
  }
}

/** Any string: lone surrogates, backslashes, `\ud800` as text, control characters. */
const anyText = fc.oneof(
  fc.string({ unit: 'binary', maxLength: 30 }),
  fc
    .array(fc.constantFrom('\\', 'u', 'd', '8', 'f', 'c', '0', '\ud800', '\udfff', '\ud83d\ude00', '"', '\n', 'a'), {
      maxLength: 12,
    })
    .map((a) => a.join('')),
);

const jsonish = fc.letrec((tie) => ({
  value: fc.oneof(
    { maxDepth: 4 },
    anyText,
    fc.double(),
    fc.integer(),
    fc.boolean(),
    fc.constant(null),
    fc.array(tie('value'), { maxLength: 5 }),
    fc.dictionary(anyText, tie('value'), { maxKeys: 5 }),
  ),
})).value;

test('canonicalJson gives the reference text for every JSON value, and refuses what it refuses', () => {
  fc.assert(
    fc.property(jsonish, (v) => {
      assert.equal(ours(v), reference(v));
    }),
    RUNS,
  );
  fc.assert(
    fc.property(fc.jsonValue(), (v) => {
      assert.equal(ours(v), reference(v));
    }),
    RUNS,
  );
});

test('canonicalJson: the edges named', () => {
  const cases: unknown[] = [
    '\ud800',
    { '\udc00': 1 },
    '\\ud800', // text that looks like an escape
    '\\\ud800', // a backslash, then a lone surrogate
    '\\\\ud800',
    '😀',
    'a\ud83d',
    NaN,
    [Infinity],
    -0,
    1e21,
    1e-7,
    { b: [1, { d: 2, c: 3 }], a: null },
    JSON.parse('{"__proto__":{"x":1},"a":2}'),
    new Date(0),
    { a: undefined, b: 1 },
    '\u0000\u001f"\\',
    `${'x'.repeat(6000)}\ud800`, // the long-string path
  ];
  for (const v of cases) assert.equal(ours(v), reference(v), JSON.stringify(v));
  const cycle: Record<string, unknown> = { a: 1 };
  cycle.self = cycle;
  assert.throws(() => canonicalJson(cycle), TypeError);
  assert.throws(() => canonicalJson(undefined), TypeError);
});
