/**
 * `sync` and `sync-concurrent`: REST sync commands (POST /api/exchange-hub/command/sync) through
 * the whole hub — web → command (tracker + outbox on PGlite) → relay → mqtt-bridge → Mosquitto →
 * agent → command_ack + exec_result → results written → waiter woken → answer — against a raw
 * mqtt.js QoS 1 echo round trip on the same Mosquitto, measured in the same run, interleaved.
 *
 * Layout: the hub in a child process (hub-child.ts); the HTTP callers and the simulated agents
 * in this process; the echo baseline's requester here and its echo peer in a child process, so
 * both sides cross the same process boundaries and broker hops.
 * The agent is the lean simulated one (agents.ts SimAgent: verifies, acks, answers `echo` at
 * once), not modules/agent: the point is the hub's overhead, not the agent's handler bus.
 */
import { performance } from 'node:perf_hooks';
import { COMMAND, WEB } from '../modules/shared/topics.js';
import { connectAgents, pool, type SimAgent, startHeartbeats } from './agents.js';
import { echoRun, type Peer, startPeer } from './baseline.js';
import {
  cleanupDir,
  cpuMsOf,
  envNumber,
  type HubProcess,
  hubYaml,
  type Mosquitto,
  pgDatabase,
  pgliteDatabase,
  projectIds,
  provision,
  sleep,
  startHub,
  startMosquitto,
} from './env.js';
import { type BenchRow, machine, median, percentile, type SuiteResult } from './harness.js';
import { JsonClient } from './http.js';

const API = '/api/exchange-hub';

interface World {
  mosq: Mosquitto;
  hub: HubProcess;
  http: JsonClient;
  agents: SimAgent[];
  peer: Peer;
  close(): Promise<void>;
}

/** BENCH_SYNC_DB=pg|pglite picks the hub's database (default: pglite, the embedded default). */
const SYNC_DB = process.env.BENCH_SYNC_DB === 'pg' ? 'pg' : 'pglite';

async function startWorld(nProjects: number, name: string): Promise<World> {
  const mosq = await startMosquitto();
  const db = SYNC_DB === 'pg' ? await pgDatabase() : pgliteDatabase();
  const cleanups: Array<() => Promise<unknown>> = [db.drop, () => mosq.stop()];
  try {
    const projects = [...(await provision(db, projectIds(nProjects))).values()];
    const hub = await startHub(hubYaml({ db, mqttUrl: mosq.url }), { name });
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
    const peer = await startPeer('echo', mosq.url);
    cleanups.unshift(() => peer.stop());
    return {
      mosq,
      hub,
      http,
      agents,
      peer,
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

/** One sync call; the latency in ms, or an error string. */
async function syncCall(http: JsonClient, projectId: string): Promise<number | string> {
  const t0 = performance.now();
  const r = await http.request('POST', `${API}/command/sync`, {
    project_id: projectId,
    command_type: 'echo',
    payload: PAYLOAD,
    wait_ms: 10_000,
  });
  const ms = performance.now() - t0;
  if (r.status !== 200) return `HTTP ${r.status} ${r.json?.error?.code ?? ''}`;
  if (r.json.status !== 'completed' || !r.json.result) return `status ${r.json.status}`;
  return ms;
}

interface LoopResult {
  lat: number[];
  errors: string[];
  rate: number;
  hubCpuMs: number;
}

/** `inFlight` closed-loop callers for `ms`, each on its own project in turn. */
async function syncLoop(w: World, inFlight: number, ms: number): Promise<LoopResult> {
  const lat: number[] = [];
  const errors: string[] = [];
  const ids = w.agents.map((a) => a.project.project_id);
  const cpu0 = cpuMsOf(w.hub.pid);
  const t0 = performance.now();
  const end = t0 + ms;
  await Promise.all(
    Array.from({ length: inFlight }, async (_, k) => {
      const pid = ids[k % ids.length];
      while (performance.now() < end) {
        const r = await syncCall(w.http, pid);
        if (typeof r === 'number') lat.push(r);
        else errors.push(r);
      }
    }),
  );
  const elapsed = performance.now() - t0;
  return { lat, errors, rate: (lat.length / elapsed) * 1000, hubCpuMs: cpuMsOf(w.hub.pid) - cpu0 };
}

const warm = (w: World, n: number, inFlight: number) => syncLoopCount(w, n, inFlight);
async function syncLoopCount(w: World, n: number, inFlight: number): Promise<void> {
  let left = n;
  const ids = w.agents.map((a) => a.project.project_id);
  await Promise.all(
    Array.from({ length: inFlight }, async (_, k) => {
      while (left-- > 0) await syncCall(w.http, ids[k % ids.length]);
    }),
  );
}

export async function runSyncSuite(): Promise<SuiteResult> {
  const RUNS = envNumber('BENCH_SYNC_RUNS', 5, 2);
  const SYNC_MS = envNumber('BENCH_SYNC_MS', 4000, 1500);
  const ECHO_MS = envNumber('BENCH_ECHO_MS', 2000, 1000);
  const w = await startWorld(1, 'sync');
  try {
    await warm(w, 300, 1);
    const p50: number[] = [];
    const p99: number[] = [];
    const e50: number[] = [];
    const e99: number[] = [];
    const errors: string[] = [];
    let calls = 0;
    let cpu = 0;
    for (let r = 0; r < RUNS; r++) {
      const echo = await echoRun(w.mosq.url, { inFlight: 1, durationMs: ECHO_MS, warmupMs: 200, peer: w.peer });
      e50.push(percentile(echo.rtts, 50));
      e99.push(percentile(echo.rtts, 99));
      const hub = await syncLoop(w, 1, SYNC_MS);
      p50.push(percentile(hub.lat, 50));
      p99.push(percentile(hub.lat, 99));
      errors.push(...hub.errors);
      calls += hub.lat.length;
      cpu += hub.hubCpuMs;
    }
    const s = await w.hub.request<Record<string, number>>(COMMAND.stats);
    const base50 = median(e50);
    const base99 = median(e99);
    const v50 = median(p50);
    const v99 = median(p99);
    const rows: BenchRow[] = [
      {
        metric: 'sync round trip p50 (1 in flight)',
        value: v50,
        unit: 'ms',
        baseline: base50,
        ratio: base50 / v50,
        goal: '<= 6x raw',
        met: v50 <= 6 * base50,
      },
      {
        metric: 'sync round trip p99 (1 in flight)',
        value: v99,
        unit: 'ms',
        baseline: base99,
        ratio: base99 / v99,
        goal: '<= 20x raw',
        met: v99 <= 20 * base99,
      },
      { metric: 'sync calls measured', value: calls, unit: 'calls' },
      { metric: 'sync calls failed', value: errors.length, unit: 'calls', goal: '0', met: errors.length === 0 },
      { metric: 'hub CPU per sync command', value: cpu / Math.max(1, calls), unit: 'ms' },
    ];
    return {
      suite: 'sync',
      machine: machine(),
      rows,
      notes: [
        `median of ${RUNS} runs, each ${SYNC_MS} ms of sync calls and ${ECHO_MS} ms of echo, interleaved; ratio = raw / hub (the hub is ${(v50 / base50).toFixed(1)}x raw at p50, ${(v99 / base99).toFixed(1)}x at p99)`,
        `hub: child process, ${SYNC_DB === 'pg' ? 'PostgreSQL server' : 'PGlite'}, Mosquitto (private, set_tcp_nodelay); agent: lean simulated (bench/agents.ts), one project; baseline: mqtt.js QoS 1 echo through an echo peer in a child process`,
        `per-run p50 hub ${p50.map((x) => x.toFixed(2)).join(', ')} ms; raw ${e50.map((x) => x.toFixed(3)).join(', ')} ms`,
        `command stats: accepted ${s.accepted}, published ${s.published}, completed ${s.completed}, flushes ${s.flushes}`,
        ...(errors.length > 0 ? [`first errors: ${[...new Set(errors)].slice(0, 3).join('; ')}`] : []),
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
    await warm(w, 1000, IN_FLIGHT);
    const rates: number[] = [];
    const p99s: number[] = [];
    const erates: number[] = [];
    const e99s: number[] = [];
    const errors: string[] = [];
    let calls = 0;
    let cpu = 0;
    for (let r = 0; r < RUNS; r++) {
      const echo = await echoRun(w.mosq.url, { inFlight: IN_FLIGHT, durationMs: ECHO_MS, peer: w.peer });
      erates.push(echo.rate);
      e99s.push(percentile(echo.rtts, 99));
      const hub = await syncLoop(w, IN_FLIGHT, SYNC_MS);
      rates.push(hub.rate);
      p99s.push(percentile(hub.lat, 99));
      errors.push(...hub.errors);
      calls += hub.lat.length;
      cpu += hub.hubCpuMs;
    }
    const base = median(erates);
    const v = median(rates);
    return {
      suite: 'sync-concurrent',
      machine: machine(),
      rows: [
        {
          metric: `sync commands/s (${IN_FLIGHT} in flight)`,
          value: v,
          unit: 'cmd/s',
          baseline: base,
          ratio: v / base,
          goal: '>= 0.25x raw',
          met: v / base >= 0.25,
        },
        { metric: 'sync round trip p99', value: median(p99s), unit: 'ms', baseline: median(e99s) },
        { metric: 'sync calls failed', value: errors.length, unit: 'calls', goal: '0', met: errors.length === 0 },
        { metric: 'hub CPU per sync command', value: cpu / Math.max(1, calls), unit: 'ms' },
      ],
      notes: [
        `median of ${RUNS} runs, each ${SYNC_MS} ms of sync calls and ${ECHO_MS} ms of echo (${IN_FLIGHT} in flight), interleaved`,
        `hub: child process, ${SYNC_DB === 'pg' ? 'PostgreSQL server' : 'PGlite'}, Mosquitto; ${IN_FLIGHT} lean simulated agents (one project each, own connection), one caller per agent`,
        `per-run hub cmd/s ${rates.map((x) => x.toFixed(0)).join(', ')}; raw echo/s ${erates.map((x) => x.toFixed(0)).join(', ')}`,
        ...(errors.length > 0 ? [`first errors: ${[...new Set(errors)].slice(0, 3).join('; ')}`] : []),
      ],
    };
  } finally {
    await w.close();
  }
}
