/**
 * Every bound a test waits with is written as what the wait needs on a quiet machine, and
 * stretched here by one factor: `GMQ_TEST_TIME_SCALE` (a positive number; default 4, which
 * keeps `npm test` green on 2 shared cores running two suites at once). A slow or busy machine
 * raises it (`GMQ_TEST_TIME_SCALE=8 npm test`); a bound only matters when something is wrong,
 * so a large factor costs nothing on a passing run, only time before a failing one reports.
 *
 * The helpers of test/helpers and test/fixtures apply it themselves (`until`, `withTimeout`,
 * `recordEvents().waitFor`, `HostProcess.waitFor`, `connectClient` …): pass them the quiet
 * bound. A test that sets its own timer, or hands a deadline to something else (a bus
 * request's `timeoutMs`, Playwright's `timeout`), wraps the number in `scaled()`. Windows in
 * which something must *not* happen are not bounds and stay unscaled.
 */
export const TIME_SCALE = timeScale(process.env.GMQ_TEST_TIME_SCALE);

function timeScale(raw: string | undefined): number {
  if (raw === undefined || raw.trim() === '') return 4;
  const n = Number(raw);
  if (!Number.isFinite(n) || n <= 0) throw new Error(`GMQ_TEST_TIME_SCALE must be a positive number, got "${raw}"`);
  return n;
}

/** A quiet-machine bound of `ms`, stretched by GMQ_TEST_TIME_SCALE. */
export function scaled(ms: number): number {
  return Math.ceil(ms * TIME_SCALE);
}

/**
 * The longest a run of `attempts` backoff-driven restarts may take: the configured delays
 * (initial, doubling, capped, as core/host.ts schedules them) plus `perAttemptMs` for each
 * restart itself (spawning a process, a worker, opening a socket). It is a quiet-machine bound
 * like any other: hand it to a helper, which stretches it by GMQ_TEST_TIME_SCALE.
 *
 * @example
 *   await seen.waitFor(HOST_TOPICS.moduleFailed, 4, backoffBound({ initial_ms: 100, max_ms: 400 }, 4));
 */
export function backoffBound(
  restart: { initial_ms: number; max_ms: number },
  attempts: number,
  perAttemptMs = 5_000,
): number {
  let total = 0;
  for (let i = 0; i < attempts; i++) total += Math.min(restart.initial_ms * 2 ** i, restart.max_ms) + perAttemptMs;
  return total;
}

/**
 * The longest `periods` periods of a timer-driven event (heartbeat, sweep, flush) may take on a
 * quiet machine: each period plus `slackMs` for the work it triggers. Stretched by the helper
 * it is passed to, like any other bound.
 */
export function periodBound(periodMs: number, periods = 1, slackMs = 2_000): number {
  return periods * (periodMs + slackMs);
}

/** Bounded waiting for tests: wait for the event itself, never sleep as synchronisation. `ms` is scaled. */
export function withTimeout<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  const bound = scaled(ms);
  let timer: NodeJS.Timeout;
  return Promise.race([
    p.finally(() => clearTimeout(timer)),
    new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`timed out after ${bound} ms waiting for ${what}`)), bound);
    }),
  ]);
}

/**
 * Re-checks a condition on every turn of the event loop (and every 5 ms) until it holds or the
 * bound (`ms`, scaled) passes.
 */
export async function until(cond: () => boolean | Promise<boolean>, ms: number, what: string): Promise<void> {
  const bound = scaled(ms);
  const deadline = Date.now() + bound;
  for (;;) {
    if (await cond()) return;
    if (Date.now() > deadline) throw new Error(`timed out after ${bound} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 5));
  }
}

/** A promise with its resolver outside, for handing an event's arrival to a test. */
export function deferred<T = void>(): { promise: Promise<T>; resolve: (v: T) => void; reject: (e: unknown) => void } {
  let resolve!: (v: T) => void;
  let reject!: (e: unknown) => void;
  const promise = new Promise<T>((res, rej) => {
    resolve = res;
    reject = rej;
  });
  return { promise, resolve, reject };
}
