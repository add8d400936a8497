/**
 * What the rollout tests run: hub instances as processes (driver pg on one shared schema, the
 * machine's Mosquitto, one bridge shared_group, the jobs module on) and a fleet of simulated
 * agents in one child process (fleet.ts).
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import type { Json } from '../../e2e/harness.js';
import { forgetSessions, MOSQUITTO_URL } from '../../helpers/mqtt.js';
import { freePort, HostProcess } from '../../helpers/process.js';
import { scaled } from '../../helpers/wait.js';
import type { FleetSpec } from './fleet.js';

export const API = '/api/exchange-hub';
const START_MS = 120_000;

/** Asks again every 100 ms (each ask is a REST call) until `cond` holds; the bound is scaled. */
export async function poll(cond: () => boolean | Promise<boolean>, quietMs: number, what: () => string): Promise<void> {
  const deadline = Date.now() + scaled(quietMs);
  while (!(await cond())) {
    if (Date.now() > deadline) throw new Error(`timed out after ${scaled(quietMs)} ms waiting for ${what()}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

export class JobsHub {
  readonly runs: HostProcess[] = [];
  readonly dir = fs.mkdtempSync(path.join(os.tmpdir(), 'gmq-jobs-hub-'));
  readonly file = path.join(this.dir, 'config.yml');
  readonly clientId = `jobs-hub-${randomBytes(4).toString('hex')}`;
  base = '';

  constructor(
    readonly name: string,
    private readonly db: Record<string, unknown>,
    private readonly group: string,
    private readonly jobs: Record<string, unknown>,
  ) {}

  async start(): Promise<void> {
    const config = {
      host: { start_timeout_ms: scaled(15_000) },
      databases: { default: this.db },
      modules: {
        // no heartbeats from the simulated fleet: presence comes from the registrations alone
        status: { heartbeat_interval_s: 600, heartbeat_timeout_ms: 3_600_000, flush_interval_ms: 100 },
        command: { retry_base_ms: 1_000, retry_max_ms: 4_000, relay_interval_ms: 100, sweep_interval_ms: 200 },
        'mqtt-bridge': {
          url: MOSQUITTO_URL,
          client_id: this.clientId,
          shared_group: this.group,
          reconnect_min_ms: 100,
          reconnect_max_ms: 500,
        },
        web: { port: await freePort() },
        jobs: this.jobs,
      },
    };
    fs.writeFileSync(this.file, JSON.stringify(config, null, 2));
    const p = new HostProcess(this.file, { HUB_EMBEDDED_BROKER: 'false' });
    this.runs.push(p);
    const web = await p.waitFor((l) => l.msg === 'web listening', START_MS, `${this.name} web listening`);
    this.base = String(web.url);
  }

  get proc(): HostProcess {
    return this.runs.at(-1)!;
  }

  get running(): boolean {
    const p = this.runs.at(-1);
    return p !== undefined && p.proc.exitCode === null && p.proc.signalCode === null;
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

  /** Log lines of every run of this instance that say `msg` about `jobId`. */
  logs(msg: string, jobId: string): Json[] {
    return this.runs.flatMap((r) => r.lines.filter((l) => l.msg === msg && l.job_id === jobId));
  }

  async dispose(): Promise<void> {
    if (this.running) await this.proc.stop();
    await forgetSessions(MOSQUITTO_URL, [this.clientId]).catch(() => undefined);
    fs.rmSync(this.dir, { recursive: true, force: true });
  }
}

/** The fleet child process and what it reported. */
export class Fleet {
  readonly proc: ChildProcess;
  readonly executed = new Map<string, string>();
  stats = { max_running: 0, running: 0, executed: 0, duplicates: 0 };
  registered = false;
  readonly stderr: string[] = [];
  private readonly specFile: string;
  readonly clientId = `jobs-fleet-${randomBytes(4).toString('hex')}`;

  constructor(projects: FleetSpec['projects'], execMs: number) {
    const spec: FleetSpec = { url: MOSQUITTO_URL, client_id: this.clientId, projects, exec_ms: execMs };
    this.specFile = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'gmq-fleet-')), 'spec.json');
    fs.writeFileSync(this.specFile, JSON.stringify(spec));
    const script = path.join(path.dirname(fileURLToPath(import.meta.url)), 'fleet.js');
    this.proc = spawn(process.execPath, [script, this.specFile], { stdio: ['ignore', 'pipe', 'pipe'] });
    createInterface({ input: this.proc.stdout! }).on('line', (raw) => {
      const m = JSON.parse(raw) as Json;
      if (m.ev === 'registered') this.registered = true;
      else if (m.ev === 'exec') this.executed.set(m.command_id, m.project_id);
      else if (m.ev === 'stats') this.stats = m;
    });
    createInterface({ input: this.proc.stderr! }).on('line', (l) => this.stderr.push(l));
  }

  async dispose(): Promise<void> {
    if (this.proc.exitCode === null) {
      const gone = new Promise((r) => this.proc.once('exit', r));
      this.proc.kill('SIGTERM');
      await gone;
    }
    await forgetSessions(MOSQUITTO_URL, [this.clientId]).catch(() => undefined);
    fs.rmSync(path.dirname(this.specFile), { recursive: true, force: true });
  }
}

/** Provisions `n` projects through `hub` (metadata `fleet`), `parallel` at a time. */
export async function provision(hub: JobsHub, n: number, fleetTag: string): Promise<FleetSpec['projects']> {
  const out: FleetSpec['projects'] = [];
  for (let i = 0; i < n; i += 50) {
    const batch = await Promise.all(
      Array.from({ length: Math.min(50, n - i) }, (_, j) =>
        hub.api('POST', '/projects', { project_id: `${fleetTag}-${i + j}`, metadata: { fleet: fleetTag } }),
      ),
    );
    for (const r of batch) {
      if (r.status !== 201) throw new Error(`provisioning failed: ${r.status} ${JSON.stringify(r.json)}`);
      out.push({ project_id: r.json.project_id, secret: r.json.secret });
    }
  }
  return out;
}
