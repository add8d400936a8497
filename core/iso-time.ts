/**
 * ISO 8601 text of a time in milliseconds, as `new Date(ms).toISOString()` gives it, without a
 * Date and a format each time. The command path writes several instants a command (created_at,
 * timeout_at, the PUBACK, the ack, the result) and every log line its own, at thousands of
 * commands a second, mostly within the same few seconds: `toISOString` was 2.5 % of the hub's CPU
 * in bench `async`. The text up to the seconds is kept for the last few seconds seen; the
 * milliseconds are appended.
 */

/** Seconds kept (a power of two): `now`, `now` plus a retry step, plus a timeout, … */
const SLOTS = 8;
const seconds = new Float64Array(SLOTS).fill(Number.NaN);
const prefixes: string[] = new Array(SLOTS).fill('');
/** Date's range: ±8.64e15 ms (ECMA-262 TimeClip). */
const MAX_TIME = 8.64e15;
/** `.000Z` … `.999Z` */
const MILLIS: string[] = Array.from({ length: 1000 }, (_, m) => `.${String(m).padStart(3, '0')}Z`);

/**
 * `new Date(ms).toISOString()`: the same text for every time value, and the same RangeError for
 * one that is no time (NaN, ±Infinity, beyond ±8.64e15).
 *
 * @example isoOfMs(1796130528243) === '2026-12-01T13:08:48.243Z'
 */
export function isoOfMs(ms: number): string {
  // fractions (truncated by Date) and what is no time go the long way
  if (!Number.isSafeInteger(ms) || ms > MAX_TIME || ms < -MAX_TIME) return new Date(ms).toISOString();
  const sec = Math.floor(ms / 1000);
  const slot = sec & (SLOTS - 1);
  if (seconds[slot] !== sec) {
    const text = new Date(sec * 1000).toISOString();
    prefixes[slot] = text.slice(0, -5); // without `.000Z`
    seconds[slot] = sec;
  }
  return prefixes[slot] + MILLIS[ms - sec * 1000];
}
