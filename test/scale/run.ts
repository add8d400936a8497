/**
 * `npm run scale`: several hub instances as one hub (issue 11). A private PostgreSQL and a private
 * Mosquitto (persistence on), N hub instances as processes on them (one database, one shared
 * subscription group, a bridge client id each), P projects each with its own agent process;
 * then, in one run:
 *
 *   1. throughput with 1 instance, then with all N (same load generator, servers and agents);
 *   2. a WebSocket and a gRPC watcher (all events) on every instance, presence sampled on every
 *      instance every 500 ms, and a mixed load (async sends, every 10th a sync send) spread
 *      round-robin over the instances' REST endpoints;
 *   3. at half the sends, kill -9 of one instance; it stays down `--down-s`, then restarts;
 *   4. the ledger is settled and audited.
 *
 * It prints one line per property, then the totals, and exits 1 when a property fails.
 *
 *   npm run scale                                   # 3 instances, 20 projects, 3 000 sends, the kill, 1 vs 3
 *   npm run scale -- --instances 3 --projects 5 --commands 300 --throughput-s 0
 *
 * Flags (environment): --instances N (SCALE_INSTANCES, 3), --projects N (SCALE_PROJECTS, 20),
 * --commands N (SCALE_COMMANDS, 3000: sends of the mixed load), --throughput-s S
 * (SCALE_THROUGHPUT_S, 20: each of the 1-instance and N-instance windows; 0 skips them), --down-s S
 * (SCALE_DOWN_S, 15: how long the killed instance stays down), --log-dir DIR (SCALE_LOG_DIR: the
 * hubs' logs and the figures of a run with a failing property).
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { ChaosAgent, type Project } from '../chaos/fleet.js';
import { PrivateMosquitto, PrivatePostgres, sleep } from '../chaos/servers.js';
import { HubInstance } from './cluster.js';
import { CpuMeter, cpuOf, postmasterPid, treeCpuOf } from './cpu.js';
import { API, type LoadSpec, type Outcome, ScaleLoad, TERMINAL, TERMINAL_SQL } from './load.js';
import { type PresenceFigures, PresenceSampler } from './presence.js';
import { type NextInstance, type Watcher, type WatcherFigures, watchGrpc, watchWs } from './watchers.js';

export interface ScaleOptions {
  instances: number;
  projects: number;
  /** Sends of the mixed load (the kill comes at half of them). */
  commands: number;
  /** Length of each throughput window (1 instance, then N); 0 skips the comparison. */
  throughputMs: number;
  /** How long the killed instance stays down before its restart. */
  downMs: number;
  /** The dead instance's in-flight commands must be terminal within this after the kill (the issue: 10 s). */
  takeoverMs: number;
  /** A result that reached the hub later than this after its agent finished it waited somewhere: stranded. */
  strandMs: number;
  /** Execution timeout of every command. */
  timeoutMs: number;
  /** A sync send's wait. */
  waitMs: number;
  /** The end waits this long without progress before auditing. */
  stallMs: number;
  logDir: string;
  log: (line: string) => void;
}

export interface Throughput {
  instances: number;
  durationS: number;
  accepted: number;
  completed: number;
  acceptedPerS: number;
  completedPerS: number;
  refused: Record<string, number>;
  /** CPU seconds each process (tree) used in the window. */
  cpuS: Record<string, number>;
}

export interface KillFigures {
  victim: string;
  inFlightAtKill: number;
  /** ms from the kill until the last of them was terminal (null: some never were). */
  inFlightTerminalMs: number | null;
  inFlightOutcome: Record<string, number>;
  /** Of them, still not terminal when the killed instance began its restart. */
  inFlightAtRestart: number;
  /** Sends cut by the kill (no answer), sent again to another instance with the same key. */
  cutAndRetried: number;
  /** Answers other than 2xx from the survivors between the kill and the restart, by code. */
  survivorErrors: Record<string, number>;
  restartMs: number;
  /** The restarted instance answered /readyz 200 and a sync send through it completed. */
  serves: boolean;
  servesDetail: string;
}

export interface AuditFigures {
  accepted: number;
  terminal: number;
  executed: number;
  stored: number;
  lost: number;
  stranded: number;
  twice: number;
  lostSamples: unknown[];
  strandedSamples: unknown[];
}

export interface SendFigures {
  sends: number;
  ok: number;
  /** 409 CMD_ERR_PROJECT_OFFLINE for a project whose agent was connected. */
  refusedOnline: number;
  http504: number;
  http5xx: number;
  other: Record<string, number>;
  syncP50Ms: number | null;
  syncP99Ms: number | null;
}

export interface Property {
  name: string;
  ok: boolean;
  line: string;
}

export interface ScaleFigures {
  options: Omit<ScaleOptions, 'log'>;
  presence: PresenceFigures;
  reregisterAsks: number;
  sends: SendFigures;
  watchers: WatcherFigures[];
  kill: KillFigures;
  audit: AuditFigures;
  throughput: Throughput[];
  properties: Property[];
  durationMs: number;
  logs?: string;
}

const pct = (xs: number[], p: number): number | null => {
  if (xs.length === 0) return null;
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))];
};

const countBy = <T>(xs: T[], key: (x: T) => string): Record<string, number> => {
  const out: Record<string, number> = {};
  for (const x of xs) out[key(x)] = (out[key(x)] ?? 0) + 1;
  return out;
};

async function provision(base: string, name: string): Promise<Project> {
  const res = await fetch(`${base}${API}/projects`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ project_id: name, name }),
  });
  const body = (await res.json()) as Project;
  if (res.status !== 201) throw new Error(`provisioning ${name}: ${res.status} ${JSON.stringify(body)}`);
  return body;
}

/** Whether an agent is connected to the broker now, from its own log (its last connection line). */
function agentConnected(a: ChaosAgent): boolean {
  if (!a.running) return false;
  const lines = a.proc.lines;
  for (let i = lines.length - 1; i >= 0; i--) {
    const m = lines[i].msg;
    if (m === 'agent connected to the broker' || m === 'agent registered') return true;
    if (m === 'agent lost the broker connection') return false;
  }
  return false;
}

/** The load goes on at least this long after the restarted instance serves (its new watchers see results). */
const AFTER_RESTART_MS = 5_000;

export async function runScale(opts: ScaleOptions): Promise<ScaleFigures> {
  const t0 = Date.now();
  const log = (line: string) => opts.log(`[${((Date.now() - t0) / 1000).toFixed(1)} s] ${line}`);
  const pgs = await PrivatePostgres.create();
  const db = `scale_${Date.now().toString(36)}`;
  const dbUrl = await pgs.createDatabase(db);
  const mosquitto = await PrivateMosquitto.create();
  const group = 'hubs';
  const hubs: HubInstance[] = [];
  for (let i = 0; i < opts.instances; i++)
    hubs.push(await HubInstance.create({ index: i, dbUrl, brokerUrl: mosquitto.url, group }));
  const agents: ChaosAgent[] = [];
  const watchers: Watcher[] = [];
  try {
    // one instance first: it runs the migrations; the others start later (throughput 1 vs N)
    await hubs[0].start();
    await hubs[0].ready();
    log(`scale: ${hubs[0].name} up at ${hubs[0].base}`);
    for (let i = 0; i < opts.projects; i++) {
      agents.push(new ChaosAgent(await provision(hubs[0].base, `scale-${i}`), mosquitto.url));
    }
    // a few at a time: twenty node processes starting at once take minutes on two cores
    for (let i = 0; i < agents.length; i += 5) await Promise.all(agents.slice(i, i + 5).map((a) => a.start()));
    log(`scale: ${agents.length} agents registered`);
    const connected = () => new Set(agents.filter(agentConnected).map((a) => a.project.project_id));
    const serving = new Set<string>([hubs[0].name]);
    const load = new ScaleLoad(
      agents.map((a) => a.project.project_id),
      () => hubs.filter((h) => serving.has(h.name)),
      connected,
      pgs,
      db,
    );
    const meter = new CpuMeter({
      ...Object.fromEntries(hubs.map((h) => [h.name, () => treeCpuOf(h.pid)])),
      postgres: () => treeCpuOf(postmasterPid(pgs.dataDir)),
      mosquitto: () => cpuOf(mosquitto.pid),
      agents: () => agents.reduce((n, a) => n + (a.running ? treeCpuOf(a.proc.proc.pid) : 0), 0),
      harness: () => {
        const u = process.cpuUsage();
        return (u.user + u.system) / 1e6;
      },
    });
    const throughput: Throughput[] = [];
    const tpSpec = (n: number): LoadSpec => ({
      phase: `throughput-${n}`,
      durationMs: opts.throughputMs,
      kind: 'echo',
      syncEvery: 0,
      window: 16,
      senders: 64,
      timeoutMs: opts.timeoutMs,
      waitMs: opts.waitMs,
    });
    const measure = async (n: number) => {
      meter.start();
      const began = Date.now();
      await load.run(tpSpec(n));
      const ended = Date.now();
      throughput.push(await throughputOf(n, began, ended, meter.delta()));
    };
    const throughputOf = async (n: number, began: number, ended: number, cpuS: Record<string, number>) => {
      const phase = `throughput-${n}`;
      const ids = [...load.ledger].filter(([, e]) => e.phase === phase).map(([id]) => id);
      const rows = await pgs.query<{ n: string }>(
        db,
        `SELECT count(*) AS n FROM command_tracker WHERE command_id = ANY($1) AND status = 'completed'
           AND completed_at <= to_timestamp($2 / 1000.0)`,
        [ids, ended],
      );
      const s = (ended - began) / 1000;
      const completed = Number(rows[0].n);
      const refused = countBy(
        load.outcomes.filter((o) => o.phase === phase && o.code !== '2xx'),
        (o) => o.code,
      );
      return {
        instances: n,
        durationS: s,
        accepted: ids.length,
        completed,
        acceptedPerS: ids.length / s,
        completedPerS: completed / s,
        refused,
        cpuS,
      };
    };
    if (opts.throughputMs > 0) await measure(1);
    await Promise.all(
      hubs.slice(1).map(async (h) => {
        await h.start();
        await h.ready();
      }),
    );
    for (const h of hubs) serving.add(h.name);
    log(`scale: ${hubs.length} instances up`);
    if (opts.throughputMs > 0 && hubs.length > 1) await measure(hubs.length);

    // watchers on every instance, presence sampled on every instance
    // a watcher whose instance dies moves to one that serves, as the README tells clients to
    const nextFor =
      (own: HubInstance): NextInstance =>
      () => {
        const h = hubs.find((x) => x !== own && serving.has(x.name));
        return h ? { base: h.base, grpcAddress: h.grpcAddress } : undefined;
      };
    const watch = async (h: HubInstance, suffix = '') => {
      const ws = await watchWs(h.base, `ws ${h.name}${suffix}`, nextFor(h));
      const gr = await watchGrpc(h.grpcAddress, `grpc ${h.name}${suffix}`, nextFor(h));
      watchers.push(ws, gr);
      return [ws, gr];
    };
    for (const h of hubs) await watch(h);
    const sampler = new PresenceSampler(hubs, connected, 500);
    sampler.start();

    // the mixed load, the kill at half of it
    const victim = hubs[hubs.length - 1];
    const kill: KillFigures = {
      victim: victim.name,
      inFlightAtKill: 0,
      inFlightTerminalMs: null,
      inFlightOutcome: {},
      inFlightAtRestart: 0,
      cutAndRetried: 0,
      survivorErrors: {},
      restartMs: 0,
      serves: false,
      servesDetail: '',
    };
    let killAt = 0;
    let restartedAt = 0;
    let restartBeganAt = 0;
    let inFlight: string[] = [];
    let inFlightDone: Promise<void> = Promise.resolve();
    // the load goes on until the restarted instance has served under load for a while
    let faultDone = false;
    const mixed: LoadSpec = {
      phase: 'mixed',
      sends: opts.commands,
      until: () => faultDone,
      kind: 'sleep',
      syncEvery: 10,
      window: 8,
      senders: Math.min(32, agents.length * 2),
      timeoutMs: opts.timeoutMs,
      waitMs: opts.waitMs,
    };
    const fault = async () => {
      await load.reached(Math.floor(opts.commands / 2));
      serving.delete(victim.name);
      sampler.paused.add(victim.name);
      load.phase = 'down';
      killAt = Date.now();
      await victim.kill9();
      log(`scale: ${victim.name} killed (-9) after ${load.ledger.size} accepted`);
      const ids = [...load.ledger.keys()];
      const rows = await pgs.query<{ command_id: string }>(
        db,
        `SELECT command_id FROM command_tracker WHERE command_id = ANY($1) AND status NOT IN ${TERMINAL_SQL}`,
        [ids],
      );
      inFlight = rows.map((r) => r.command_id);
      kill.inFlightAtKill = inFlight.length;
      inFlightDone = (async () => {
        const bound = Date.now() + opts.timeoutMs + opts.downMs + opts.stallMs;
        while (Date.now() < bound) {
          const left = await pgs
            .query<{ n: string }>(
              db,
              `SELECT count(*) AS n FROM command_tracker WHERE command_id = ANY($1) AND status NOT IN ${TERMINAL_SQL}`,
              [inFlight],
            )
            .then((r) => Number(r[0].n))
            .catch(() => -1);
          if (left === 0) {
            kill.inFlightTerminalMs = Date.now() - killAt;
            return;
          }
          await sleep(250);
        }
      })();
      await sleep(opts.downMs);
      kill.inFlightAtRestart = await pgs
        .query<{ n: string }>(
          db,
          `SELECT count(*) AS n FROM command_tracker WHERE command_id = ANY($1) AND status NOT IN ${TERMINAL_SQL}`,
          [inFlight],
        )
        .then((r) => Number(r[0].n))
        .catch(() => -1);
      const r0 = Date.now();
      restartBeganAt = r0;
      try {
        await victim.start();
        // like a load balancer, callers and samples reach it once /readyz says so
        await victim.ready();
      } catch (err) {
        // a restart that fails is a finding of the run, not the end of it
        kill.restartMs = Date.now() - r0;
        restartedAt = Date.now();
        kill.servesDetail = `restart failed: ${(err as Error).message.split('\n')[0]}`;
        log(`scale: ${victim.name} ${kill.servesDetail}`);
        faultDone = true;
        return;
      }
      kill.restartMs = Date.now() - r0;
      restartedAt = Date.now();
      await watch(victim, ' (restarted)');
      serving.add(victim.name);
      sampler.paused.delete(victim.name);
      load.phase = 'after-restart';
      const check = await servesCheck(victim, agents[0].project.project_id, opts.waitMs);
      kill.serves = check.ok;
      kill.servesDetail = check.detail;
      log(`scale: ${victim.name} restarted in ${(kill.restartMs / 1000).toFixed(1)} s; serves: ${check.detail}`);
      await sleep(AFTER_RESTART_MS);
      faultDone = true;
    };
    await Promise.all([load.run(mixed), fault()]);
    log(`scale: mixed load done, ${load.ledger.size} accepted; settling`);
    await settle(pgs, db, [...load.ledger.keys()], opts.stallMs);
    await inFlightDone;
    // results received just now still travel to the watchers: give them a moment, then stop
    await sleep(2_000);
    const endAt = Date.now();
    const presence = await sampler.stop();
    for (const w of watchers) w.close();

    // ── figures ──
    const results = await pgs.query<{ command_id: string; received: string }>(
      db,
      `SELECT command_id, (extract(epoch FROM received_at) * 1000)::float8 AS received FROM command_result`,
    );
    const MARGIN = 2_000;
    const watcherFigures = watchers.map((w) => {
      const from = w.tally.openedAt + MARGIN;
      const to = (w.tally.closedAt || endAt) - MARGIN;
      const expected = new Set(
        results.filter((r) => Number(r.received) >= from && Number(r.received) <= to).map((r) => r.command_id),
      );
      return w.tally.figures(expected);
    });
    const propertyOutcomes = load.outcomes.filter((o) => !o.phase.startsWith('throughput'));
    const sends = sendFigures(propertyOutcomes);
    kill.cutAndRetried = propertyOutcomes.filter((o) => o.code === 'conn' && o.instance === victim.name).length;
    kill.survivorErrors = countBy(
      propertyOutcomes.filter(
        (o) => o.instance !== victim.name && o.code !== '2xx' && o.at >= killAt && o.at < restartedAt,
      ),
      (o) => o.code,
    );
    const executions = agents.flatMap((a) => a.executions());
    const audit = await auditLedger(pgs, db, [...load.ledger.keys()], executions, opts.strandMs, restartBeganAt);
    if (inFlight.length > 0) {
      const rows = await pgs.query<{ status: string; late_result: boolean }>(
        db,
        'SELECT status, late_result FROM command_tracker WHERE command_id = ANY($1)',
        [inFlight],
      );
      kill.inFlightOutcome = countBy(rows, (r) => `${r.status}${r.late_result ? ' (late result)' : ''}`);
    }
    const reregisterAsks = agents.reduce(
      (n, a) =>
        n +
        a.runs.reduce((m, r) => m + r.lines.filter((l) => l.msg === 'hub asked the agent to register again').length, 0),
      0,
    );
    const figures: ScaleFigures = {
      options: withoutLog(opts),
      presence,
      reregisterAsks,
      sends,
      watchers: watcherFigures,
      kill,
      audit,
      throughput,
      properties: [],
      durationMs: Date.now() - t0,
    };
    figures.properties = properties(figures, opts);
    if (figures.properties.some((p) => !p.ok)) {
      fs.mkdirSync(opts.logDir, { recursive: true });
      const dir = fs.mkdtempSync(path.join(opts.logDir, 'scale-'));
      for (const h of hubs) h.saveLogs(dir);
      fs.writeFileSync(path.join(dir, 'figures.json'), JSON.stringify(figures, null, 2));
      figures.logs = dir;
    }
    return figures;
  } finally {
    for (const w of watchers) w.close();
    await Promise.allSettled(agents.map((a) => a.dispose()));
    await Promise.allSettled(hubs.map((h) => h.dispose()));
    await mosquitto.destroy().catch(() => undefined);
    await pgs.destroy().catch(() => undefined);
  }
}

function withoutLog(opts: ScaleOptions): Omit<ScaleOptions, 'log'> {
  const { log: _log, ...rest } = opts;
  return rest;
}

/**
 * A sync send through the restarted instance (ready by now) completes. A 503 says "try again"
 * (Retry-After), so a caller does, with the same Idempotency-Key, at most three times.
 */
async function servesCheck(h: HubInstance, project: string, waitMs: number): Promise<{ ok: boolean; detail: string }> {
  const key = `serves-${Date.now()}`;
  const answers: string[] = [];
  try {
    for (let attempt = 1; attempt <= 3; attempt++) {
      const res = await fetch(`${h.base}${API}/command/sync`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', 'idempotency-key': key },
        body: JSON.stringify({ project_id: project, command_type: 'echo', payload: { probe: true }, wait_ms: waitMs }),
        signal: AbortSignal.timeout(waitMs + 30_000),
      });
      const body = (await res.json().catch(() => ({}))) as { status?: string; error?: { code?: string } };
      answers.push(`${res.status} ${body.status ?? body.error?.code ?? ''}`.trim());
      if (res.status === 200 && body.status === 'completed') {
        return { ok: true, detail: `/readyz 200, then a sync send: ${answers.join(', ')}` };
      }
      if (res.status !== 503) break;
      await sleep(2_000);
    }
    return { ok: false, detail: `/readyz 200, then a sync send: ${answers.join(', ')}` };
  } catch (err) {
    return { ok: false, detail: `${answers.join(', ')} ${(err as Error).message}`.trim() };
  }
}

/** Waits until every id is terminal, or nothing became terminal for `stallMs`. */
async function settle(pgs: PrivatePostgres, db: string, ids: string[], stallMs: number): Promise<void> {
  let last = -1;
  let since = Date.now();
  for (;;) {
    const rows = await pgs
      .query<{ n: string }>(
        db,
        `SELECT count(*) AS n FROM command_tracker WHERE command_id = ANY($1) AND status IN ${TERMINAL_SQL}`,
        [ids],
      )
      .catch(() => [{ n: String(last) }]);
    const n = Number(rows[0].n);
    if (n === ids.length) return;
    if (n !== last) {
      last = n;
      since = Date.now();
    } else if (Date.now() - since > stallMs) return;
    await sleep(500);
  }
}

/**
 * Every accepted id against the database and the agents' execution logs. Lost: no row, never
 * terminal, or run without its result stored. Stranded: run, and its result reached the hub more
 * than `strandMs` after the agent finished it (it waited in a dead instance's broker session), or
 * the command ended `timeout` / with a late result although its agent ran it. Twice: run more than once.
 */
async function auditLedger(
  pgs: PrivatePostgres,
  db: string,
  ids: string[],
  executions: string[],
  strandMs: number,
  restartBeganAt: number,
): Promise<AuditFigures> {
  const runs = countBy(executions, (x) => x);
  const rows = await pgs.query<{
    command_id: string;
    command_type: string;
    status: string;
    late_result: boolean;
    has_result: boolean;
    wait_ms: number | null;
    end_ms: number | null;
    received_ms: number | null;
  }>(
    db,
    `SELECT t.command_id, t.command_type, t.status, t.late_result, (r.command_id IS NOT NULL) AS has_result,
       (extract(epoch FROM r.received_at) * 1000 - r.end_time)::float8 AS wait_ms,
       r.end_time::float8 AS end_ms, (extract(epoch FROM r.received_at) * 1000)::float8 AS received_ms
     FROM command_tracker t LEFT JOIN command_result r ON r.command_id = t.command_id
     WHERE t.command_id = ANY($1)`,
    [ids],
  );
  const byId = new Map(rows.map((r) => [r.command_id, r]));
  const a: AuditFigures = {
    accepted: ids.length,
    terminal: 0,
    executed: 0,
    stored: 0,
    lost: 0,
    stranded: 0,
    twice: 0,
    lostSamples: [],
    strandedSamples: [],
  };
  for (const id of ids) {
    const row = byId.get(id);
    // echo commands leave no execution line: their result row says they ran
    const ran = row?.command_type === 'host_exec' ? (runs[id] ?? 0) : row?.has_result ? 1 : 0;
    const terminal = row !== undefined && (TERMINAL as readonly string[]).includes(row.status);
    if (terminal) a.terminal++;
    if (ran > 0) a.executed++;
    if (ran > 0 && row?.has_result) a.stored++;
    if (ran > 1) a.twice++;
    if (!row || !terminal || (ran > 0 && !row.has_result)) {
      a.lost++;
      if (a.lostSamples.length < 5)
        a.lostSamples.push({ command_id: id, executions: ran, ...(row ?? { row: 'missing' }) });
    } else if (
      ran > 0 &&
      (row.late_result ||
        row.status === 'timeout' ||
        (row.wait_ms !== null && Number(row.wait_ms) > strandMs) ||
        waitedForRestart(row.end_ms, row.received_ms, restartBeganAt))
    ) {
      a.stranded++;
      if (a.strandedSamples.length < 5) a.strandedSamples.push(row);
    }
  }
  return a;
}

/**
 * A result its agent finished well before the killed instance began its restart, which reached
 * the hub only once the restart began: it waited for that instance (in its broker session), and
 * no survivor took it over. Independent of the time scale, unlike a bound on the wait.
 */
const RESTART_MARGIN_MS = 3_000;
function waitedForRestart(endMs: number | null, receivedMs: number | null, restartBeganAt: number): boolean {
  if (endMs === null || receivedMs === null || restartBeganAt === 0) return false;
  return Number(endMs) < restartBeganAt - RESTART_MARGIN_MS && Number(receivedMs) >= restartBeganAt;
}

function sendFigures(outcomes: Outcome[]): SendFigures {
  // a cut request is sent again to another instance: the send is counted once, by its last answer
  const answers = outcomes.filter((o) => o.code !== 'conn');
  const sync = answers.filter((o) => o.sync && o.code === '2xx').map((o) => o.ms);
  const other = countBy(
    answers.filter(
      (o) => o.code !== '2xx' && !o.code.startsWith('504') && !o.code.startsWith('5') && !isRefusedOnline(o),
    ),
    (o) => o.code,
  );
  return {
    sends: answers.length,
    ok: answers.filter((o) => o.code === '2xx').length,
    refusedOnline: answers.filter(isRefusedOnline).length,
    http504: answers.filter((o) => o.code.startsWith('504')).length,
    http5xx: answers.filter((o) => o.code.startsWith('5') && !o.code.startsWith('504')).length,
    other,
    syncP50Ms: pct(sync, 50),
    syncP99Ms: pct(sync, 99),
  };
}

const isRefusedOnline = (o: Outcome) => o.code === '409 CMD_ERR_PROJECT_OFFLINE' && o.projectConnected;

const fmt = (n: number | null, d = 1) => (n === null ? '–' : n.toFixed(d));
const dict = (r: Record<string, number>) =>
  Object.keys(r).length === 0
    ? 'none'
    : Object.entries(r)
        .map(([k, v]) => `${k} ×${v}`)
        .join(', ');

export function throughputLine(t: Throughput): string {
  const busy = Object.entries(t.cpuS)
    .map(([k, v]) => `${k} ${(v / t.durationS).toFixed(2)}`)
    .join(', ');
  const total = Object.values(t.cpuS).reduce((a, b) => a + b, 0) / t.durationS;
  return (
    `throughput with ${t.instances} instance${t.instances > 1 ? 's' : ''}: accepted ${t.acceptedPerS.toFixed(0)}/s, ` +
    `completed ${t.completedPerS.toFixed(0)}/s (${t.accepted} / ${t.completed} in ${t.durationS.toFixed(1)} s), ` +
    `refused ${dict(t.refused)}; cores used: ${busy} (sum ${total.toFixed(2)} of ${os.cpus().length})`
  );
}

/** One line per property (the issue's "done means"), each with its verdict. */
export function properties(f: ScaleFigures, opts: ScaleOptions): Property[] {
  const p = f.presence;
  const per = p.perInstance
    .map(
      (i) =>
        `${i.name} ${i.disagreed}/${i.samples} (online ${Number.isFinite(i.minOnline) ? i.minOnline : '–'}–${i.maxOnline})`,
    )
    .join(', ');
  const s = f.sends;
  const k = f.kill;
  const a = f.audit;
  const watchersOk = f.watchers.every((w) => w.seen === w.of && w.duplicates === 0 && w.outOfOrder === 0);
  const survivorErrors = Object.values(k.survivorErrors).reduce((x, y) => x + y, 0);
  const takeoverOk = k.inFlightTerminalMs !== null && k.inFlightTerminalMs <= opts.takeoverMs;
  const out: Property[] = [
    {
      name: 'presence',
      ok: p.instanceSamplesDisagreed === 0 && p.samples > 0,
      line:
        `presence: ${p.samples} samples, ${p.samplesDisagreed} with an instance disagreeing with the agents, ` +
        `${p.samplesSplit} with instances disagreeing with each other; ` +
        `instance-samples disagreeing ${p.instanceSamplesDisagreed}/${p.instanceSamples}: ${per}`,
    },
    {
      name: 're-register asks',
      ok: f.reregisterAsks === 0,
      line: `re-register asks: ${f.reregisterAsks} (agents' logs)`,
    },
    {
      name: 'sends',
      ok: s.refusedOnline === 0 && s.http504 === 0 && s.http5xx === 0,
      line:
        `sends: ${s.sends} answered, 2xx ${s.ok}, 409 for an online project ${s.refusedOnline}, 504 ${s.http504}, ` +
        `5xx ${s.http5xx}, other ${dict(s.other)}; sync 2xx p50 ${fmt(s.syncP50Ms, 0)} ms, p99 ${fmt(s.syncP99Ms, 0)} ms`,
    },
    {
      name: 'watchers',
      ok: watchersOk,
      line: `watchers: ${f.watchers
        .map(
          (w) =>
            `${w.name} ${w.seen}/${w.of}${w.failovers ? ` (moved ${w.failovers}×, ${w.reread} by re-read)` : ''}${w.duplicates ? ` dup ${w.duplicates}` : ''}${w.outOfOrder ? ` out-of-order ${w.outOfOrder}` : ''}`,
        )
        .join(', ')}; duplicates ${f.watchers.reduce((n, w) => n + w.duplicates, 0)}, out-of-order ${f.watchers.reduce(
        (n, w) => n + w.outOfOrder,
        0,
      )}`,
    },
    {
      name: 'kill',
      ok: a.lost === 0 && a.stranded === 0 && a.twice === 0 && survivorErrors === 0 && takeoverOk,
      line:
        `kill -9 ${k.victim}: ${k.inFlightAtKill} in flight, terminal after ` +
        `${k.inFlightTerminalMs === null ? 'never (within the run)' : `${(k.inFlightTerminalMs / 1000).toFixed(1)} s`} ` +
        `(bound ${(opts.takeoverMs / 1000).toFixed(0)} s; ${k.inFlightAtRestart} still open when the restart began; ${dict(k.inFlightOutcome)}); lost ${a.lost}, stranded ${a.stranded}, ` +
        `executed twice ${a.twice}; survivors' errors ${dict(k.survivorErrors)}; cut and retried elsewhere ${k.cutAndRetried}`,
    },
    {
      name: 'restart',
      ok: k.serves,
      line: `restart: ${k.victim} back in ${(k.restartMs / 1000).toFixed(1)} s; ${k.serves ? 'serves' : 'does NOT serve'} (${k.servesDetail})`,
    },
  ];
  return out;
}

export function totalsLine(f: ScaleFigures): string {
  const a = f.audit;
  const held = f.properties.filter((p) => p.ok).length;
  return (
    `total: ${held} of ${f.properties.length} properties hold; accepted ${a.accepted}, terminal ${a.terminal}, ` +
    `results stored ${a.stored} / executed ${a.executed}, lost ${a.lost}, stranded ${a.stranded}, executed twice ${a.twice}, ` +
    `duration ${(f.durationMs / 1000).toFixed(1)} s`
  );
}

/** The 1 vs N comparison: the ratio, and what bounded it. */
export function ratioLine(f: ScaleFigures): string | undefined {
  const [one, many] = f.throughput;
  if (!one || !many) return undefined;
  const r = (x: number, y: number) => (y > 0 ? (x / y).toFixed(2) : '–');
  const cores = os.cpus().length;
  const used = Object.values(many.cpuS).reduce((a, b) => a + b, 0) / many.durationS;
  const top = Object.entries(many.cpuS).sort((x, y) => y[1] - x[1])[0];
  return (
    `throughput ${many.instances} vs 1: accepted ×${r(many.acceptedPerS, one.acceptedPerS)}, completed ×${r(
      many.completedPerS,
      one.completedPerS,
    )}; with ${many.instances} the processes of the run used ${used.toFixed(2)} of ${cores} cores ` +
    `(busiest: ${top[0]} ${(top[1] / many.durationS).toFixed(2)}); load average ${os.loadavg()[0].toFixed(1)} (other work on the machine included)`
  );
}

export function scaleOptions(argv: string[], env: NodeJS.ProcessEnv): ScaleOptions {
  const { values } = parseArgs({
    args: argv,
    options: {
      instances: { type: 'string' },
      projects: { type: 'string' },
      commands: { type: 'string' },
      'throughput-s': { type: 'string' },
      'down-s': { type: 'string' },
      'log-dir': { type: 'string' },
      help: { type: 'boolean' },
    },
    strict: true,
  });
  if (values.help) {
    console.log(
      'npm run scale -- [--instances N] [--projects N] [--commands N] [--throughput-s S] [--down-s S] [--log-dir DIR]',
    );
    process.exit(0);
  }
  const num = (v: string | undefined, e: string | undefined, dflt: number, what: string, min = 1) => {
    const raw = v ?? e;
    if (raw === undefined || raw === '') return dflt;
    const n = Number(raw);
    if (!Number.isFinite(n) || n < min) throw new Error(`${what} must be a number ≥ ${min} (got ${raw})`);
    return n;
  };
  const instances = Math.floor(num(values.instances, env.SCALE_INSTANCES, 3, '--instances', 2));
  return {
    instances,
    projects: Math.floor(num(values.projects, env.SCALE_PROJECTS, 20, '--projects')),
    commands: Math.floor(num(values.commands, env.SCALE_COMMANDS, 3000, '--commands', 2)),
    throughputMs: num(values['throughput-s'], env.SCALE_THROUGHPUT_S, 20, '--throughput-s', 0) * 1000,
    downMs: num(values['down-s'], env.SCALE_DOWN_S, 15, '--down-s') * 1000,
    takeoverMs: 10_000,
    strandMs: 10_000,
    timeoutMs: 30_000,
    waitMs: 10_000,
    stallMs: 60_000,
    logDir: values['log-dir'] ?? env.SCALE_LOG_DIR ?? path.join(os.tmpdir(), 'gmq-scale-logs'),
    log: (line) => console.log(line),
  };
}

export function report(f: ScaleFigures, log: (line: string) => void): void {
  for (const t of f.throughput) log(throughputLine(t));
  const ratio = ratioLine(f);
  if (ratio) log(ratio);
  for (const p of f.properties) log(`${p.ok ? 'ok  ' : 'FAIL'} ${p.line}`);
  if (f.audit.lostSamples.length > 0) log(`  lost, e.g.: ${JSON.stringify(f.audit.lostSamples.slice(0, 2))}`);
  if (f.audit.strandedSamples.length > 0)
    log(`  stranded, e.g.: ${JSON.stringify(f.audit.strandedSamples.slice(0, 2))}`);
  for (const w of f.watchers.filter((x) => x.closeReason && !x.name.endsWith(f.kill.victim))) {
    log(`  ${w.name} ended early: ${w.closeReason.slice(0, 200)}`);
  }
  const back = f.watchers.find((w) => w.outOfOrderExample);
  if (back?.outOfOrderExample) {
    log(
      `  out of order, e.g. on ${back.name}: ${back.outOfOrderExample.command_id} ${back.outOfOrderExample.states.join(' → ')}`,
    );
  }
  for (const i of f.presence.perInstance) {
    if (i.example)
      log(`  ${i.name} disagreed, e.g.: missing ${i.example.missing.join(' ')} extra ${i.example.extra.join(' ')}`);
  }
  log(totalsLine(f));
  if (f.logs) log(`  logs and figures: ${f.logs}`);
}

async function main(): Promise<void> {
  const opts = scaleOptions(process.argv.slice(2), process.env);
  console.log(
    `scale: ${opts.instances} instances, ${opts.projects} projects, ${opts.commands} sends, ` +
      `throughput windows ${opts.throughputMs / 1000} s, killed instance down ${opts.downMs / 1000} s`,
  );
  const f = await runScale(opts);
  report(f, opts.log);
  if (f.properties.some((p) => !p.ok)) {
    console.log(
      `FAILED: ${f.properties
        .filter((p) => !p.ok)
        .map((p) => p.name)
        .join(', ')}`,
    );
    process.exitCode = 1;
  }
}

// run as the entry point only (scale.test.ts imports runScale)
if (process.argv[1] && import.meta.url === new URL(`file://${process.argv[1]}`).href) {
  main().catch((err: unknown) => {
    console.error(err);
    process.exit(1);
  });
}
