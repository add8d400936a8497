/**
 * `async`: commands accepted over REST (POST /api/exchange-hub/command/send, answered 202 at
 * once) and completed end to end — tracker + outbox in PostgreSQL, relay, bridge, Mosquitto,
 * agent ack + exec_result, acks and results written — sustained for 30 s, against two baselines
 * on the same broker, measured in the same run, one after the other on an otherwise idle
 * machine (echo, floor, hub):
 *  - the hand-coded floor (issue 13; bench/floor-child.ts): POST /send → INSERT (committed) →
 *    QoS 1 publish (PUBACKed) → 202; the agent's reply → UPDATE; node:http, pg and mqtt.js, no
 *    framework, no signing, writes micro-batched; on the same PostgreSQL server, its own schema.
 *    The suite's goals are against it: >= 0.8x its completed rate, accept p99 < 100 ms;
 *  - the raw mqtt.js QoS 1 echo at 256 in flight, shown on a second line;
 *  - with BENCH_FLOOR=both, also the floor that speaks the protocol (bench/floor-protocol.ts), run
 *    after the first: the hub against it, and it against the unsigned floor, in the same run
 *    (BENCH_FLOOR=signed: that floor alone, and the goals against it).
 *
 * Load (the same for hub and floor): a window of 256 commands in flight end to end. A slot sends
 * a command and is free again when the agent's reply for it (hub: exec_result) has been
 * acknowledged by the broker; the server's writing of that result is not in the loop, so if it
 * falls behind on writes its backlog shows as the drain after the window: completed/s counts
 * until the database holds every accepted command as completed. "Lost" is an accepted command
 * that is not `completed` at the end.
 */
import { performance } from 'node:perf_hooks';
import pg from 'pg';
import { WEB } from '../modules/web/contract/topics.js';
import { connectAgents, pool, startHeartbeats } from './agents.js';
import { echoRun, startPeer } from './baseline.js';
import {
  autoAnalyze,
  type BenchDb,
  cleanupDir,
  cpuLedger,
  cpuPerMessage,
  envNumber,
  hubYaml,
  PG_URL,
  pgDatabase,
  projectIds,
  provision,
  rateBudget,
  sleep,
  startHub,
  startMosquitto,
} from './env.js';
import { type FloorStats, startFloor } from './floor.js';
import { connectFloorAgents } from './floor-agent.js';
import { type FloorKind, floorAgentLabel, floorKinds, floorName } from './floor-protocol.js';
import { machine, percentile, type SuiteResult, signedVsFloor, vsFloor, vsSignedFloor } from './harness.js';
import { JsonClient } from './http.js';

const API = '/api/exchange-hub';
const PAYLOAD = { text: 'x'.repeat(200), n: 1 };
const DRAIN_MS = 60_000;

interface WindowOpts {
  http: JsonClient;
  path: string;
  projectIds: string[];
  /** the side's agents; each reports when the broker acknowledged its result for a command */
  agents: Array<{ onResultSent?: (id: string) => void }>;
  /** The server process (the hub, or the floor) and the broker: their CPU is read over the window. */
  cpuPids: { server: number; mosquitto: number };
  inFlight: number;
  warmupMs: number;
  windowMs: number;
  /** The side's schema, analyzed as autovacuum would from the warm-up on (env.ts autoAnalyze). */
  db: BenchDb;
}

interface WindowResult {
  acceptLat: number[];
  errors: string[];
  accepted: number;
  acceptedInWindow: number;
  doneInWindow: number;
  /** What the side's analyzer did. */
  analyzed: string;
  windowElapsed: number;
  /** Each process's CPU ms over the window (cpuLedger): `server` is the hub's or the floor's. */
  cpuAll: Record<string, number>;
}

/**
 * Resolves when the broker acknowledged the agent's exec_result for a command (the agents report
 * it by id through `onResultSent`); a result may beat the 202 to this process, and is kept until
 * its id is asked for.
 */
export function resultsSent(agents: Array<{ onResultSent?: (id: string) => void }>): (id: string) => Promise<void> {
  const waiting = new Map<string, () => void>();
  const early = new Set<string>();
  for (const a of agents) {
    a.onResultSent = (id) => {
      const w = waiting.get(id);
      if (w) {
        waiting.delete(id);
        w();
      } else early.add(id);
    };
  }
  return (id) =>
    early.delete(id)
      ? Promise.resolve()
      : new Promise<void>((r) => {
          waiting.set(id, r);
        });
}

/** `inFlight` slots sending for warm-up + window, each waiting for its command's result. */
async function driveWindow(o: WindowOpts): Promise<WindowResult> {
  const resultOf = resultsSent(o.agents);

  const acceptLat: number[] = [];
  const errors: string[] = [];
  let accepted = 0;
  let acceptedInWindow = 0;
  let doneInWindow = 0;
  let measuring = false;
  let stop = false;
  const t0 = performance.now();
  const windowStart = t0 + o.warmupMs;
  const windowEnd = windowStart + o.windowMs;
  let ledger: ReturnType<typeof cpuLedger> | undefined;
  const phase = setTimeout(() => {
    measuring = true;
    ledger = cpuLedger(o.cpuPids);
  }, o.warmupMs);
  const analyzer = autoAnalyze([o.db]);
  const slots = Array.from({ length: o.inFlight }, async (_, k) => {
    const pid = o.projectIds[k % o.projectIds.length];
    while (!stop) {
      const a = performance.now();
      let r: Awaited<ReturnType<JsonClient['request']>>;
      try {
        r = await o.http.request('POST', o.path, { project_id: pid, command_type: 'echo', payload: PAYLOAD });
      } catch (err) {
        errors.push((err as Error).message);
        continue;
      }
      const ms = performance.now() - a;
      if (r.status !== 202) {
        errors.push(`HTTP ${r.status} ${r.json?.error?.code ?? ''}`);
        await sleep(10);
        continue;
      }
      accepted++;
      const inWindow = measuring && !stop;
      if (inWindow) {
        acceptLat.push(ms);
        acceptedInWindow++;
      }
      await resultOf(r.json.command_id);
      if (inWindow) doneInWindow++;
    }
  });
  await sleep(windowEnd - performance.now());
  stop = true;
  const windowElapsed = performance.now() - windowStart;
  const cpuAll = ledger?.read() ?? {};
  clearTimeout(phase);
  await Promise.race([Promise.all(slots), sleep(DRAIN_MS)]);
  return {
    acceptLat,
    errors,
    accepted,
    acceptedInWindow,
    doneInWindow,
    windowElapsed,
    cpuAll,
    analyzed: await analyzer.stop(),
  };
}

/** Waits until `completed()` reaches `accepted` (or DRAIN_MS); how long that took and the count. */
async function drain(completed: () => Promise<number>, accepted: number) {
  let done = await completed();
  const start = performance.now();
  while (done < accepted && performance.now() - start < DRAIN_MS) {
    await sleep(100);
    done = await completed();
  }
  return { drainMs: performance.now() - start, completed: done };
}

/** Completions of the window's commands per second, with the drain they still needed counted in. */
const completedRate = (w: WindowResult, drainMs: number) => (w.doneInWindow / (w.windowElapsed + drainMs)) * 1000;
const acceptRate = (w: WindowResult) => (w.acceptedInWindow / w.windowElapsed) * 1000;
/** One floor's phase of the run (BENCH_FLOOR: one floor, or both in turn). */
interface FloorRun {
  kind: FloorKind;
  fw: WindowResult;
  fd: { drainMs: number; completed: number };
  stats: FloorStats;
  open: { ms: number; sockets: number };
  schema: string;
  lost: number;
  /** completed/s, the drain counted in */
  rate: number;
  /** the floor server's CPU ms a command accepted in the window */
  cpu: number;
}

const errorsNote = (errors: string[]) =>
  `${errors.length}${errors.length ? ` (${[...new Set(errors)].slice(0, 3).join('; ')})` : ''}`;

/**
 * The hub on `db` and Mosquitto at `mqttUrl`, with an agent per id registered, heartbeating and
 * shown online, and a REST client of `sockets` connections; what it started is stopped by
 * `cleanups` (added at its front, so they run before what the caller started earlier).
 */
export async function startCommandHub(
  mqttUrl: string,
  db: BenchDb,
  ids: string[],
  sockets: number,
  cleanups: Array<() => Promise<unknown>>,
  name: string,
) {
  const projects = [...(await provision(db, ids)).values()];
  const hub = await startHub(hubYaml({ db, mqttUrl }), { name });
  cleanups.unshift(async () => {
    await hub.stop();
    cleanupDir(hub.dir);
  });
  const info = await hub.request<{ url: string }>(WEB.info('web'));
  const agents = await connectAgents(mqttUrl, projects, false);
  cleanups.unshift(() => Promise.all(agents.map((a) => a.close())));
  await pool(agents, 32, (a) => a.register());
  const stopBeats = startHeartbeats(agents);
  cleanups.unshift(async () => stopBeats());
  const http = new JsonClient(info.url, sockets);
  cleanups.unshift(async () => http.close());
  for (const deadline = Date.now() + 30_000; ; await sleep(50)) {
    const r = await http.request('GET', `${API}/projects/online`);
    if (r.status === 200 && r.json.items.length === ids.length) break;
    if (Date.now() > deadline) throw new Error('agents did not come online');
  }
  return { hub, agents, http };
}

export async function runAsyncSuite(): Promise<SuiteResult> {
  const WINDOW_MS = envNumber('BENCH_ASYNC_MS', 30_000, 8_000);
  const WARMUP_MS = envNumber('BENCH_ASYNC_WARMUP_MS', 3_000, 1_000);
  const IN_FLIGHT = envNumber('BENCH_ASYNC_IN_FLIGHT', 256);
  const AGENTS = envNumber('BENCH_ASYNC_AGENTS', 64);
  const ECHO_MS = envNumber('BENCH_ECHO_MS', 5_000, 2_000);

  const mosq = await startMosquitto();
  const db = await pgDatabase();
  const schema = db.config.schema!;
  const kinds = floorKinds();
  const floorDbs: BenchDb[] = [];
  for (const _ of kinds) {
    floorDbs.push(
      await pgDatabase().catch(async (err) => {
        for (const d of [db, ...floorDbs]) await d.drop();
        throw err;
      }),
    );
  }
  const cleanups: Array<() => Promise<unknown>> = [...floorDbs.map((d) => d.drop), db.drop, () => mosq.stop()];
  const pgc = new pg.Client({ connectionString: PG_URL });
  const run = async (): Promise<SuiteResult> => {
    await pgc.connect();
    cleanups.unshift(() => pgc.end());
    const ids = projectIds(AGENTS);

    // raw baseline first, on the idle machine the floor and the hub get too
    const peer = await startPeer('echo', mosq.url);
    const echo = await echoRun(mosq.url, { inFlight: IN_FLIGHT, durationMs: ECHO_MS, peer });
    await peer.stop();

    // each floor (BENCH_FLOOR: the unsigned one, the signed one, or both in turn), alone, then
    // stopped before the next side starts
    const floors: FloorRun[] = [];
    for (const [i, kind] of kinds.entries()) {
      const fdb = floorDbs[i];
      const floor = await startFloor(
        mosq.url,
        { url: PG_URL, schema: fdb.config.schema! },
        { env: { BENCH_FLOOR: kind } },
      );
      const floorAgents = await connectFloorAgents(mosq.url, ids, 64, kind);
      const floorHttp = new JsonClient(floor.url, IN_FLIGHT);
      const floorCleanups = [
        async () => floorHttp.close(),
        () => Promise.all(floorAgents.map((a) => a.close())),
        floor.stop,
      ];
      cleanups.unshift(...floorCleanups);
      const open = await floorHttp.open('/', IN_FLIGHT);
      const fw = await driveWindow({
        http: floorHttp,
        path: '/send',
        projectIds: ids,
        agents: floorAgents,
        cpuPids: { server: floor.pid, mosquitto: mosq.pid },
        inFlight: IN_FLIGHT,
        warmupMs: WARMUP_MS,
        windowMs: WINDOW_MS,
        db: fdb,
      });
      const fd = await drain(async () => {
        const r = await pgc.query<{ n: string }>(`SELECT count(*) AS n FROM ${floor.table} WHERE status = 'completed'`);
        return Number(r.rows[0].n);
      }, fw.accepted);
      const stats = await floor.stats();
      for (const c of floorCleanups) await c();
      cleanups.splice(0, floorCleanups.length);
      floors.push({
        kind,
        fw,
        fd,
        stats,
        open,
        schema: fdb.config.schema!,
        lost: fw.accepted - fd.completed,
        rate: completedRate(fw, fd.drainMs),
        cpu: (fw.cpuAll.server ?? 0) / Math.max(1, fw.acceptedInWindow),
      });
    }
    // the goals are against the first floor (the issue's, unless BENCH_FLOOR=signed)
    const { fw, fd } = floors[0];
    const fRate = floors[0].rate;
    const f99 = percentile(fw.acceptLat, 99);
    const floorLost = floors.reduce((n, f) => n + f.lost, 0);

    const { hub, agents, http } = await startCommandHub(mosq.url, db, ids, IN_FLIGHT, cleanups, 'async');
    const count = async () => {
      const r = await pgc.query<{ status: string; n: string }>(
        `SELECT status, count(*) AS n FROM "${schema}".command_tracker GROUP BY status`,
      );
      return Object.fromEntries(r.rows.map((x) => [x.status, Number(x.n)])) as Record<string, number>;
    };

    const hubOpen = await http.open('/healthz', IN_FLIGHT);
    const hw = await driveWindow({
      http,
      path: `${API}/command/send`,
      projectIds: ids,
      agents,
      cpuPids: { server: hub.pid, mosquitto: mosq.pid },
      inFlight: IN_FLIGHT,
      warmupMs: WARMUP_MS,
      windowMs: WINDOW_MS,
      db,
    });
    let last: Record<string, number> = {};
    const hd = await drain(async () => {
      last = await count();
      return last.completed ?? 0;
    }, hw.accepted);
    const results = await pgc.query<{ n: string }>(`SELECT count(*) AS n FROM "${schema}".command_result`);
    const lost = hw.accepted - hd.completed;
    const rate = completedRate(hw, hd.drainMs);
    const p99 = percentile(hw.acceptLat, 99);
    const stats = await hub.request<Record<string, number>>('command/stats');
    const hubCpu = (hw.cpuAll.server ?? 0) / Math.max(1, hw.acceptedInWindow);
    const floorCpu = floors[0].cpu;
    const second = floors[1];
    return {
      suite: 'async',
      machine: machine(),
      rows: [
        vsFloor(`commands/s completed end to end (${IN_FLIGHT} in flight)`, 'cmd/s', rate, fRate, { min: 0.8 }),
        ...(second
          ? [vsSignedFloor('cmd/s', rate, second.rate), signedVsFloor('rate', 'cmd/s', second.rate, fRate)]
          : []),
        { metric: '  against raw MQTT echo', value: rate, unit: 'cmd/s', baseline: echo.rate, ratio: rate / echo.rate },
        vsFloor('commands/s accepted (202)', 'cmd/s', acceptRate(hw), acceptRate(fw)),
        vsFloor('accept latency p50', 'ms', percentile(hw.acceptLat, 50), percentile(fw.acceptLat, 50)),
        { ...vsFloor('accept latency p99', 'ms', p99, f99), goal: '< 100 ms', met: p99 < 100 },
        { metric: 'commands lost', value: lost, unit: 'cmd', goal: '0', met: lost === 0 && hw.errors.length === 0 },
        {
          metric: 'floor commands lost',
          value: floorLost,
          unit: 'cmd',
          goal: '0',
          met: floorLost === 0 && floors.every((f) => f.fw.errors.length === 0),
        },
        { metric: 'drain after the window', value: hd.drainMs, unit: 'ms', baseline: fd.drainMs, against: 'floor' },
        vsFloor('server CPU per command', 'ms', hubCpu, floorCpu),
        ...(second ? [vsSignedFloor('ms', hubCpu, second.cpu)] : []),
      ],
      notes: [
        `${WINDOW_MS / 1000} s sustained after ${WARMUP_MS / 1000} s warm-up, for ${floors.length === 1 ? 'the floor' : 'each floor in turn'} and then the hub; ${IN_FLIGHT} commands in flight end to end over ${AGENTS} agents (one connection each; hub: lean simulated, signed; ${floors.map((f) => `${floorName(f.kind)}: ${floorAgentLabel(f.kind)}`).join('; ')}); against the floor the ratio is hub / floor (goal >= 0.8x, accept p99 < 100 ms)`,
        `databases: hub and floor both on the PostgreSQL server (${PG_URL}), each in a fresh schema (hub ${schema}, ${floors.map((f) => `${floorName(f.kind)} ${f.schema}`).join(', ')}); hub: child process; floor: hand-coded node:http + pg + mqtt.js child process, writes micro-batched; Mosquitto private`,
        `${floors.map((f) => `${floorName(f.kind)}: ${f.fw.analyzed}`).join('; ')}; hub: ${hw.analyzed}`,
        `raw: mqtt.js QoS 1 echo, ${IN_FLIGHT} in flight, ${ECHO_MS / 1000} s, echo peer in a child process, before the floor and the hub started`,
        `connections: the client opens its ${IN_FLIGHT} keep-alive connections before each warm-up (a request on each at once): ${floors.map((f) => `${floorName(f.kind)} ${f.open.ms.toFixed(0)} ms (${f.open.sockets} kept)`).join(', ')}, hub ${hubOpen.ms.toFixed(0)} ms (${hubOpen.sockets} kept)`,
        `hub: accepted ${hw.accepted}, completed ${hd.completed}, results stored ${results.rows[0].n}, statuses ${JSON.stringify(last)}, HTTP errors ${errorsNote(hw.errors)}`,
        ...floors.map(
          (f) =>
            `${floorName(f.kind)}: accepted ${f.fw.accepted}, completed ${f.fd.completed}, HTTP errors ${errorsNote(f.fw.errors)}; ${f.stats.inserted} rows in ${f.stats.insert_batches} INSERTs (${(f.stats.inserted / Math.max(1, f.stats.insert_batches)).toFixed(1)} per statement), ${f.stats.updated} in ${f.stats.update_batches} UPDATEs (${(f.stats.updated / Math.max(1, f.stats.update_batches)).toFixed(1)}); replies refused ${f.stats.bad_replies}${f.kind === 'signed' ? `; signed acks checked ${f.stats.acks}` : ''}`,
        ),
        `CPU per command accepted in the window, µs (per process; machine: all busy CPU): ${floors.map((f) => `${floorName(f.kind)}: ${cpuPerMessage(f.fw.cpuAll, f.fw.acceptedInWindow, { bench: 'load generator and agents' })}`).join('; ')}; hub: ${cpuPerMessage(hw.cpuAll, hw.acceptedInWindow, { bench: 'load generator and agents' })}`,
        ...floors.map(
          (f, i) =>
            `${i === 0 ? '' : `against the ${floorName(f.kind)}: `}${rateBudget({ ms: hw.cpuAll, n: hw.acceptedInWindow }, { ms: f.fw.cpuAll, n: f.fw.acceptedInWindow }, 0.8)}`,
        ),
        `command stats: published ${stats.published}, publish_errors ${stats.publish_errors}, flushes ${stats.flushes}, publish outcomes left to the ack ${stats.outcomes_skipped ?? 0}, flush_errors ${stats.flush_errors}, duplicate_results ${stats.duplicate_results}; agent duplicates ${agents.reduce((n, a) => n + a.counters.duplicates, 0)}`,
      ],
    };
  };
  try {
    return await run();
  } finally {
    for (const c of cleanups) await c().catch((err) => console.error(`cleanup: ${(err as Error).message}`));
  }
}
