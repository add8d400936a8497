/**
 * Several hub instances acting as one hub (docs/architecture.md#several-instances): each one a `node dist/bootstrap/main.js`
 * process with a generated config — driver pg on one shared database, the external broker (no
 * `broker` module: what `HUB_EMBEDDED_BROKER=false` gives), its own bridge `client_id`, one
 * `mqtt-bridge.shared_group` for all, its own web and gRPC ports.
 */
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { freePort, HostProcess } from '../helpers/process.js';
import { scaled } from '../helpers/wait.js';

/** A process start on two shared cores under load can take minutes (the chaos suite's bound). */
const START_MS = 240_000;

/**
 * Presence timings of every instance: heartbeats every second, offline after 10 s of silence. Not
 * stretched by GMQ_TEST_TIME_SCALE, on purpose: an instance that keeps presence of its own sees
 * only its share (1/N) of a project's heartbeats, and the suite must see the gaps in that share
 * go over the timeout (with 3 instances a 10 s gap comes every minute or so per project), while an
 * agent on a busy machine (load average 40 here) is not silent for 10 s. A 5 s timeout made
 * starved agents fall silent even with one instance; a stretched one (20 s) hid the split.
 */
export const STATUS_SETTINGS = {
  heartbeat_interval_s: 1,
  heartbeat_timeout_ms: 10_000,
  sweep_interval_ms: 200,
  flush_interval_ms: 200,
};

export interface InstanceOptions {
  index: number;
  dbUrl: string;
  brokerUrl: string;
  /** `mqtt-bridge.shared_group`, the same for every instance. */
  group: string;
}

/** One hub instance; restartable with the same config (same ports, same client id). */
export class HubInstance {
  readonly runs: HostProcess[] = [];
  readonly dir = fs.mkdtempSync(path.join(os.tmpdir(), 'gmq-scale-hub-'));
  readonly file = path.join(this.dir, 'config.yml');
  /** Distinct per instance and fixed across its restarts: the broker keeps its session under it. */
  readonly clientId: string;
  base = '';

  private constructor(
    readonly o: InstanceOptions,
    public webPort: number,
    public grpcPort: number,
  ) {
    this.clientId = `scale-hub-${o.index}-${randomBytes(3).toString('hex')}`;
  }

  static async create(o: InstanceOptions): Promise<HubInstance> {
    const hub = new HubInstance(o, await freePort(), await freePort());
    hub.writeConfig();
    return hub;
  }

  get index(): number {
    return this.o.index;
  }

  get name(): string {
    return `hub-${this.o.index}`;
  }

  get grpcAddress(): string {
    return `127.0.0.1:${this.grpcPort}`;
  }

  private writeConfig(): void {
    const config = {
      host: { start_timeout_ms: scaled(15_000) },
      databases: { default: { driver: 'pg', url: this.o.dbUrl } },
      modules: {
        status: STATUS_SETTINGS,
        command: { retry_base_ms: 400, retry_max_ms: 3_200, relay_interval_ms: 100, sweep_interval_ms: 200 },
        'mqtt-bridge': {
          url: this.o.brokerUrl,
          client_id: this.clientId,
          shared_group: this.o.group,
          reconnect_min_ms: 100,
          reconnect_max_ms: 500,
        },
        web: { port: this.webPort },
        grpc: { port: this.grpcPort },
      },
    };
    fs.writeFileSync(this.file, JSON.stringify(config, null, 2));
  }

  get proc(): HostProcess {
    const p = this.runs.at(-1);
    if (!p) throw new Error(`${this.name} not started`);
    return p;
  }

  get running(): boolean {
    const p = this.runs.at(-1);
    return p !== undefined && p.proc.exitCode === null && p.proc.signalCode === null;
  }

  get pid(): number | undefined {
    return this.running ? this.proc.proc.pid : undefined;
  }

  /**
   * Starts a process; resolves once REST and gRPC listen. The ports were free when chosen, but on a
   * machine where other suites pick free ports too one may be taken by the time the hub binds it:
   * then the hub refuses to start (HOST_ERR_PORT_IN_USE) and is started again on fresh ports, as an
   * operator would move it.
   */
  async start(): Promise<void> {
    for (let attempt = 1; ; attempt++) {
      const p = new HostProcess(this.file, { HUB_EMBEDDED_BROKER: 'false' });
      this.runs.push(p);
      try {
        const [web] = await Promise.all([
          p.waitFor((l) => l.msg === 'web listening', START_MS, `${this.name} web listening`),
          p.waitFor((l) => l.msg === 'gRPC server listening', START_MS, `${this.name} gRPC listening`),
        ]);
        this.base = String(web.url);
        return;
      } catch (err) {
        const taken = p.lines.some((l) => (l.err as { code?: string } | undefined)?.code === 'HOST_ERR_PORT_IN_USE');
        if (!taken || attempt >= 3) throw err;
        await p.exited;
        this.runs.pop();
        this.webPort = await freePort();
        this.grpcPort = await freePort();
        this.writeConfig();
      }
    }
  }

  /**
   * Resolves once GET /readyz answers 200 (database and bridge up), as a load balancer waits
   * before it sends callers; rejects after `quietMs` (scaled).
   */
  async ready(quietMs = 60_000): Promise<void> {
    const deadline = Date.now() + scaled(quietMs);
    let last = 'no answer';
    while (Date.now() < deadline) {
      try {
        const res = await fetch(`${this.base}/readyz`, { signal: AbortSignal.timeout(5_000) });
        if (res.status === 200) return;
        last = `${res.status} ${await res.text().catch(() => '')}`;
      } catch (err) {
        last = (err as Error).message;
      }
      await new Promise((r) => setTimeout(r, 200));
    }
    throw new Error(`${this.name} not ready after ${scaled(quietMs)} ms: /readyz ${last.slice(0, 300)}`);
  }

  kill9() {
    return this.proc.kill9();
  }

  stop() {
    return this.running ? this.proc.stop(30_000) : Promise.resolve({ code: null, signal: null });
  }

  /** Log lines of every run with this message. */
  count(msg: string): number {
    return this.runs.reduce((n, r) => n + r.lines.filter((l) => l.msg === msg).length, 0);
  }

  saveLogs(dir: string): void {
    this.runs.forEach((r, i) => {
      fs.writeFileSync(
        path.join(dir, `${this.name}-run${i}.log`),
        `${[...r.lines.map((l) => JSON.stringify(l)), ...r.stderr].join('\n')}\n`,
      );
    });
  }

  async dispose(): Promise<void> {
    await this.stop();
    fs.rmSync(this.dir, { recursive: true, force: true });
  }
}
