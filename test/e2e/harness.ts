import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { MqttClient } from 'mqtt';
import { prepareSharedPgliteTemplate, tempPgliteConfig, withPgSchema } from '../helpers/db.js';
import { connectClient, forgetSessions, MOSQUITTO_URL } from '../helpers/mqtt.js';
import { freePort, HostProcess, type LogLine } from '../helpers/process.js';
import { scaled } from '../helpers/wait.js';

export type BackendName = 'embedded' | 'server';
export const BACKENDS: readonly BackendName[] = ['embedded', 'server'];
export const BACKEND_TITLE: Record<BackendName, string> = {
  embedded: 'embedded broker + PGlite',
  server: 'Mosquitto + PostgreSQL server',
};

/** The bound of every wait that involves several processes (generous: 2 shared cores). */
export const T = 20_000;
/** A process start: node itself, every module, a database; on a loaded machine that takes a while. */
const START_MS = 60_000;
export const API = '/api/exchange-hub';
const POLL_MS = 50;

/** Short, but not so short that a busy machine trips them. */
export const HUB_TIMING = {
  heartbeat_interval_s: 1,
  heartbeat_timeout_ms: 3_000,
  retry_base_ms: 400,
  retry_max_ms: 3_200,
} as const;

// biome-ignore lint/suspicious/noExplicitAny: JSON answers read field by field in assertions
export type Json = any;

export const uniqueId = (what: string): string => `e2e-${what}-${randomBytes(4).toString('hex')}`;

function tempDir(what: string): string {
  return fs.mkdtempSync(path.join(os.tmpdir(), `gmq-e2e-${what}-`));
}

// ─── the hub ────────────────────────────────────────────────────────────────────────────────

export interface Provisioned {
  project_id: string;
  secret: string;
  mqtt_username: string;
  mqtt_password: string;
}

export interface HubOptions {
  /** Extra settings merged into the module blocks. */
  status?: Record<string, unknown>;
  command?: Record<string, unknown>;
  /** Settings of the jobs module; the hub runs it only when this is given. */
  jobs?: Record<string, unknown>;
  /** `server` backend on another broker than the machine's Mosquitto (a private one), with the bridge's login. */
  broker?: { url: string; username: string; password: string };
  /** More module blocks (audit, grpc …), or settings replacing a block's (web with tokens). */
  modules?: Record<string, Record<string, unknown>>;
  /** The bearer token `api()` sends (when web has tokens). */
  token?: string;
}

/**
 * One hub (status, command, mqtt-bridge, web, and on `embedded` the broker) that can be started,
 * stopped, killed and started again on the same database, broker port and MQTT client id.
 */
export class Hub {
  /** Every process this hub ran, in order; `proc` is the last. */
  readonly runs: HostProcess[] = [];
  base = '';
  /** The bearer token `api()` sends (set it when the test configures web tokens). */
  token: string | null | undefined;

  private constructor(
    readonly backend: BackendName,
    readonly dir: string,
    readonly file: string,
    /** Where agents connect (the embedded broker, or Mosquitto). */
    readonly brokerUrl: string,
    /** The bridge's fixed MQTT client id (its persistent session). */
    readonly clientId: string,
    /** A credential that may publish and subscribe anywhere on the broker (the test plays an insider). */
    readonly superuser: { username?: string; password?: string },
    private readonly dropDb: () => Promise<void>,
  ) {}

  static async create(backend: BackendName, opts: HubOptions = {}): Promise<Hub> {
    const clientId = uniqueId('hub');
    const modules: Record<string, unknown> = {};
    let database: Record<string, unknown>;
    let dropDb: () => Promise<void>;
    let brokerUrl: string;
    let superuser: { username?: string; password?: string } = {};
    if (backend === 'embedded') {
      await prepareSharedPgliteTemplate();
      const db = tempPgliteConfig();
      database = { ...db.config };
      dropDb = async () => db.cleanup();
      const port = await freePort();
      superuser = { username: 'gmq-hub', password: randomBytes(12).toString('hex') };
      modules.broker = { port, host: '127.0.0.1', hub_password: superuser.password };
      brokerUrl = `mqtt://127.0.0.1:${port}`;
    } else {
      const s = await withPgSchema();
      database = { ...s.config };
      dropDb = s.drop;
      brokerUrl = opts.broker?.url ?? MOSQUITTO_URL;
      if (opts.broker) superuser = { username: opts.broker.username, password: opts.broker.password };
    }
    Object.assign(modules, {
      status: {
        heartbeat_interval_s: HUB_TIMING.heartbeat_interval_s,
        heartbeat_timeout_ms: HUB_TIMING.heartbeat_timeout_ms,
        sweep_interval_ms: 200,
        flush_interval_ms: 200,
        ...opts.status,
      },
      command: {
        retry_base_ms: HUB_TIMING.retry_base_ms,
        retry_max_ms: HUB_TIMING.retry_max_ms,
        relay_interval_ms: 100,
        sweep_interval_ms: 200,
        ...opts.command,
      },
      'mqtt-bridge': {
        url: brokerUrl,
        client_id: clientId,
        reconnect_min_ms: 100,
        reconnect_max_ms: 500,
        ...(opts.broker ? { username: opts.broker.username, password: opts.broker.password } : {}),
      },
      web: { port: 0 },
      ...(opts.jobs ? { jobs: opts.jobs } : {}),
    });
    for (const [name, block] of Object.entries(opts.modules ?? {})) {
      modules[name] = { ...(modules[name] as Record<string, unknown> | undefined), ...block };
    }
    const dir = tempDir('hub');
    const file = path.join(dir, 'config.yml');
    // YAML is a superset of JSON
    // the module start timeout (15 s) is a quiet-machine bound: PGlite's first open alone can take
    // longer on a loaded machine
    const host = { start_timeout_ms: scaled(15_000) };
    fs.writeFileSync(file, JSON.stringify({ host, databases: { default: database }, modules }, null, 2));
    const hub = new Hub(backend, dir, file, brokerUrl, clientId, superuser, dropDb);
    hub.token = opts.token;
    return hub;
  }

  get proc(): HostProcess {
    const p = this.runs.at(-1);
    if (!p) throw new Error('hub not started');
    return p;
  }

  get running(): boolean {
    const p = this.runs.at(-1);
    return p !== undefined && p.proc.exitCode === null && p.proc.signalCode === null;
  }

  /** Starts a new hub process (env on top of this process's) and waits until its REST API listens. */
  async start(env: NodeJS.ProcessEnv = {}): Promise<void> {
    const p = new HostProcess(this.file, env);
    this.runs.push(p);
    await p.started(START_MS);
    const web = await p.waitFor((l) => l.msg === 'web listening', START_MS, 'web listening');
    this.base = String(web.url);
  }

  /** Graceful stop (SIGTERM); asserts nothing, returns how it exited. */
  stop(): Promise<{ code: number | null; signal: NodeJS.Signals | null }> {
    return this.running ? this.proc.stop() : Promise.resolve({ code: null, signal: null });
  }

  kill9(): Promise<{ code: number | null; signal: NodeJS.Signals | null }> {
    return this.proc.kill9();
  }

  async api(method: 'GET' | 'POST', p: string, body?: unknown): Promise<{ status: number; json: Json }> {
    const headers: Record<string, string> = body === undefined ? {} : { 'content-type': 'application/json' };
    if (this.token) headers.authorization = `Bearer ${this.token}`;
    const res = await fetch(this.base + API + p, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    const text = await res.text();
    return { status: res.status, json: text ? JSON.parse(text) : null };
  }

  /** One series of GET /metrics, labels included (`name{k="v"}`); 0 when it is not printed (a series at 0 is not). */
  async metric(series: string): Promise<number> {
    const text = await (await fetch(`${this.base}/metrics`)).text();
    const line = text.split('\n').find((l) => l.startsWith(`${series} `));
    return line ? Number(line.slice(series.length + 1)) : 0;
  }

  /** POST /projects: a new project and its secret (shown this once). */
  async provision(what = 'p'): Promise<Provisioned> {
    const project_id = uniqueId(what);
    const r = await this.api('POST', '/projects', { project_id, name: `e2e ${what}` });
    if (r.status !== 201) throw new Error(`provisioning failed: ${r.status} ${JSON.stringify(r.json)}`);
    return r.json as Provisioned;
  }

  /** Waits until GET /project/:id/status shows `state`. */
  async waitState(projectId: string, state: string, ms = T): Promise<Json> {
    let last: Json;
    await this.polling(
      async () => {
        last = (await this.api('GET', `/project/${projectId}/status`)).json;
        return last?.state === state;
      },
      ms,
      () => `project ${projectId} ${state} (last: ${JSON.stringify(last)})`,
    );
    return last;
  }

  /**
   * After this hub restarted: waits until `projectId` is online in the new process's own view. On
   * the embedded broker the agent lost its connection with the hub, so a project loaded as online
   * from the database goes through a new handshake first: wait for that to be accepted.
   */
  async waitBack(projectId: string, ms = T): Promise<Json> {
    if (this.backend === 'embedded') {
      await this.proc.waitFor(
        (l) => l.msg === 'registration accepted' && l.project_id === projectId,
        ms,
        `the registration of ${projectId} by the new hub process`,
      );
    }
    return this.waitState(projectId, 'online', ms);
  }

  /** Waits until GET /command/:id satisfies `pred` (default: status completed). */
  async waitCommand(commandId: string, pred: (c: Json) => boolean = (c) => c.status === 'completed', ms = T) {
    let last: Json;
    await this.polling(
      async () => {
        const r = await this.api('GET', `/command/${commandId}`);
        last = r.json;
        return r.status === 200 && pred(last);
      },
      ms,
      () => `command ${commandId} (last: ${JSON.stringify(last)})`,
    );
    return last;
  }

  /**
   * Asks again every POLL_MS (a REST call is a bus request and a query: every 5 ms would load the
   * hub under test) until `cond` holds; a failure says what was seen last and what the hub logged.
   */
  private async polling(cond: () => Promise<boolean>, quietMs: number, what: () => string): Promise<void> {
    const ms = scaled(quietMs);
    const deadline = Date.now() + ms;
    while (!(await cond())) {
      if (Date.now() > deadline) {
        const log = this.running ? this.proc.tail(25) : '(down)';
        throw new Error(`timed out after ${ms} ms waiting for ${what()}\nhub log:\n${log}`);
      }
      await new Promise((r) => setTimeout(r, POLL_MS));
    }
  }

  /** An agent of `project` (not started) connecting to this hub's broker, or to `url` (a proxy in front of it). */
  newAgent(project: Provisioned, opts: { url?: string; settings?: Record<string, unknown> } = {}): Agent {
    return new Agent({ url: opts.url ?? this.brokerUrl, project, settings: opts.settings }, this.brokerUrl);
  }

  /** An MQTT client that may see and publish everything (for observing uplinks, forging downlinks). */
  observer(): Promise<MqttClient> {
    return connectClient(this.brokerUrl, { clientId: uniqueId('observer'), clean: true, ...this.superuser });
  }

  async dispose(): Promise<void> {
    await this.stop();
    await this.dropDb().catch(() => undefined);
    if (this.backend === 'server' && this.brokerUrl === MOSQUITTO_URL)
      await forgetSessions(this.brokerUrl, [this.clientId]);
    fs.rmSync(this.dir, { recursive: true, force: true });
  }
}

// ─── the agent ──────────────────────────────────────────────────────────────────────────────

export interface AgentOptions {
  /** Broker URL to connect to (the hub's broker, or a proxy in front of it). */
  url: string;
  project: Provisioned;
  /** Extra agent settings. */
  settings?: Record<string, unknown>;
}

/**
 * A field agent: the same program with only the `agent` module. Its queue directory and MQTT
 * client id stay the same across restarts, like a real installation's.
 */
export class Agent {
  readonly runs: HostProcess[] = [];
  readonly clientId = uniqueId('agent');
  readonly dir = tempDir('agent');
  readonly file = path.join(this.dir, 'config.yml');
  readonly queueDir = path.join(this.dir, 'queue');

  constructor(
    private readonly opts: AgentOptions,
    private readonly brokerUrl: string,
  ) {
    const agent = {
      url: opts.url,
      project_id: opts.project.project_id,
      secret: opts.project.secret,
      node_name: 'e2e-agent',
      client_id: this.clientId,
      reconnect_min_ms: 100,
      reconnect_max_ms: 400,
      register_retry_ms: 1_000,
      stop_drain_ms: 1_000,
      queue: { dir: this.queueDir, retry_delay_ms: 200 },
      handlers: { host_exec: { enabled: true, allow: ['/bin/cat'] } },
      ...opts.settings,
    };
    const host = { start_timeout_ms: scaled(15_000) };
    fs.writeFileSync(this.file, JSON.stringify({ host, modules: { agent } }, null, 2));
  }

  get projectId(): string {
    return this.opts.project.project_id;
  }

  get proc(): HostProcess {
    const p = this.runs.at(-1);
    if (!p) throw new Error('agent not started');
    return p;
  }

  get running(): boolean {
    const p = this.runs.at(-1);
    return p !== undefined && p.proc.exitCode === null && p.proc.signalCode === null;
  }

  /** Starts a new agent process and waits until it has started (not until it registered). */
  async start(): Promise<HostProcess> {
    const p = new HostProcess(this.file);
    this.runs.push(p);
    await p.started(START_MS);
    return p;
  }

  /** Waits until this run's registration was accepted by a hub. */
  registered(ms = T): Promise<LogLine> {
    return this.proc.waitFor((l) => l.msg === 'agent registered', ms, `agent ${this.projectId} registered`);
  }

  /** Waits for a log line of this run. */
  waitLog(msg: string, fields: Record<string, unknown> = {}, ms = T): Promise<LogLine> {
    return this.proc.waitFor(
      (l) => l.msg === msg && Object.entries(fields).every(([k, v]) => l[k] === v),
      ms,
      `agent log "${msg}" ${JSON.stringify(fields)}`,
    );
  }

  /** Log lines of every run of this agent with `msg` (and `command_id` when given). */
  logs(msg: string, commandId?: string): LogLine[] {
    return this.runs.flatMap((r) =>
      r.lines.filter((l) => l.msg === msg && (commandId === undefined || l.command_id === commandId)),
    );
  }

  stop(): Promise<{ code: number | null; signal: NodeJS.Signals | null }> {
    return this.running ? this.proc.stop() : Promise.resolve({ code: null, signal: null });
  }

  kill9(): Promise<{ code: number | null; signal: NodeJS.Signals | null }> {
    return this.proc.kill9();
  }

  /** Files waiting in the disk retry queue (one JSON file per uplink). */
  queuedOnDisk(): string[] {
    if (!fs.existsSync(this.queueDir)) return [];
    const out: string[] = [];
    for (const sub of fs.readdirSync(this.queueDir)) {
      const d = path.join(this.queueDir, sub);
      if (!fs.statSync(d).isDirectory()) continue;
      for (const f of fs.readdirSync(d)) if (f.endsWith('.json') && !f.startsWith('.')) out.push(path.join(d, f));
    }
    return out;
  }

  async dispose(): Promise<void> {
    if (this.running) {
      // a stopped (SIGSTOP) agent cannot handle SIGTERM
      this.proc.proc.kill('SIGCONT');
      await this.stop();
    }
    if (this.brokerUrl === MOSQUITTO_URL) await forgetSessions(this.brokerUrl, [this.clientId]);
    fs.rmSync(this.dir, { recursive: true, force: true });
  }
}

/** A scratch directory removed by the returned function. */
export function scratchDir(what: string): { dir: string; remove(): void } {
  const dir = tempDir(what);
  return { dir, remove: () => fs.rmSync(dir, { recursive: true, force: true }) };
}
