/**
 * What the interface suites (ws-fanout, grpc-stream) share: the settings read from the
 * environment, the result event the command module publishes, the client processes and the
 * credit-based driver that keeps a server saturated without overrunning its slow-client limits.
 *
 * The clients live in a child process (one per server under test), so their parsing and socket
 * reads never share the event loop of the server being measured; the hub and its raw baseline
 * are measured the same way, alternately, in the same run.
 */
import { type ChildProcess, fork } from 'node:child_process';
import { monitorEventLoopDelay, performance } from 'node:perf_hooks';
import type { CommandEvent, CommandResultView, CommandView } from '../modules/command/contract/topics.js';
import { machine, median, type SuiteResult } from './harness.js';

/** An integer setting from the environment (`BENCH_*`), or its default. */
export function envInt(name: string, def: number): number {
  const v = process.env[name];
  if (v === undefined || v === '') return def;
  const n = Number(v);
  if (!Number.isFinite(n) || n < 0) throw new Error(`${name}: expected a number, got ${JSON.stringify(v)}`);
  return Math.floor(n);
}

/** Timing and load settings every interface suite takes; each env variable overrides its default. */
export interface LoadSettings {
  runs: number;
  warmupMs: number;
  windowMs: number;
  /** Events the driver may publish ahead of the slowest client. */
  credit: number;
  /** Size of the result's `output` text, in bytes. */
  outputBytes: number;
}

export function loadSettings(prefix: string, defaults: LoadSettings): LoadSettings {
  return {
    runs: Math.max(1, envInt(`${prefix}_RUNS`, envInt('BENCH_RUNS', defaults.runs))),
    warmupMs: envInt(`${prefix}_WARMUP_MS`, envInt('BENCH_WARMUP_MS', defaults.warmupMs)),
    windowMs: Math.max(100, envInt(`${prefix}_WINDOW_MS`, envInt('BENCH_WINDOW_MS', defaults.windowMs))),
    credit: Math.max(1, envInt(`${prefix}_CREDIT`, defaults.credit)),
    outputBytes: envInt('BENCH_OUTPUT_BYTES', defaults.outputBytes),
  };
}

export const PROJECTS = 16;

/**
 * Event `i` as the command module publishes it when a result lands (modules/command/events.ts
 * `Events.result`): the command's view after completion and the agent's result. A fresh object
 * per event, with its own command id, as the command module builds from its row.
 */
export function resultEvent(i: number, output: string): { topic: string; event: CommandEvent } {
  const projectId = `bench-project-${i % PROJECTS}`;
  const commandId = `00000000-0000-4000-8000-${i.toString(16).padStart(12, '0')}`;
  const now = Date.now();
  const iso = new Date(now).toISOString();
  const command: CommandView = {
    command_id: commandId,
    project_id: projectId,
    command_type: 'host_exec',
    module: 'bench',
    operator_id: 'bench-operator',
    status: 'completed',
    is_sync: false,
    offline_policy: 'fail',
    attempts: 1,
    created_at: iso,
    sent_at: iso,
    acked_at: iso,
    started_at: iso,
    completed_at: iso,
    timeout_at: new Date(now + 30_000).toISOString(),
    schedule_at: null,
    late_result: false,
    error: null,
    job_id: null,
  };
  const result: CommandResultView = {
    status: 'success',
    exit_code: 0,
    output,
    error: '',
    start_time: now - 12,
    end_time: now - 2,
    duration: 10,
    received_at: iso,
  };
  return {
    topic: `command/event/${projectId}/${commandId}`,
    event: {
      kind: 'result',
      command,
      result,
      payload: {},
      timings: { queue_ms: 1, delivery_ms: 2, execution_ms: 10, total_ms: 14 },
      at: now,
    },
  };
}

export function outputText(bytes: number): string {
  const line = 'line of command output 0123456789 abcdefghijklmnopqrstuvwxyz\n';
  return line.repeat(Math.ceil(bytes / line.length)).slice(0, bytes);
}

/** Parent → child and child → parent messages of the client processes. */
export type ToClients = { op: 'measure'; ms: number } | { op: 'close' };
export type FromClients =
  | { op: 'ready'; clients: number; ms: number }
  | { op: 'p'; min: number; total: number }
  | { op: 'measured'; deliveries: number; ms: number; cpuMs: number; minClient: number; maxClient: number }
  | { op: 'failed'; error: string };

export interface WindowResult {
  /** Deliveries counted at the clients per second over the window. */
  rate: number;
  /** Events per second (deliveries / clients). */
  eventsPerSec: number;
  /** CPU time of the server process and of the client process over the window, as a share of one core. */
  serverCpu: number;
  clientCpu: number;
  /** The slowest and fastest client's deliveries in the window (fairness between clients). */
  minClient: number;
  maxClient: number;
  /** The server process's event-loop delay over the window, p99 and max, in ms. */
  lagP99: number;
  lagMax: number;
}

/** One child process holding some of the clients; it reports its slowest client's count. */
class ClientProcess {
  min = 0;
  onProgress: (() => void) | null = null;
  private waiting: ((m: FromClients) => void) | null = null;
  exited: Error | null = null;

  constructor(
    private readonly child: ChildProcess,
    readonly clients: number,
  ) {
    child.on('message', (m: FromClients) => {
      if (m.op === 'p') {
        this.min = m.min;
        this.onProgress?.();
      } else this.waiting?.(m);
    });
    child.on('exit', (code, signal) => {
      this.exited = new Error(`client process exited (${code ?? signal})`);
      this.waiting?.({ op: 'failed', error: this.exited.message });
      this.onProgress?.();
    });
  }

  next(timeoutMs: number, what: string): Promise<FromClients> {
    return new Promise((resolve, reject) => {
      if (this.exited) return reject(this.exited);
      const t = setTimeout(() => {
        this.waiting = null;
        reject(new Error(`client process: no answer within ${timeoutMs} ms (${what})`));
      }, timeoutMs);
      this.waiting = (m) => {
        clearTimeout(t);
        this.waiting = null;
        resolve(m);
      };
    });
  }

  send(m: ToClients): void {
    if (this.exited) throw this.exited;
    this.child.send(m);
  }

  async close(): Promise<void> {
    if (this.exited) return;
    const gone = new Promise<void>((r) => this.child.once('exit', () => r()));
    this.send({ op: 'close' });
    const t = setTimeout(() => this.child.kill('SIGKILL'), 10_000);
    await gone;
    clearTimeout(t);
  }

  kill(): void {
    if (!this.exited) this.child.kill('SIGKILL');
  }
}

async function expect<T extends FromClients['op']>(
  p: ClientProcess,
  op: T,
  timeoutMs: number,
  what: string,
): Promise<Extract<FromClients, { op: T }>> {
  const m = await p.next(timeoutMs, what);
  if (m.op !== op) throw new Error(`client process: ${m.op === 'failed' ? m.error : `unexpected ${m.op}`}`);
  return m as Extract<FromClients, { op: T }>;
}

/**
 * The clients of one server, spread over `procs` child processes (on a machine with cores to
 * spare, more than one keeps the clients from being the bound). Counts deliveries over a window
 * on request and drives the server with a bounded credit.
 */
export class ClientPool {
  private constructor(
    private readonly procs: ClientProcess[],
    readonly clients: number,
  ) {}

  /**
   * Forks `script` (a compiled bench/*-clients.js) `procs` times, each with its share of
   * `settings.clients`, and waits until every client is ready.
   */
  static async start(
    script: URL,
    settings: Record<string, unknown> & { clients: number },
    procs: number,
    timeoutMs = 60_000,
  ): Promise<ClientPool> {
    const n = Math.max(1, Math.min(procs, settings.clients));
    const list: ClientProcess[] = [];
    for (let k = 0; k < n; k++) {
      const share = Math.floor(settings.clients / n) + (k < settings.clients % n ? 1 : 0);
      const child = fork(script, [JSON.stringify({ ...settings, clients: share })], {
        execArgv: process.env.BENCH_CLIENT_PROF ? ['--cpu-prof', '--cpu-prof-dir=bench/results/prof'] : [],
        stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
      });
      list.push(new ClientProcess(child, share));
    }
    try {
      await Promise.all(list.map((p) => expect(p, 'ready', timeoutMs, 'clients connected')));
    } catch (err) {
      for (const p of list) p.kill();
      throw err;
    }
    return new ClientPool(list, settings.clients);
  }

  /** Events every client has received. */
  private get min(): number {
    let m = Number.POSITIVE_INFINITY;
    for (const p of this.procs) if (p.min < m) m = p.min;
    return m;
  }

  private get exited(): Error | null {
    return this.procs.find((p) => p.exited)?.exited ?? null;
  }

  /**
   * Keeps the server saturated for a warm-up and a measured window: `publish(i)` is called so
   * that at most `credit` events are ahead of the slowest client (a bounded backlog, so no
   * client is cut for slowness), then lets the backlog drain before returning.
   */
  async drive(
    publish: (i: number) => unknown,
    opts: { credit: number; warmupMs: number; windowMs: number },
  ): Promise<WindowResult> {
    let published = this.min;
    let busy = false;
    let stop = false;
    const topUp = async () => {
      if (busy || stop) return;
      busy = true;
      try {
        while (!stop && published < this.min + opts.credit) {
          const r = publish(published++);
          if (r instanceof Promise) await r;
        }
      } finally {
        busy = false;
      }
    };
    for (const p of this.procs) p.onProgress = () => void topUp();
    void topUp();
    await new Promise((r) => setTimeout(r, opts.warmupMs));
    const lag = monitorEventLoopDelay({ resolution: 5 });
    lag.enable();
    const cpu0 = process.cpuUsage();
    const t0 = performance.now();
    for (const p of this.procs) p.send({ op: 'measure', ms: opts.windowMs });
    const ms = await Promise.all(this.procs.map((p) => expect(p, 'measured', opts.windowMs + 30_000, 'measurement')));
    const serverMs = performance.now() - t0;
    const cpu = process.cpuUsage(cpu0);
    lag.disable();
    stop = true;
    // let what is still queued reach the clients, so it does not load the next measurement
    const deadline = Date.now() + 30_000;
    while (this.min < published && Date.now() < deadline && !this.exited) {
      await new Promise((r) => setTimeout(r, 10));
    }
    for (const p of this.procs) p.onProgress = null;
    // each process measured its own window of the same length; their rates add up
    const rate = ms.reduce((sum, m) => sum + (m.deliveries / m.ms) * 1000, 0);
    return {
      rate,
      eventsPerSec: rate / this.clients,
      serverCpu: (cpu.user + cpu.system) / 1000 / serverMs,
      clientCpu: ms.reduce((sum, m) => sum + m.cpuMs / m.ms, 0),
      minClient: Math.min(...ms.map((m) => m.minClient)),
      maxClient: Math.max(...ms.map((m) => m.maxClient)),
      lagP99: lag.percentile(99) / 1e6,
      lagMax: lag.max / 1e6,
    };
  }

  async close(): Promise<void> {
    await Promise.allSettled(this.procs.map((p) => p.close()));
  }
}

/** Client processes per server by default: the cores left after the server's, at most 4. */
export function defaultClientProcs(cores: number): number {
  return Math.max(1, Math.min(4, cores - 1));
}

/**
 * The child side: `counts[i]` per client, reports of the slowest count every `reportMs`, and
 * the window measurement. `setup` opens the connections and resolves when they all receive.
 */
export async function runClientProcess(
  setup: (counts: Uint32Array, bump: (i: number) => void) => Promise<() => Promise<void> | void>,
  clients: number,
  reportMs = 5,
): Promise<void> {
  const counts = new Uint32Array(clients);
  let total = 0;
  const bump = (i: number) => {
    counts[i]++;
    total++;
  };
  const send = (m: FromClients) => process.send?.(m);
  let teardown: () => Promise<void> | void;
  const t0 = performance.now();
  try {
    teardown = await setup(counts, bump);
  } catch (err) {
    send({ op: 'failed', error: (err as Error).message });
    process.exit(1);
  }
  send({ op: 'ready', clients, ms: performance.now() - t0 });
  let lastMin = -1;
  let lastTotal = -1;
  const report = setInterval(() => {
    if (total === lastTotal) return;
    let min = counts[0];
    for (let i = 1; i < counts.length; i++) if (counts[i] < min) min = counts[i];
    lastTotal = total;
    if (min !== lastMin) {
      lastMin = min;
      send({ op: 'p', min, total });
    }
  }, reportMs);
  process.on('message', async (m: ToClients) => {
    if (m.op === 'measure') {
      const start = counts.slice();
      const c0 = total;
      const cpu0 = process.cpuUsage();
      const w0 = performance.now();
      setTimeout(() => {
        const ms = performance.now() - w0;
        const cpu = process.cpuUsage(cpu0);
        let minClient = Number.POSITIVE_INFINITY;
        let maxClient = 0;
        for (let i = 0; i < counts.length; i++) {
          const d = counts[i] - start[i];
          if (d < minClient) minClient = d;
          if (d > maxClient) maxClient = d;
        }
        send({
          op: 'measured',
          deliveries: total - c0,
          ms,
          cpuMs: (cpu.user + cpu.system) / 1000,
          minClient,
          maxClient,
        });
      }, m.ms);
    } else if (m.op === 'close') {
      clearInterval(report);
      await teardown();
      process.exit(0);
    }
  });
}

/** Runs `tasks` with at most `limit` at a time (opening 1 000 connections at once overflows the accept backlog). */
export async function limited<T>(count: number, limit: number, task: (i: number) => Promise<T>): Promise<T[]> {
  const out: T[] = new Array(count);
  let next = 0;
  const worker = async () => {
    while (next < count) {
      const i = next++;
      out[i] = await task(i);
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, count) }, worker));
  return out;
}

/** `12,345/s (server 97%, clients 99%)`: one window's rate and the CPU each side used. */
export function describeRun(x: WindowResult): string {
  const pct = (v: number) => `${Math.round(v * 100)}%`;
  return `${Math.round(x.rate).toLocaleString('en-US')}/s (server ${pct(x.serverCpu)}, clients ${pct(x.clientCpu)}, loop lag p99 ${x.lagP99.toFixed(0)} ms)`;
}

/** Which sides to run: BENCH_SIDES=hub or =raw runs one alone (for profiling); default both. */
export function sides(): { hub: boolean; raw: boolean } {
  const v = (process.env.BENCH_SIDES ?? 'hub,raw').split(',').map((x) => x.trim());
  return { hub: v.includes('hub'), raw: v.includes('raw') };
}

/**
 * The suite's table: the hub's deliveries/s against the raw baseline's (goal ≥ 0.7×), events/s,
 * the server process's CPU time per delivery (the figure a busy machine disturbs least), and the
 * hub against a stricter raw ceiling (information, no goal).
 */
export function summarise(a: {
  suite: string;
  what: string;
  rawName: string;
  hubRuns: WindowResult[];
  rawRuns: WindowResult[];
  ceiling: { name: string; runs: WindowResult[] };
  settings: LoadSettings;
  notes: string[];
}): SuiteResult {
  const med = (xs: WindowResult[], f: (x: WindowResult) => number) => (xs.length ? median(xs.map(f)) : Number.NaN);
  const rate = (xs: WindowResult[]) => med(xs, (x) => x.rate);
  const usPer = (xs: WindowResult[]) => med(xs, (x) => (x.serverCpu / x.rate) * 1e6);
  const hubRate = rate(a.hubRuns);
  const rawRate = rate(a.rawRuns);
  const ceilRate = rate(a.ceiling.runs);
  const ratio = hubRate / rawRate;
  const hubUs = usPer(a.hubRuns);
  const rawUs = usPer(a.rawRuns);
  const ceilUs = usPer(a.ceiling.runs);
  const runs = (xs: WindowResult[]) => xs.map(describeRun).join('; ');
  const spread = (xs: WindowResult[]) => xs.map((x) => `${x.minClient}-${x.maxClient}`).join(', ');
  const s = a.settings;
  return {
    suite: a.suite,
    machine: machine(),
    rows: [
      {
        metric: a.what,
        value: hubRate,
        unit: 'deliveries/s',
        baseline: rawRate,
        ratio,
        goal: '>= 0.7x',
        met: Number.isFinite(ratio) ? ratio >= 0.7 : undefined,
      },
      { metric: 'hub events/s (each to every client)', value: med(a.hubRuns, (x) => x.eventsPerSec), unit: 'events/s' },
      { metric: `${a.rawName} events/s`, value: med(a.rawRuns, (x) => x.eventsPerSec), unit: 'events/s' },
      { metric: 'server CPU per delivery', value: hubUs, unit: 'us', baseline: rawUs, ratio: rawUs / hubUs },
      {
        metric: `hub vs ${a.ceiling.name}`,
        value: hubRate,
        unit: 'deliveries/s',
        baseline: ceilRate,
        ratio: hubRate / ceilRate,
      },
      {
        metric: `server CPU per delivery vs ${a.ceiling.name}`,
        value: hubUs,
        unit: 'us',
        baseline: ceilUs,
        ratio: ceilUs / hubUs,
      },
    ],
    notes: [
      `median of ${s.runs} runs (raw, hub, ceiling in turn); each: ${s.warmupMs} ms warm-up, ${s.windowMs} ms counted at the clients; at most ${s.credit} events ahead of the slowest client`,
      ...a.notes,
      `per run (deliveries/s, server and clients CPU as shares of one core, server event-loop lag p99), hub: ${runs(a.hubRuns)}`,
      `per run, ${a.rawName}: ${runs(a.rawRuns)}`,
      `per run, ${a.ceiling.name}: ${runs(a.ceiling.runs)}`,
      'a process near 100% of a core bounds the rate; clients near 100% mean the clients, not the server, are the bound',
      `deliveries per client in a window (slowest-fastest), hub: ${spread(a.hubRuns)}; raw: ${spread(a.rawRuns)}`,
    ],
  };
}
