/**
 * `isoOfMs` (core/iso-time.ts) stands in for `new Date(ms).toISOString()` on the command path and
 * in every log line's time: for any number, the same text, or the same RangeError. Its cache of
 * recent seconds must never hand one second's text to another, so the properties run the values
 * in sequences that revisit, alternate and collide in its slots.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import fc from 'fast-check';
import { isoOfMs } from '../../core/iso-time.js';
import { createRootLogger } from '../../core/log.js';

/** What Date answers: its text, or the name of what it threw. */
function byDate(ms: number): string {
  try {
    return new Date(ms).toISOString();
  } catch (err) {
    return (err as Error).name;
  }
}

function ours(ms: number): string {
  try {
    return isoOfMs(ms);
  } catch (err) {
    return (err as Error).name;
  }
}

const MAX = 8.64e15;

describe('isoOfMs: toISOString without a Date each time', () => {
  test('the same text as Date at the edges: the epoch, negatives, the range ends, fractions, no time', () => {
    for (const ms of [
      0,
      1,
      -1,
      999,
      1000,
      -1000,
      -1001,
      1796130528243,
      -62198755200000, // year 0
      -62198755200001, // year -1: Date writes -000001
      253402300799999, // 9999-12-31T23:59:59.999Z
      253402300800000, // +010000
      MAX,
      -MAX,
      MAX + 1,
      -MAX - 1,
      1.5,
      -1.5,
      1796130528243.9,
      Number.NaN,
      Number.POSITIVE_INFINITY,
      Number.NEGATIVE_INFINITY,
      Number.MAX_SAFE_INTEGER,
      -0,
    ]) {
      assert.equal(ours(ms), byDate(ms), `ms ${ms}`);
    }
  });

  test('any sequence of times, near and far apart, gives what Date gives for each', () => {
    const near = fc.integer({ min: 1_700_000_000_000, max: 1_700_000_020_000 });
    const anywhere = fc.oneof(
      fc.integer({ min: -MAX - 10, max: MAX + 10 }),
      fc.double({ noNaN: false }),
      near,
      // a second and the one eight seconds on share a slot
      near.map((ms) => ms + 8000),
    );
    fc.assert(
      fc.property(fc.array(anywhere, { minLength: 1, maxLength: 64 }), (seq) => {
        for (const ms of seq) assert.equal(ours(ms), byDate(ms), `ms ${ms}`);
      }),
      { numRuns: 2000 },
    );
  });

  test("a log line's time is the ISO text of when it was written", () => {
    const lines: string[] = [];
    const log = createRootLogger({ destination: { write: (s: string) => void lines.push(s) } });
    const before = Date.now();
    log.info({ n: 1 }, 'hello');
    const after = Date.now();
    const line = JSON.parse(lines[0]) as { time: string; msg: string };
    assert.equal(line.msg, 'hello');
    assert.match(line.time, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/);
    const t = Date.parse(line.time);
    assert.ok(t >= before && t <= after, `${line.time} between ${before} and ${after}`);
  });
});
