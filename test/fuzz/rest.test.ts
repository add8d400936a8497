/**
 * The REST fuzzer, a few thousand cases, in `npm test` (the full run is `npm run fuzz:rest`).
 * A real hub on the test PostgreSQL; every operation of its /openapi.json, valid-ish and
 * hostile input, with and without the token. See rest-fuzz.ts for the properties.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { figureLine, fuzzRest } from './rest-fuzz.js';

const CASES = Number(process.env.REST_FUZZ_CASES ?? 3_000);

test(`REST fuzz: ${CASES} generated requests, no 5xx, all documented, nothing open or changed without the token`, async (t) => {
  const f = await fuzzRest({ cases: CASES, concurrency: 8 });
  t.diagnostic(figureLine(f));
  const shown = f.violations
    .slice(0, 10)
    .map(
      (v) =>
        `[${v.property}] ${v.detail}\n  request: ${v.request}${v.status ? `\n  answer: ${v.status} ${v.body}` : ''}`,
    );
  assert.equal(f.violations.length, 0, `${figureLine(f)}\n${shown.join('\n')}`);
  assert.equal(f.cases, CASES, 'every case was answered');
  // the run reached the handlers, not only the gate and the validators
  assert.ok(f.s2xx > CASES / 20, `2xx answers: ${f.s2xx}`);
  assert.ok(f.tokenlessChunks >= 1, 'at least one tokenless chunk was state-checked');
});
