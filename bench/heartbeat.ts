/**
 * `heartbeat`: signed QoS 1 heartbeats from 100 000 simulated projects over 500 connections,
 * ingested by the hub (bridge → bus → status: verify, presence, batched writes), with presence
 * made durable in PostgreSQL. Two brokers:
 *  - Mosquitto: heartbeats/s ingested with 0 loss, against the broker's one-way throughput
 *    (the same generator and connections into one subscriber in a child process, as the hub's
 *    bridge is one subscriber), measured in the same run; goal ≥ 50 000/s;
 *  - the embedded broker: offered rates in steps up to "as fast as PUBACKs come back"; the hub
 *    must not crash, and every heartbeat the broker acknowledged is either ingested or counted
 *    as a reported loss (bridge drops/rejections, broker shedding).
 *
 * Durability: probe heartbeats (a marker in their metrics) for 64 extra projects outside the
 * load, 4 a second; the time from publish until PostgreSQL's project_status shows the marker.
 * PostgreSQL, not PGlite: durability is read from outside the hub, and 100 k projects at this
 * rate is a server deployment (docs/architecture.md#databases).
 * Presence is seeded online (a hub restarted with its agents online); the first pass over all
 * 100 k projects (project cache cold) is measured separately from the steady state.
 * heartbeat_timeout_ms is 300 s here (see setup). The embedded broker runs with `auth: false`: with auth its ACL binds one connection to one
 * project, and 100 000 connections are not what this suite is about.
 */
import { performance } from 'node:perf_hooks';
import type { MqttClient } from 'mqtt';
import pg from 'pg';
import { BROKER } from '../modules/broker/contract/topics.js';
import { BRIDGE } from '../modules/mqtt-bridge/contract/topics.js';
import { TOPIC_MESSAGE_UP } from '../modules/shared/protocol.js';
import { STATUS } from '../modules/status/contract/topics.js';
import { connectMqtt, endClient, heartbeatPayload, publishQos1, signedData } from './agents.js';
import { startPeer } from './baseline.js';
import {
  type BenchDb,
  cleanupDir,
  cpuLedger,
  cpuMsOf,
  cpuPerMessage,
  envNumber,
  freePort,
  type HubProcess,
  hubYaml,
  logLines,
  PG_URL,
  type Provisioned,
  pgDatabase,
  projectIds,
  provision,
  seedOnline,
  sleep,
  startHub,
  startMosquitto,
} from './env.js';
import { type BenchRow, machine, percentile, type SuiteResult } from './harness.js';
import { HeartbeatLoad } from './load.js';

const PROBES = 64;

interface HubCounts {
  heartbeats: number;
  reregisters: number;
  lookupFailures: number;
  malformed: number;
  received: number;
  droppedByBus: number;
  rejected: number;
  shed: number;
  flushes: number;
  flushFailures: number;
}

/** A stats request; a module too busy to answer (its mailbox full) is asked again, then read as zeros. */
async function ask<T>(hub: HubProcess, topic: string, tries = 5): Promise<T | Record<string, never>> {
  for (let i = 1; ; i++) {
    try {
      return await hub.request<T>(topic, {}, 60_000);
    } catch (err) {
      if (i >= tries || !hub.alive()) {
        console.error(`heartbeat: ${topic} not answered: ${(err as Error).message}`);
        return {};
      }
      await sleep(500);
    }
  }
}

async function counts(hub: HubProcess, embedded: boolean): Promise<HubCounts> {
  const [s, b, k] = await Promise.all([
    ask<Record<string, unknown>>(hub, STATUS.stats),
    ask<Record<string, unknown>>(hub, BRIDGE.stats),
    embedded ? ask<Record<string, number>>(hub, BROKER.stats) : Promise.resolve({ shed: 0 }),
  ]);
  const n = (v: unknown) => (typeof v === 'number' ? v : 0);
  const rejected = Object.values((b.rejected_by_code ?? {}) as Record<string, number>).reduce((a, x) => a + x, 0);
  const flush = (s.flush ?? {}) as Record<string, number>;
  return {
    heartbeats: n(s.heartbeats),
    reregisters: n(s.reregisters_sent) + n(s.reregisters_throttled),
    lookupFailures: n(s.lookup_failures),
    malformed: n(s.malformed),
    received: n(b.received),
    droppedByBus: n(b.dropped_by_bus),
    rejected,
    shed: n(k.shed),
    flushes: n(flush.flushes),
    flushFailures: n(flush.failures),
  };
}

const diff = (a: HubCounts, b: HubCounts): HubCounts =>
  Object.fromEntries(Object.keys(a).map((k) => [k, b[k as keyof HubCounts] - a[k as keyof HubCounts]])) as never;

/** Polls until `target` heartbeats were handled since `base`, or nothing moved for `stallMs`. */
async function caughtUp(
  hub: HubProcess,
  embedded: boolean,
  base: HubCounts,
  target: number,
  stallMs = 5000,
): Promise<{ at: number; c: HubCounts }> {
  let last = -1;
  let lastMove = performance.now();
  for (;;) {
    const c = await counts(hub, embedded);
    const now = performance.now();
    const d = c.heartbeats - base.heartbeats;
    if (d >= target) return { at: now, c };
    if (d !== last) {
      last = d;
      lastMove = now;
    } else if (now - lastMove > stallMs) return { at: now, c };
    await sleep(100);
  }
}

/** What flushedBacklog reads of the status module's stats. */
type Backlog = { presence?: { pending_writes?: number }; flush?: { in_flight?: boolean } };

/**
 * Waits until the status module has no presence row left to write and no flush running. (It
 * waited for two more flushes before; a flush that finds nothing to write is not counted, so when
 * one flush took the whole backlog it waited out its 15 s bound.)
 */
async function flushedBacklog(hub: HubProcess, timeoutMs = 15_000): Promise<number> {
  const t0 = performance.now();
  while (performance.now() - t0 < timeoutMs) {
    const s: Backlog = await ask<Backlog>(hub, STATUS.stats);
    if (s.presence?.pending_writes === 0 && s.flush?.in_flight === false) break;
    await sleep(25);
  }
  return performance.now() - t0;
}

/** Probe heartbeats and the time until PostgreSQL shows them. */
class DurabilityProbe {
  readonly latencies: number[] = [];
  unseen = 0;
  sent = 0;
  private seq = 0;
  private readonly out = new Map<string, { seq: number; at: number }>();
  private timer?: NodeJS.Timeout;
  private polling = false;

  constructor(
    private readonly client: MqttClient,
    private readonly pgc: pg.Client,
    private readonly schema: string,
    private readonly projects: Provisioned[],
  ) {}

  private sending = true;

  start(): void {
    let tick = 0;
    this.timer = setInterval(() => {
      if (this.sending && tick++ % 4 === 0) void this.send();
      void this.poll();
    }, 25);
  }

  /** No more probes (the ones out are still awaited by stop()). */
  stopSending(): void {
    this.sending = false;
  }

  private async send(): Promise<void> {
    const p = this.projects[this.seq % this.projects.length];
    if (this.out.has(p.project_id)) return; // one outstanding per project
    const seq = ++this.seq;
    const at = performance.now();
    this.out.set(p.project_id, { seq, at });
    this.sent++;
    const text = signedData(p.project_id, p.secret, 'heartbeat', heartbeatPayload(p.project_id, seq));
    await publishQos1(this.client, TOPIC_MESSAGE_UP, text).catch(() => undefined);
  }

  private async poll(): Promise<void> {
    if (this.polling || this.out.size === 0) return;
    this.polling = true;
    try {
      const r = await this.pgc.query<{ project_id: string; probe: string | null }>(
        `SELECT project_id, metrics->>'probe' AS probe FROM "${this.schema}".project_status WHERE project_id = ANY($1)`,
        [[...this.out.keys()]],
      );
      const now = performance.now();
      for (const row of r.rows) {
        const o = this.out.get(row.project_id);
        if (o && row.probe !== null && Number(row.probe) >= o.seq) {
          this.latencies.push(now - o.at);
          this.out.delete(row.project_id);
        }
      }
    } finally {
      this.polling = false;
    }
  }

  /** Stops sending; waits up to `ms` for the outstanding probes to show. */
  async stop(ms = 5000): Promise<void> {
    clearInterval(this.timer);
    const end = performance.now() + ms;
    while (this.out.size > 0 && performance.now() < end) {
      await this.poll();
      await sleep(25);
    }
    this.unseen = this.out.size;
  }
}

interface Phase {
  db: BenchDb;
  hub: HubProcess;
  load: HeartbeatLoad;
  probeClient: MqttClient;
  pgc: pg.Client;
  probes: Provisioned[];
  close(): Promise<void>;
}

async function setup(
  brokerUrl: string | undefined,
  ids: string[],
  beforeHub?: (load: HeartbeatLoad) => Promise<void>,
): Promise<Phase> {
  const db = await pgDatabase();
  const cleanups: Array<() => Promise<unknown>> = [db.drop];
  try {
    const probeIds = projectIds(PROBES, 'probe');
    const creds = await provision(db, [...ids, ...probeIds]);
    const projects = ids.map((id) => creds.get(id)!);
    const probes = probeIds.map((id) => creds.get(id)!);
    const port = brokerUrl ? 0 : await freePort();
    const url = brokerUrl ?? `mqtt://127.0.0.1:${port}`;
    const load = new HeartbeatLoad(url);
    if (brokerUrl) {
      await load.open(projects, envNumber('BENCH_HB_CONNECTIONS', 500));
      cleanups.unshift(() => load.close());
      await beforeHub?.(load);
    }
    await seedOnline(db, [...ids, ...probeIds]);
    const hub = await startHub(
      hubYaml({
        db,
        mqttUrl: brokerUrl,
        embeddedPort: port,
        broker: { auth: false, max_clients: 20_000 },
        // One pass of the generator over 100 000 projects takes 100 000 / rate seconds, longer than
        // the default 30 s on a 2-core machine (their real 5 s cadence would be 20 000/s alone):
        // with 30 s, projects would time out between two of their heartbeats and the suite would
        // measure re-registration floods instead of ingestion.
        status: { heartbeat_timeout_ms: 300_000 },
      }),
      { name: 'heartbeat', startTimeoutMs: 120_000 },
    );
    cleanups.unshift(async () => {
      await hub.stop(30_000);
      cleanupDir(hub.dir);
    });
    if (!brokerUrl) {
      await load.open(projects, envNumber('BENCH_HB_CONNECTIONS', 500));
      cleanups.unshift(() => load.close());
    }
    const probeClient = await connectMqtt(url, { clientId: `bench-probe-${process.pid}` });
    cleanups.unshift(() => endClient(probeClient));
    const pgc = new pg.Client({ connectionString: PG_URL });
    await pgc.connect();
    cleanups.unshift(() => pgc.end());
    return {
      db,
      hub,
      load,
      probeClient,
      pgc,
      probes,
      async close() {
        for (const c of cleanups) await c().catch((err) => console.error(`cleanup: ${(err as Error).message}`));
      },
    };
  } catch (err) {
    for (const c of cleanups) await c().catch(() => undefined);
    throw err;
  }
}

/** The first pass over every project (project cache cold): how long until all are ingested. */
async function coldPass(ph: Phase, embedded: boolean, n: number): Promise<{ ms: number; ingested: number }> {
  const base = await counts(ph.hub, embedded);
  const t0 = performance.now();
  // at least one heartbeat per project: one round of every connection's list
  const start = ph.load.counters.acked;
  const runP = ph.load.run(120_000);
  while (ph.load.counters.acked - start < n && performance.now() - t0 < 120_000) await sleep(50);
  ph.load.stop();
  await runP;
  const sent = ph.load.counters.acked - start;
  const r = await caughtUp(ph.hub, embedded, base, sent, 10_000);
  return { ms: r.at - t0, ingested: r.c.heartbeats - base.heartbeats };
}

interface Measured {
  offered: number;
  acked: number;
  ingested: number;
  rate: number;
  d: HubCounts;
  hubCpuMs: number;
  alive: boolean;
}

async function measure(
  ph: Phase,
  embedded: boolean,
  ms: number,
  rate = Number.POSITIVE_INFINITY,
  /** Heartbeats sent beside the load (the probes): started once the counts are read, stopped when the load ends, returning how many were sent. */
  others?: { start(): void; stop(): number },
): Promise<Measured> {
  const base = await counts(ph.hub, embedded);
  others?.start();
  const a0 = ph.load.counters.acked;
  const cpu0 = cpuMsOf(ph.hub.pid);
  const t0 = performance.now();
  await ph.load.run(ms, rate);
  const othersSent = others?.stop() ?? 0;
  const acked = ph.load.counters.acked - a0;
  // caught up once the others' heartbeats are in too: they are counted as ingested, and a count
  // read as soon as the load's alone were in would leave some of theirs out (a loss that was not)
  const r = await caughtUp(ph.hub, embedded, base, acked + othersSent, 10_000).catch(() => null);
  const alive = ph.hub.alive();
  if (!r) return { offered: rate, acked, ingested: 0, rate: 0, d: diff(base, base), hubCpuMs: 0, alive };
  const d = diff(base, r.c);
  return {
    offered: rate,
    acked,
    ingested: d.heartbeats,
    rate: (d.heartbeats / (r.at - t0)) * 1000,
    d,
    hubCpuMs: cpuMsOf(ph.hub.pid) - cpu0,
    alive,
  };
}

export async function runHeartbeatSuite(): Promise<SuiteResult> {
  const N = envNumber('BENCH_HB_PROJECTS', 100_000, 20_000);
  const MEASURE_MS = envNumber('BENCH_HB_MS', 15_000, 5_000);
  const STEP_MS = envNumber('BENCH_HB_STEP_MS', 4_000, 3_000);
  const BASE_MS = envNumber('BENCH_HB_BASE_MS', 6_000, 3_000);
  const DUR_MS = envNumber('BENCH_HB_DURABILITY_MS', 8_000, 4_000);
  // N projects in all: N - 64 in the load, 64 probes. (The status module's project cache holds
  // 100 000 entries, evicted in insertion order: cycling through even a few more than that
  // misses on every lookup, one database read per heartbeat; 100 064 measured ~3x the CPU.)
  const ids = projectIds(N - PROBES);
  const rows: BenchRow[] = [];
  const notes: string[] = [];

  // ─── Mosquitto ──────────────────────────────────────────────────────────────────────────
  const mosq = await startMosquitto();
  let baseline = 0;
  let baseCpu = '';
  try {
    const ph = await setup(mosq.url, ids, async (load) => {
      const sink = await startPeer('sink', mosq.url, TOPIC_MESSAGE_UP);
      try {
        await load.run(1000); // warm-up
        const s0 = await sink.stats();
        const a0 = load.counters.acked;
        const ledger = cpuLedger({ mosquitto: mosq.pid, sink: sink.pid });
        await load.run(BASE_MS);
        await sleep(200);
        const s1 = await sink.stats();
        baseCpu = cpuPerMessage(ledger.read(), s1.count - s0.count, { bench: 'load generator' });
        baseline = ((s1.count - s0.count) / (s1.last - s0.last)) * 1000;
        notes.push(
          `baseline: ${load.counters.acked - a0} PUBACKed, ${s1.count - s0.count} received by the sink in ${(s1.last - s0.last).toFixed(0)} ms`,
        );
      } finally {
        await sink.stop();
      }
    });
    try {
      const cold = await coldPass(ph, false, N);
      const ledger = cpuLedger({ mosquitto: mosq.pid, hub: ph.hub.pid });
      const m = await measure(ph, false, MEASURE_MS);
      // where the 2 cores went, per message, beside the baseline's: with every core busy in both
      // windows, the ratio is the baseline's machine CPU per message over this one's
      notes.push(
        `CPU per heartbeat, µs (per process; machine: all busy CPU): baseline ${baseCpu}; hub at full rate ${cpuPerMessage(ledger.read(), m.ingested, { bench: 'load generator' })}`,
      );
      const lost = m.acked - m.ingested;
      // A saturated hub's presence flushes run behind its ingest: rows of the full-rate phase are
      // still being written when it ends. The probes measure durability at the offered rate, so
      // they start once that backlog is written (what it took is printed: recovery, not durability).
      const backlogMs = await flushedBacklog(ph.hub);
      notes.push(
        `presence rows left by the full-rate phase written ${backlogMs.toFixed(0)} ms after its last heartbeat was ingested`,
      );
      // durability at a load the generator sustains without lag (its event loop also times the
      // probes): half the rate just measured, or BENCH_HB_DURABILITY_RATE (to compare two hubs at
      // one offered rate: the generator's own load is part of what the probes see)
      const durRate = envNumber('BENCH_HB_DURABILITY_RATE', Math.max(1000, Math.round(m.rate / 2)));
      const probe = new DurabilityProbe(ph.probeClient, ph.pgc, ph.db.config.schema!, ph.probes);
      const dm = await measure(ph, false, DUR_MS, durRate, {
        start: () => probe.start(),
        stop: () => {
          probe.stopSending();
          return probe.sent;
        },
      });
      await probe.stop();
      const durLost = dm.acked + probe.sent - dm.ingested;
      const dur99 = percentile(probe.latencies, 99);
      const durMax = probe.latencies.length ? Math.max(...probe.latencies) : Number.NaN;
      rows.push(
        {
          metric: 'heartbeats/s ingested (Mosquitto)',
          value: m.rate,
          unit: 'msg/s',
          baseline,
          ratio: m.rate / baseline,
          goal: '>= 50,000/s',
          met: m.rate >= 50_000,
        },
        {
          metric: 'heartbeats lost (Mosquitto)',
          value: Math.max(0, lost) + Math.max(0, durLost),
          unit: 'msg',
          goal: '0',
          met: lost <= 0 && durLost <= 0 && m.d.reregisters === 0 && dm.d.reregisters === 0,
        },
        { metric: `presence durable p50 (at ${durRate}/s)`, value: percentile(probe.latencies, 50), unit: 'ms' },
        {
          metric: 'presence durable p99',
          value: dur99,
          unit: 'ms',
          goal: '<= 1000 ms',
          met: dur99 <= 1000 && probe.unseen === 0,
        },
        { metric: 'presence durable max', value: durMax, unit: 'ms' },
        { metric: 'cold first pass over all projects', value: (cold.ingested / cold.ms) * 1000, unit: 'msg/s' },
        { metric: 'hub CPU per heartbeat', value: (m.hubCpuMs / Math.max(1, m.ingested)) * 1000, unit: 'us' },
      );
      notes.push(
        `Mosquitto: ${N.toLocaleString('en-US')} projects over ${envNumber('BENCH_HB_CONNECTIONS', 500)} connections, ${MEASURE_MS / 1000} s as fast as PUBACKs return (16 in flight per connection); PUBACKed ${m.acked}, ingested ${m.ingested}; counters ${JSON.stringify(m.d)}`,
        `cold pass: ${cold.ingested} heartbeats in ${cold.ms.toFixed(0)} ms (every project's first heartbeat loads its row: project cache cold after a start)`,
        `durability: ${durRate}/s offered for ${DUR_MS / 1000} s; probe heartbeat → marker in PostgreSQL project_status: ${probe.latencies.length} probes seen, ${probe.unseen} not seen within 5 s after the run; ${dm.acked} PUBACKed, ${dm.ingested} ingested`,
      );
    } finally {
      await ph.close();
    }
  } finally {
    await mosq.stop();
  }

  // ─── embedded broker ────────────────────────────────────────────────────────────────────
  const ph = await setup(undefined, ids);
  try {
    await coldPass(ph, true, N);
    const steps = [5_000, 20_000, 50_000, Number.POSITIVE_INFINITY];
    let worstUnreported = 0;
    let crashed = false;
    const desc: string[] = [];
    for (const rate of steps) {
      const m = await measure(ph, true, STEP_MS, rate);
      const reported = m.d.droppedByBus + m.d.rejected + m.d.shed + m.d.malformed + m.d.lookupFailures;
      const unreported = Math.max(0, m.acked - m.ingested - reported);
      worstUnreported = Math.max(worstUnreported, unreported);
      if (!m.alive) crashed = true;
      desc.push(
        `${Number.isFinite(rate) ? rate : 'max'}/s offered: ${m.acked} PUBACKed, ${m.ingested} ingested (${m.rate.toFixed(0)}/s), reported losses ${reported}, unreported ${unreported}`,
      );
      if (crashed) break;
    }
    const fatal = logLines(ph.hub.logFile, 50).map((l) => l.msg);
    rows.push(
      {
        metric: 'embedded broker: hub crashed',
        value: crashed ? 1 : 0,
        unit: '',
        goal: 'no crash',
        met: !crashed,
      },
      {
        metric: 'embedded broker: unreported loss (worst step)',
        value: worstUnreported,
        unit: 'msg',
        goal: '0',
        met: worstUnreported === 0,
      },
    );
    notes.push(`embedded broker (auth off): ${desc.join('; ')}`);
    if (fatal.length > 0)
      notes.push(`embedded broker: error lines in the hub log: ${[...new Set(fatal)].slice(0, 3).join('; ')}`);
  } finally {
    await ph.close();
  }
  return { suite: 'heartbeat', machine: machine(), rows, notes };
}
