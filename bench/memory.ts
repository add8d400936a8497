/**
 * `memory`: the hub's resident set size with 100 000 provisioned projects of which 10 000 are
 * online, in the default deployment (config.yml on a fresh machine): the embedded broker with
 * authentication and PGlite in the hub's process, both counted in its RSS. The 10 000 agents
 * are lean simulated ones, one MQTT connection each (so the broker's per-connection state is
 * in the figure), registered through the real handshake and heartbeating every 5 s; RSS is
 * sampled once a second over a steady period after they are all online.
 * The hub is a child process (hub-child.ts) so its RSS is its own; the agents live here.
 * Provisioning: a batched INSERT in the status module's table format (env.ts provision).
 *
 * A third variant (`pg-mosquitto`) connects the same agents to a private Mosquitto instead, the
 * hub's bridge its one subscriber: the hub's own memory for that fleet, without the embedded
 * broker's per-connection state in its process (what bounds the figure above; the broker's
 * memory is then Mosquitto's, not the hub's, and it is reported beside it).
 */
import { performance } from 'node:perf_hooks';
import { HOST_TOPICS } from '../core/host-topics.js';
import { BRIDGE, type BridgeStats } from '../modules/mqtt-bridge/contract/topics.js';
import type { StatusStats } from '../modules/status/contract/stats.js';
import { STATUS } from '../modules/status/contract/topics.js';
import { connectAgents, heartbeats, pool, type SimAgent } from './agents.js';
import {
  type BenchDb,
  cleanupDir,
  descendantsPss,
  embeddedServerDatabase,
  envNumber,
  freePort,
  type HubMemory,
  hubYaml,
  type ProcessPss,
  pgDatabase,
  pgliteDatabase,
  projectIds,
  provision,
  rssOf,
  sleep,
  startHub,
  startMosquitto,
} from './env.js';
import { machine, median, type SuiteResult } from './harness.js';

const MB = 1024 * 1024;

/** The fields of the status module's stats the registration probe prints. */
interface Variant {
  peak: number;
  median: number;
  idle: number;
  online: number;
  tracked: number;
  connectMs: number;
  registerMs: number;
  samples: number;
  usage: HubMemory | null;
  /** Mosquitto's own RSS at the end, when the agents connected to it instead of the embedded broker. */
  brokerRss: number | null;
  /** The hub's child processes (an embedded PostgreSQL server) at each steady sample: PSS summed. */
  childrenPeak: number;
  /** The hub's RSS plus its children's PSS, sample by sample: the peak. */
  totalPeak: number;
  /** The hub's child processes at the sample of their peak: what the server's peak was made of. */
  childrenAtPeak: ProcessPss[];
}

async function measureRss(
  db: BenchDb,
  N: number,
  ONLINE: number,
  STEADY_MS: number,
  broker: 'embedded' | 'mosquitto' = 'embedded',
): Promise<Variant> {
  const cleanups: Array<() => Promise<unknown>> = [db.drop];
  try {
    const creds = await provision(db, projectIds(N));
    const port = await freePort();
    const mosquitto = broker === 'mosquitto' ? await startMosquitto() : null;
    if (mosquitto) cleanups.push(() => mosquitto.stop());
    const hub = await startHub(
      hubYaml({
        db,
        embeddedPort: port,
        mqttUrl: mosquitto?.url,
        // 10 000 agents and the hub's own bridge: one more than the default 10 000
        broker: { max_clients: ONLINE + 1000 },
      }),
      { name: 'memory', startTimeoutMs: 120_000 },
    );
    cleanups.unshift(async () => {
      await hub.stop(30_000);
      cleanupDir(hub.dir);
    });
    await sleep(2000);
    const idle: number[] = [];
    for (let i = 0; i < 3; i++) {
      idle.push(rssOf(hub.pid));
      await sleep(500);
    }

    const online = projectIds(ONLINE).map((id) => creds.get(id)!);
    const t0 = performance.now();
    const agents: SimAgent[] = await connectAgents(
      mosquitto?.url ?? `mqtt://127.0.0.1:${port}`,
      online,
      true,
      200,
      PERSISTENT_SESSIONS,
    );
    cleanups.unshift(() => pool(agents, 500, (a) => a.close()));
    const connectMs = performance.now() - t0;
    // each agent heartbeats from its own registration on: registering 10 000 takes longer than
    // the hub's heartbeat timeout, so the first ones would otherwise be silent past it
    const beats = heartbeats();
    cleanups.unshift(async () => beats.stop());
    // every 5 s while registering: how far, and where the hub's queues stand (stderr, not the figures)
    let registered = 0;
    const probe = setInterval(() => {
      const ask = <T>(topic: string) => hub.request<T>(topic, {}, 4000).catch((err: Error) => err);
      void Promise.all([
        ask<{ mailboxes: Array<{ name: string; queued: number }> }>(HOST_TOPICS.busStats),
        ask<StatusStats>(STATUS.stats),
        ask<BridgeStats>(BRIDGE.stats),
      ]).then(([bus, st, br]) => {
        const q =
          bus instanceof Error
            ? bus.message
            : bus.mailboxes
                .filter((m) => m.queued > 0)
                .map((m) => `${m.name}:${m.queued}`)
                .join(' ') || 'none';
        const status =
          st instanceof Error
            ? st.message
            : `accepted ${st.registers_accepted}, online ${st.presence.online}, pending writes ${st.presence.pending_writes}, flush in flight ${st.flush.in_flight}, flushes ${st.flush.flushes}, reregisters ${st.reregisters_sent}`;
        const bridge =
          br instanceof Error
            ? br.message
            : `received ${br.received}, durable waiting ${br.durable_waiting}, publish in flight ${br.publish_in_flight} (avg ${Math.round(br.publish_ms_avg)} ms, max ${Math.round(br.publish_ms_max)} ms)`;
        console.error(
          `  [memory] registered ${registered}/${ONLINE}; queued ${q}; status: ${status}; bridge: ${bridge}`,
        );
      });
    }, 5000);
    cleanups.unshift(async () => clearInterval(probe));
    await pool(agents, 200, async (a) => {
      await a.register();
      registered++;
      beats.start(a, Math.floor(Math.random() * 5000));
    });
    clearInterval(probe);
    const registerMs = performance.now() - t0 - connectMs;
    const stats = () => hub.request<StatusStats>(STATUS.stats, {}, 60_000);
    // the status mailbox answers after the registrations queued before the request: be patient
    for (const deadline = Date.now() + 180_000; ; await sleep(500)) {
      const s = await stats().catch(() => null);
      if (s && s.presence.online >= ONLINE) break;
      if (Date.now() > deadline) throw new Error(`only ${s?.presence.online ?? '?'} of ${ONLINE} online`);
    }
    const samples: number[] = [];
    const totals: number[] = [];
    let childrenAtPeak: ProcessPss[] = [];
    let childrenPeak = 0;
    const end = performance.now() + STEADY_MS;
    while (performance.now() < end) {
      const rss = rssOf(hub.pid);
      const procs = descendantsPss(hub.pid);
      const kids = procs.reduce((sum, p) => sum + p.pss, 0);
      if (kids > childrenPeak) [childrenPeak, childrenAtPeak] = [kids, procs];
      samples.push(rss);
      totals.push(rss + kids);
      await sleep(1000);
    }
    const s = await stats().catch(() => ({ presence: { online: Number.NaN, tracked: Number.NaN } }));
    // where the RSS goes; BENCH_HEAP_SNAPSHOT=file also writes the JS heap there (steady state)
    const usage = await hub.memory(process.env.BENCH_HEAP_SNAPSHOT).catch(() => null);
    return {
      usage,
      brokerRss: mosquitto ? rssOf(mosquitto.pid) : null,
      peak: Math.max(...samples),
      childrenPeak,
      totalPeak: Math.max(...totals),
      childrenAtPeak,
      median: median(samples),
      idle: median(idle),
      online: s.presence.online,
      tracked: s.presence.tracked,
      connectMs,
      registerMs,
      samples: samples.length,
    };
  } finally {
    for (const c of cleanups) await c().catch((err) => console.error(`cleanup: ${(err as Error).message}`));
  }
}

/**
 * The agents keep sessions on the broker (`clean: false`), as the agent module's do, so the
 * embedded broker holds their subscriptions as it would for a real fleet (1.7 KB of live heap an
 * agent more than a clean session before subscription-index.ts, 0.6 KB since). Until 2026-12-07
 * the suite's agents connected with clean sessions; `BENCH_MEM_CLEAN=1` measures that way.
 */
const PERSISTENT_SESSIONS = process.env.BENCH_MEM_CLEAN !== '1';

const VARIANTS = ['embedded', 'pglite', 'pg', 'pg-mosquitto'] as const;
type MemVariant = (typeof VARIANTS)[number];

/**
 * BENCH_MEM_DBS: which hubs to measure, all three by default: the embedded default, then the
 * PostgreSQL server, both with the embedded broker, then the server with the agents on Mosquitto.
 */
function memVariants(): MemVariant[] {
  const want = (process.env.BENCH_MEM_DBS ?? VARIANTS.join(',')).split(',').map((s) => s.trim());
  const out = VARIANTS.filter((d) => want.includes(d));
  if (out.length === 0) throw new Error(`BENCH_MEM_DBS=${process.env.BENCH_MEM_DBS}: name ${VARIANTS.join(', ')}`);
  return out;
}

const VARIANT_TEXT: Record<MemVariant, { what: string; short: string; note: string }> = {
  embedded: {
    what: 'default config (the embedded PostgreSQL server)',
    short: 'embedded server',
    note: ' (the server is the hub’s child: its processes’ PSS is added in the hub + server row)',
  },
  pglite: {
    what: 'PGlite in process',
    short: 'PGlite',
    note: ' (a whole PostgreSQL in WASM inside the hub process, counted in its RSS)',
  },
  pg: { what: 'PostgreSQL server', short: 'PostgreSQL', note: ' (the server’s memory is not the hub’s)' },
  'pg-mosquitto': {
    what: 'PostgreSQL server, agents on Mosquitto (no broker in the hub)',
    short: 'PostgreSQL + Mosquitto',
    note: ' (the agents’ connections are Mosquitto’s: not in the hub’s RSS)',
  },
};

export async function runMemorySuite(): Promise<SuiteResult> {
  const N = envNumber('BENCH_MEM_PROJECTS', 100_000, 20_000);
  const ONLINE = envNumber('BENCH_MEM_ONLINE', 10_000, 2_000);
  const STEADY_MS = envNumber('BENCH_MEM_STEADY_MS', 10_000, 6_000);
  const variants = memVariants();
  const label = `${N.toLocaleString('en-US')} provisioned, ${ONLINE.toLocaleString('en-US')} online`;
  const rows: SuiteResult['rows'] = [];
  const notes = [
    `embedded broker with auth unless said otherwise (each agent its own connection, ${PERSISTENT_SESSIONS ? 'a persistent session (clean: false) as the agent module keeps' : 'a clean session (BENCH_MEM_CLEAN=1)'}, real handshake, heartbeat every 5 s); hub in a child process; RSS from /proc/<pid>/status, sampled every second while steady`,
  ];
  for (const d of variants) {
    const v =
      d === 'pglite' || d === 'embedded'
        ? await measureRss(d === 'pglite' ? pgliteDatabase() : embeddedServerDatabase(), N, ONLINE, STEADY_MS)
        : await measureRss(
            await pgDatabase(),
            N,
            ONLINE,
            Math.max(5000, STEADY_MS / 2),
            d === 'pg-mosquitto' ? 'mosquitto' : 'embedded',
          );
    const { what, short, note } = VARIANT_TEXT[d];
    rows.push(
      {
        metric: `hub RSS, ${label}, ${what}, peak`,
        value: v.peak / MB,
        unit: 'MB',
        // the goal is the deployment's (the broker in the hub's process); without it the row says what the hub alone holds
        ...(d === 'pg-mosquitto' ? {} : { goal: '<= 200 MB', met: v.peak <= 200 * MB }),
      },
      { metric: 'same, median of samples', value: v.median / MB, unit: 'MB' },
      { metric: 'same, provisioned, none online yet', value: v.idle / MB, unit: 'MB' },
      ...(d === 'embedded'
        ? [
            {
              metric: `hub + its PostgreSQL server (PSS of the server's processes), ${label}, peak`,
              value: v.totalPeak / MB,
              unit: 'MB',
              goal: '< 300 MB',
              met: v.totalPeak < 300 * MB,
            },
            { metric: 'the server alone (PSS), peak', value: v.childrenPeak / MB, unit: 'MB' },
          ]
        : []),
      { metric: `online at the end (${short})`, value: v.online, unit: 'projects' },
      {
        metric: `connect + register ${ONLINE.toLocaleString('en-US')} agents (${short})`,
        value: (v.connectMs + v.registerMs) / 1000,
        unit: 's',
      },
    );
    const u = v.usage;
    if (u)
      notes.push(
        `${short} at the end: JS heap ${(u.heapUsed / MB).toFixed(0)} of ${(u.heapTotal / MB).toFixed(0)} MB, external ${(u.external / MB).toFixed(0)} MB (array buffers ${(u.arrayBuffers / MB).toFixed(0)} MB), RSS ${(u.rss / MB).toFixed(0)} MB` +
          (u.spaces
            ? `; heap spaces ${Object.entries(u.spaces)
                .filter(([, size]) => size >= MB)
                .map(([name, size]) => `${name.replace(/_space$/, '')} ${(size / MB).toFixed(0)}`)
                .join(', ')} MB`
            : ''),
      );
    notes.push(
      `${short}: ${v.samples} samples, connect ${(v.connectMs / 1000).toFixed(1)} s, register ${(v.registerMs / 1000).toFixed(1)} s (${Math.round(ONLINE / (v.registerMs / 1000))}/s), tracked ${v.tracked}${note}` +
        (v.brokerRss === null ? '' : `; Mosquitto's own RSS at the end ${(v.brokerRss / MB).toFixed(0)} MB`),
    );
    // an autovacuum worker or a grown session shows here (docs/benchmarks.md "Autovacuum's samples, smaller")
    if (v.childrenAtPeak.length > 0)
      notes.push(
        `${short}: the server's processes at its peak sample (PSS MB): ${v.childrenAtPeak
          .sort((a, b) => b.pss - a.pss)
          .map(
            (p) =>
              `${(p.pss / MB).toFixed(1)} ${p.title
                .replace(/^.*\/bin\/postgres .*$/, 'postmaster')
                .replace(/^postgres: /, '')
                .replace(/ 127\.0\.0\.1\(\d+\)/, '')}`,
          )
          .join(', ')}`,
      );
  }
  return { suite: 'memory', machine: machine(), rows, notes };
}
