/**
 * `soak`: the async command path (REST send → tracker + outbox → Mosquitto → agent ack +
 * exec_result → writes) held at a fixed offered rate for minutes, interval by interval: the hub's
 * CPU per command, its RSS and JS heap, accept latency, and what PostgreSQL spent. Long enough
 * that every per-command cache in the hub (100 000 entries each: the event gate, the owners, the
 * replay caches) fills several times over, which no other suite does: a quick async window is
 * about 25 000 commands. A Map popped through `keys().next()` cost 5–45 µs an insertion once full
 * and was found only by a 120 s window (docs/benchmarks.md "Bounded maps that stay fast when full"); this
 * suite is the guard against the next cost that grows with what the hub has seen, and against
 * memory that does not stop growing.
 *
 * Load: open loop, `BENCH_SOAK_RATE` commands a second (1 000), sent on a 20 ms tick, at most
 * `BENCH_SOAK_MAX_IN_FLIGHT` (1 024) unfinished; a tick that finds them all busy holds its
 * commands back and counts them (the hub fell behind the offered rate). A command is finished
 * when the broker acknowledged its agent's exec_result (as in bench `async`).
 *
 * The machine's PostgreSQL runs without autovacuum, so dead rows would pile up as they never do on
 * a live site: the suite vacuums and analyzes the hub's schema by autovacuum's default rules
 * (env.ts autoAnalyze), and counts that server CPU in the intervals it falls in.
 *
 * At the end a ledger of every accepted command id is audited against the database: each one
 * completed with its result stored.
 */
import os from 'node:os';
import { performance } from 'node:perf_hooks';
import pg from 'pg';
import { resultsSent, startCommandHub } from './async.js';
import {
  autoAnalyze,
  cpuLedger,
  envNumber,
  PG_URL,
  pgDatabase,
  projectIds,
  rssOf,
  sleep,
  startMosquitto,
} from './env.js';
import { type BenchRow, machine, percentile, type SuiteResult } from './harness.js';

const API = '/api/exchange-hub';
const PAYLOAD = { text: 'x'.repeat(200), n: 1 };
const TICK_MS = 20;
const DRAIN_MS = 60_000;
const MB = 1024 * 1024;
/** The command module's per-command caches hold this many ids (events.ts MAX_REMEMBERED, owners.ts MAX_OWNERS). */
const CACHE_SIZE = 100_000;

interface Interval {
  /** Seconds from the start of the load at the interval's end. */
  at: number;
  accepted: number;
  finished: number;
  heldBack: number;
  errors: number;
  /** Commands the hub had accepted by the interval's end. */
  total: number;
  p50: number;
  p99: number;
  /** µs of CPU per command accepted in the interval. */
  hubUs: number;
  postgresUs: number;
  machineUs: number;
  rss: number;
  heapUsed: number;
  /** The hypervisor's steal over the interval, % of the machine's CPUs: when it rises, every process's CPU a command rises with it. */
  steal: number;
}

export async function runSoakSuite(): Promise<SuiteResult> {
  const DURATION_MS = envNumber('BENCH_SOAK_MS', 600_000, 120_000);
  const INTERVAL_MS = envNumber('BENCH_SOAK_INTERVAL_MS', 30_000, 15_000);
  const RATE = envNumber('BENCH_SOAK_RATE', 1000);
  const MAX_IN_FLIGHT = envNumber('BENCH_SOAK_MAX_IN_FLIGHT', 1024);
  const AGENTS = envNumber('BENCH_SOAK_AGENTS', 64);

  const mosq = await startMosquitto();
  const db = await pgDatabase();
  const schema = db.config.schema!;
  const cleanups: Array<() => Promise<unknown>> = [db.drop, () => mosq.stop()];
  const pgc = new pg.Client({ connectionString: PG_URL });
  const run = async (): Promise<SuiteResult> => {
    await pgc.connect();
    cleanups.unshift(() => pgc.end());
    const ids = projectIds(AGENTS);
    const { hub, agents, http } = await startCommandHub(mosq.url, db, ids, 256, cleanups, 'soak');
    await http.open('/healthz', 256);

    // finished: the broker acknowledged the agent's result
    const resultOf = resultsSent(agents);

    const ledger: string[] = [];
    let cur = { lat: [] as number[], accepted: 0, finished: 0, heldBack: 0, errors: 0 };
    const errorTexts = new Set<string>();
    let inFlight = 0;
    const sendOne = async (k: number) => {
      inFlight++;
      const at = performance.now();
      try {
        const r = await http.request('POST', `${API}/command/send`, {
          project_id: ids[k % ids.length],
          command_type: 'echo',
          payload: PAYLOAD,
        });
        if (r.status !== 202) {
          cur.errors++;
          errorTexts.add(`HTTP ${r.status} ${r.json?.error?.code ?? ''}`);
          return;
        }
        cur.lat.push(performance.now() - at);
        cur.accepted++;
        ledger.push(r.json.command_id);
        await resultOf(r.json.command_id);
        cur.finished++;
      } catch (err) {
        cur.errors++;
        errorTexts.add((err as Error).message);
      } finally {
        inFlight--;
      }
    };

    const analyzer = autoAnalyze([db], 1000, { vacuum: true });
    const intervals: Interval[] = [];
    const start = performance.now();
    let sent = 0;
    let ledgerCpu = cpuLedger({ hub: hub.pid, mosquitto: mosq.pid });
    let nextInterval = start + INTERVAL_MS;
    while (performance.now() - start < DURATION_MS) {
      const now = performance.now();
      const due = Math.floor(((now - start) / 1000) * RATE) - sent;
      for (let i = 0; i < due; i++) {
        if (inFlight >= MAX_IN_FLIGHT) {
          cur.heldBack += due - i;
          break;
        }
        void sendOne(sent + i);
      }
      sent += due;
      if (now >= nextInterval) {
        const cpu = ledgerCpu.read();
        ledgerCpu = cpuLedger({ hub: hub.pid, mosquitto: mosq.pid });
        const mem = await hub.memory().catch(() => null);
        const n = Math.max(1, cur.accepted);
        const iv: Interval = {
          at: (now - start) / 1000,
          accepted: cur.accepted,
          finished: cur.finished,
          heldBack: cur.heldBack,
          errors: cur.errors,
          total: ledger.length,
          p50: percentile(cur.lat, 50),
          p99: percentile(cur.lat, 99),
          hubUs: (cpu.hub * 1000) / n,
          postgresUs: (cpu.postgres * 1000) / n,
          machineUs: (cpu.machine * 1000) / n,
          rss: rssOf(hub.pid),
          heapUsed: mem?.heapUsed ?? Number.NaN,
          steal: (cpu.steal / (cpu.wall * os.cpus().length)) * 100,
        };
        intervals.push(iv);
        console.error(
          `  [soak] ${iv.at.toFixed(0)} s: ${iv.accepted} accepted (${iv.total} in all), ${iv.finished} finished, held back ${iv.heldBack}, errors ${iv.errors}; accept p50 ${iv.p50.toFixed(1)} p99 ${iv.p99.toFixed(1)} ms; CPU µs a command: hub ${iv.hubUs.toFixed(0)}, postgres ${iv.postgresUs.toFixed(0)}, machine ${iv.machineUs.toFixed(0)}; hub RSS ${(iv.rss / MB).toFixed(1)} MB, heap ${(iv.heapUsed / MB).toFixed(1)} MB; steal ${iv.steal.toFixed(1)} %`,
        );
        cur = { lat: [], accepted: 0, finished: 0, heldBack: 0, errors: 0 };
        nextInterval += INTERVAL_MS;
      }
      await sleep(Math.max(1, TICK_MS - (performance.now() - now)));
    }
    const loadMs = performance.now() - start;
    // what is still in flight finishes (or DRAIN_MS passes)
    const drainStart = performance.now();
    while (inFlight > 0 && performance.now() - drainStart < DRAIN_MS) await sleep(100);
    const analyzed = await analyzer.stop();

    // the ledger's audit: every accepted command completed, its result stored
    let completed = 0;
    let stored = 0;
    for (const auditStart = performance.now(); performance.now() - auditStart < DRAIN_MS; await sleep(200)) {
      const r = await pgc.query<{ completed: string; stored: string }>(
        `SELECT count(*) FILTER (WHERE t.status = 'completed') AS completed, count(r.command_id) AS stored
           FROM "${schema}".command_tracker t LEFT JOIN "${schema}".command_result r ON r.command_id = t.command_id
          WHERE t.command_id = ANY($1::text[])`,
        [ledger],
      );
      completed = Number(r.rows[0].completed);
      stored = Number(r.rows[0].stored);
      if (completed === ledger.length && stored === ledger.length) break;
    }
    const lost = ledger.length - completed;
    const errorCount = intervals.reduce((n, iv) => n + iv.errors, 0) + cur.errors;

    // the hub's cost early (the second interval: past the first's compilation, caches nearly
    // empty) against late (the last: every cache full several times over)
    const early = intervals[Math.min(1, intervals.length - 1)];
    const late = intervals[intervals.length - 1];
    const full = intervals.find((iv) => iv.total >= 2 * CACHE_SIZE) ?? intervals[Math.floor(intervals.length / 3)];
    const lateRss = Math.max(...intervals.filter((iv) => iv.at > full.at).map((iv) => iv.rss), late.rss);
    const table = intervals.map(
      (iv) =>
        `${iv.at.toFixed(0)} s ${iv.total} in all: hub ${iv.hubUs.toFixed(0)} µs, postgres ${iv.postgresUs.toFixed(0)} µs, accept p99 ${iv.p99.toFixed(0)} ms, RSS ${(iv.rss / MB).toFixed(0)} MB, heap ${(iv.heapUsed / MB).toFixed(0)} MB, steal ${iv.steal.toFixed(1)} %${iv.heldBack ? `, held back ${iv.heldBack}` : ''}`,
    );
    const offered = (sent / loadMs) * 1000;
    const acceptedRate = (ledger.length / loadMs) * 1000;
    const rows: BenchRow[] = [
      { metric: 'commands/s offered', value: offered, unit: 'cmd/s' },
      {
        metric: 'commands/s accepted',
        value: acceptedRate,
        unit: 'cmd/s',
        goal: '>= 0.95x offered',
        met: acceptedRate >= 0.95 * offered,
      },
      { metric: 'commands accepted in all', value: ledger.length, unit: 'cmd' },
      {
        metric: `hub CPU per command, last interval against the second`,
        value: late.hubUs,
        unit: 'us',
        baseline: early.hubUs,
        against: 'earlier',
        ratio: late.hubUs / early.hubUs,
        goal: '<= 1.2x',
        met: late.hubUs <= 1.2 * early.hubUs,
      },
      {
        metric: 'PostgreSQL CPU per command, last interval against the second',
        value: late.postgresUs,
        unit: 'us',
        baseline: early.postgresUs,
        against: 'earlier',
        ratio: late.postgresUs / early.postgresUs,
      },
      {
        metric: 'accept p99, last interval against the second',
        value: late.p99,
        unit: 'ms',
        baseline: early.p99,
        against: 'earlier',
        ratio: late.p99 / early.p99,
      },
      {
        metric: `hub RSS peak after ${full.at.toFixed(0)} s against then`,
        value: lateRss / MB,
        unit: 'MB',
        baseline: full.rss / MB,
        against: 'earlier',
        ratio: lateRss / full.rss,
        goal: '<= 1.15x',
        met: lateRss <= 1.15 * full.rss,
      },
      {
        metric: 'requests not accepted (HTTP errors, failed requests)',
        value: errorCount,
        unit: 'req',
        goal: '0',
        met: errorCount === 0,
      },
      {
        metric: 'commands lost (ledger audit)',
        value: lost,
        unit: 'cmd',
        goal: '0',
        met: lost === 0 && stored === ledger.length,
      },
    ];
    return {
      suite: 'soak',
      machine: machine(),
      rows,
      notes: [
        `${(loadMs / 1000).toFixed(0)} s at ${RATE} commands/s offered (open loop, ${TICK_MS} ms ticks, at most ${MAX_IN_FLIGHT} unfinished), ${AGENTS} agents (lean simulated, signed) on a private Mosquitto, the hub on the PostgreSQL server (${PG_URL}, schema ${schema}); intervals of ${INTERVAL_MS / 1000} s; the hub's caches hold ${CACHE_SIZE} commands each`,
        `RSS compared from the first interval after the hub had seen ${2 * CACHE_SIZE} commands (every cache full), or a third of the run when it never did`,
        `ledger: ${ledger.length} accepted, ${completed} completed, ${stored} results stored; errors ${[...errorTexts].slice(0, 3).join('; ') || 'none'}; ${analyzed}`,
        `intervals: ${table.join(' | ')}`,
      ],
    };
  };
  try {
    return await run();
  } finally {
    for (const c of cleanups) await c().catch((err) => console.error(`cleanup: ${(err as Error).message}`));
  }
}
