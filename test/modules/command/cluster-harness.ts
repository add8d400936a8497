/**
 * Several real hubs as one (issue 11): hub processes (`node dist/bootstrap/main.js`) on ONE
 * PostgreSQL schema and one private Mosquitto, each bridge with its own client id in one shared
 * subscription group, and agents of the project's own agent module as processes. Each hub has
 * its own REST port; `metric()` reads its /metrics.
 */
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Agent, type Json, type Provisioned } from '../../e2e/harness.js';
import { withPgSchema } from '../../helpers/db.js';
import { type PrivateMosquitto, startPrivateMosquitto } from '../../helpers/mosquitto.js';
import { HostProcess } from '../../helpers/process.js';

export const API = '/api/exchange-hub';
/** A hub process start on two shared, busy cores. */
const START_MS = 120_000;
const HUB_USER = 'gmq-hub';
const HUB_PASSWORD = randomBytes(12).toString('hex');

export class ClusterHub {
  readonly runs: HostProcess[] = [];
  base = '';

  constructor(
    readonly name: string,
    readonly file: string,
  ) {}

  get proc(): HostProcess {
    const p = this.runs.at(-1);
    if (!p) throw new Error(`${this.name} not started`);
    return p;
  }

  get running(): boolean {
    const p = this.runs.at(-1);
    return p !== undefined && p.proc.exitCode === null && p.proc.signalCode === null;
  }

  async start(): Promise<void> {
    const p = new HostProcess(this.file, { HUB_EMBEDDED_BROKER: 'false' });
    this.runs.push(p);
    const web = await p.waitFor((l) => l.msg === 'web listening', START_MS, `${this.name} web listening`);
    this.base = String(web.url);
  }

  kill9() {
    return this.proc.kill9();
  }

  stop() {
    return this.running ? this.proc.stop(30_000) : Promise.resolve({ code: null, signal: null });
  }

  async api(method: 'GET' | 'POST', p: string, body?: unknown): Promise<{ status: number; json: Json }> {
    const res = await fetch(this.base + API + p, {
      method,
      headers: body === undefined ? {} : { 'content-type': 'application/json' },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    const text = await res.text();
    return { status: res.status, json: text ? JSON.parse(text) : null };
  }

  /** A sample of /metrics: `name{labels}` as written there (labels in the order prom-client writes them). */
  async metric(series: string): Promise<number> {
    const text = await (await fetch(`${this.base}/metrics`)).text();
    const line = text.split('\n').find((l) => l.startsWith(`${series} `));
    return line ? Number(line.slice(series.length + 1)) : 0;
  }

  /** Lines of every run of this hub with `msg`. */
  count(msg: string): number {
    return this.runs.reduce((n, r) => n + r.lines.filter((l) => l.msg === msg).length, 0);
  }
}

export interface ClusterOptions {
  hubs: number;
  /** Extra settings per module block, for every hub. */
  command?: Record<string, unknown>;
  bridge?: Record<string, unknown>;
  web?: Record<string, unknown>;
}

export class Cluster {
  readonly hubs: ClusterHub[] = [];
  readonly agents: Agent[] = [];

  private constructor(
    readonly mosquitto: PrivateMosquitto,
    private readonly dropSchema: () => Promise<void>,
    private readonly dir: string,
  ) {}

  static async create(opts: ClusterOptions): Promise<Cluster> {
    const mosquitto = await startPrivateMosquitto({ [HUB_USER]: HUB_PASSWORD });
    const db = await withPgSchema();
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'gmq-cluster-'));
    const c = new Cluster(mosquitto, db.drop, dir);
    const group = `g${randomBytes(3).toString('hex')}`;
    for (let i = 0; i < opts.hubs; i++) {
      const name = `hub-${String.fromCharCode(97 + i)}`;
      const modules = {
        status: {
          heartbeat_interval_s: 1,
          // presence is per instance until issue 11 item 1 lands: long enough that a heartbeat
          // round-robin over the instances keeps a project online on each of them
          heartbeat_timeout_ms: 15_000,
          sweep_interval_ms: 200,
          flush_interval_ms: 200,
        },
        command: {
          retry_base_ms: 400,
          retry_max_ms: 3_200,
          relay_interval_ms: 100,
          sweep_interval_ms: 200,
          ...opts.command,
        },
        'mqtt-bridge': {
          url: mosquitto.tcpUrl,
          client_id: `cluster-${group}-${name}`,
          username: HUB_USER,
          password: HUB_PASSWORD,
          shared_group: group,
          reconnect_min_ms: 100,
          reconnect_max_ms: 500,
          ...opts.bridge,
        },
        web: { port: 0, ...opts.web },
      };
      const file = path.join(dir, `${name}.yml`);
      fs.writeFileSync(file, JSON.stringify({ databases: { default: db.config }, modules }, null, 2));
      c.hubs.push(new ClusterHub(name, file));
    }
    return c;
  }

  /** A project provisioned through `hub`, its MQTT login known to the private Mosquitto. */
  async provision(hub: ClusterHub, what: string): Promise<Provisioned> {
    const project_id = `cl-${what}-${randomBytes(3).toString('hex')}`;
    const r = await hub.api('POST', '/projects', { project_id, name: what });
    if (r.status !== 201) throw new Error(`provisioning: ${r.status} ${JSON.stringify(r.json)}`);
    const p = r.json as Provisioned;
    await this.mosquitto.addUser(p.mqtt_username, p.mqtt_password);
    return p;
  }

  /** An agent (started, registered) that may run /bin/sleep and /bin/echo. */
  async agent(project: Provisioned): Promise<Agent> {
    const a = new Agent(
      {
        url: this.mosquitto.tcpUrl,
        project,
        settings: { handlers: { echo: true, host_exec: { enabled: true, allow: ['/bin/sleep'], timeout_ms: 60_000 } } },
      },
      this.mosquitto.tcpUrl,
    );
    this.agents.push(a);
    await a.start();
    await a.registered();
    return a;
  }

  async dispose(): Promise<void> {
    await Promise.allSettled(this.agents.map((a) => a.dispose()));
    await Promise.allSettled(this.hubs.map((h) => h.stop()));
    await this.mosquitto.stop();
    await this.dropSchema().catch(() => undefined);
    fs.rmSync(this.dir, { recursive: true, force: true });
  }
}
