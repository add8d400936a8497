/**
 * The system under test, as separate processes: one hub (`node dist/bootstrap/main.js` with a
 * generated config: PostgreSQL, an external broker or its own embedded one, REST on a free port) and N agents (the
 * project's own agent module, one project each) whose handler sleeps as long as each command
 * asks (`/bin/sleep`, allow-listed in host_exec) and whose log says which command ran.
 */
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { createInterface } from 'node:readline';
import { freePort, HostProcess } from '../helpers/process.js';

export const API = '/api/exchange-hub';
/** A process start on two shared cores under load (other test suites running) can take minutes. */
const START_MS = 240_000;
export const SLEEP = '/bin/sleep';

export interface Project {
  project_id: string;
  secret: string;
}

/** Settings of the hub's modules that a scenario may change (config-edit) on top of the defaults. */
export type HubModules = Record<string, Record<string, unknown>>;

export class ChaosHub {
  readonly runs: HostProcess[] = [];
  readonly dir = fs.mkdtempSync(path.join(os.tmpdir(), 'gmq-chaos-hub-'));
  readonly file = path.join(this.dir, 'config.yml');
  readonly clientId = `chaos-hub-${randomBytes(4).toString('hex')}`;
  base = '';

  private constructor(
    /** A PostgreSQL URL, or the whole `databases.default` block (the embedded server). */
    readonly db: string | Record<string, unknown>,
    readonly brokerUrl: string,
    readonly webPort: number,
    /** The port of the hub's own embedded broker, when it runs one (the agents then connect to it). */
    readonly embeddedBrokerPort?: number,
  ) {}

  /** A hub on an external broker at `brokerUrl`, or, with `broker: 'embedded'`, on its own embedded broker (see `brokerUrl`). */
  static async create(
    db: string | Record<string, unknown>,
    brokerUrl: string,
    opts: { broker?: 'embedded' } = {},
  ): Promise<ChaosHub> {
    const port = opts.broker === 'embedded' ? await freePort() : undefined;
    const url = port === undefined ? brokerUrl : `mqtt://127.0.0.1:${port}`;
    const hub = new ChaosHub(db, url, await freePort(), port);
    hub.writeConfig({});
    return hub;
  }

  /** The config file: defaults close to the e2e harness, `over` merged per module. */
  writeConfig(over: HubModules): void {
    const modules: HubModules = {
      status: {
        heartbeat_interval_s: 1,
        heartbeat_timeout_ms: 3_000,
        sweep_interval_ms: 200,
        flush_interval_ms: 200,
        ...over.status,
      },
      command: {
        retry_base_ms: 400,
        retry_max_ms: 3_200,
        relay_interval_ms: 100,
        sweep_interval_ms: 200,
        ...over.command,
      },
      'mqtt-bridge': {
        url: this.brokerUrl,
        client_id: this.clientId,
        reconnect_min_ms: 100,
        reconnect_max_ms: 500,
        ...over['mqtt-bridge'],
      },
      web: { port: this.webPort, ...over.web },
      // the embedded broker (aedes in the hub's process); the bridge takes its credential from it
      ...(this.embeddedBrokerPort === undefined
        ? {}
        : { broker: { port: this.embeddedBrokerPort, host: '127.0.0.1', ...over.broker } }),
    };
    const database = typeof this.db === 'string' ? { driver: 'pg', url: this.db } : this.db;
    const text = JSON.stringify({ databases: { default: database }, modules }, null, 2);
    // written beside and renamed into place: the hub's watcher never reads half a file
    const tmp = `${this.file}.tmp`;
    fs.writeFileSync(tmp, text);
    fs.renameSync(tmp, this.file);
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

  async start(): Promise<void> {
    const p = new HostProcess(this.file, { HUB_EMBEDDED_BROKER: 'false' });
    this.runs.push(p);
    const web = await p.waitFor((l) => l.msg === 'web listening', START_MS, 'web listening');
    this.base = String(web.url);
  }

  kill9() {
    return this.proc.kill9();
  }

  stop() {
    return this.running ? this.proc.stop(30_000) : Promise.resolve({ code: null, signal: null });
  }

  /** Lines of every run with this message (for the figures: "command uplink dropped" …). */
  count(msg: string): number {
    return this.runs.reduce((n, r) => n + r.lines.filter((l) => l.msg === msg).length, 0);
  }

  /** Restarts one of the hub's modules through the REST API (200 once restarted; 202 for the web module itself). */
  async restartModule(name: string): Promise<void> {
    const res = await fetch(`${this.base}${API}/modules/${name}/restart`, { method: 'POST' });
    if (res.status !== 200 && res.status !== 202)
      throw new Error(`restarting ${name}: ${res.status} ${await res.text()}`);
  }

  async provision(name: string): Promise<Project> {
    const res = await fetch(`${this.base}${API}/projects`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ project_id: name, name }),
    });
    const body = (await res.json()) as Project;
    if (res.status !== 201) throw new Error(`provisioning ${name}: ${res.status} ${JSON.stringify(body)}`);
    return body;
  }

  /** Keeps every run's log in the scenario's directory (kept when a scenario fails). */
  saveLogs(dir: string): void {
    this.runs.forEach((r, i) => {
      fs.writeFileSync(
        path.join(dir, `hub-${i}.log`),
        `${[...r.lines.map((l) => JSON.stringify(l)), ...r.stderr].join('\n')}\n`,
      );
    });
  }

  async dispose(): Promise<void> {
    await this.stop();
    fs.rmSync(this.dir, { recursive: true, force: true });
  }
}

/**
 * One field agent of one project. Its queue directory and MQTT client id stay across restarts.
 * Every `host_exec started` line it prints (the command id of an execution) is appended to
 * `executions.log`, which outlives a kill -9 of the agent.
 */
export class ChaosAgent {
  readonly runs: HostProcess[] = [];
  readonly dir = fs.mkdtempSync(path.join(os.tmpdir(), 'gmq-chaos-agent-'));
  readonly file = path.join(this.dir, 'config.yml');
  readonly queueDir = path.join(this.dir, 'queue');
  readonly execLog = path.join(this.dir, 'executions.log');

  constructor(
    readonly project: Project,
    brokerUrl: string,
  ) {
    const agent = {
      url: brokerUrl,
      project_id: project.project_id,
      secret: project.secret,
      node_name: 'chaos',
      client_id: `chaos-agent-${project.project_id}`,
      heartbeat_interval_s: 1,
      reconnect_min_ms: 100,
      reconnect_max_ms: 1_000,
      register_retry_ms: 1_000,
      queue: { dir: this.queueDir, retry_delay_ms: 500 },
      handlers: { echo: true, host_exec: { enabled: true, allow: [SLEEP], timeout_ms: 60_000 } },
    };
    fs.writeFileSync(this.file, JSON.stringify({ databases: {}, modules: { agent } }, null, 2));
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

  /** Starts a process; resolves once its registration was accepted. */
  async start(): Promise<void> {
    const p = new HostProcess(this.file);
    this.runs.push(p);
    // a second reader of stdout: each execution is on disk as soon as the agent printed it
    const out = fs.createWriteStream(this.execLog, { flags: 'a' });
    createInterface({ input: p.proc.stdout! }).on('line', (raw) => {
      if (!raw.includes('"host_exec started"')) return;
      try {
        const l = JSON.parse(raw) as { msg?: string; command_id?: unknown };
        if (l.msg === 'host_exec started' && typeof l.command_id === 'string') out.write(`${l.command_id}\n`);
      } catch {
        // not a log line
      }
    });
    p.proc.once('exit', () => setTimeout(() => out.end(), 500));
    await p.waitFor((l) => l.msg === 'agent registered', START_MS, `agent ${this.project.project_id} registered`);
  }

  kill9() {
    this.proc.proc.kill('SIGCONT');
    return this.proc.kill9();
  }

  signal(sig: NodeJS.Signals): void {
    this.proc.proc.kill(sig);
  }

  /** Uplinks waiting in the agent's disk queue (one JSON file each). */
  queuedOnDisk(): number {
    if (!fs.existsSync(this.queueDir)) return 0;
    let n = 0;
    for (const sub of fs.readdirSync(this.queueDir)) {
      const d = path.join(this.queueDir, sub);
      if (!fs.statSync(d).isDirectory()) continue;
      n += fs.readdirSync(d).filter((f) => f.endsWith('.json') && !f.startsWith('.')).length;
    }
    return n;
  }

  /** Command ids this agent started, one per execution (every run). */
  executions(): string[] {
    if (!fs.existsSync(this.execLog)) return [];
    return fs.readFileSync(this.execLog, 'utf8').split('\n').filter(Boolean);
  }

  saveLogs(dir: string, i: number): void {
    this.runs.forEach((r, k) => {
      fs.writeFileSync(
        path.join(dir, `agent-${i}-${k}.log`),
        `${[...r.lines.map((l) => JSON.stringify(l)), ...r.stderr].join('\n')}\n`,
      );
    });
  }

  async dispose(): Promise<void> {
    if (this.running) {
      this.proc.proc.kill('SIGCONT');
      await this.proc.stop(10_000);
    }
    fs.rmSync(this.dir, { recursive: true, force: true });
  }
}
