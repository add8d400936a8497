/**
 * The load generator of the scale run: async and sync sends spread round-robin over the REST
 * endpoints of the instances that serve, as a load balancer would spread them. Every send
 * carries an Idempotency-Key; a request cut by a dead instance (connection reset) is sent again
 * with the same key to the next instance, as a careful caller does, so every command the hub
 * accepted is in the ledger exactly once.
 *
 * Commands outstanding (accepted, not terminal) per project are bounded, read from the database,
 * so a command's timeout measures loss rather than queueing.
 */
import { randomUUID } from 'node:crypto';
import type { PrivatePostgres } from '../chaos/servers.js';
import { sleep } from '../chaos/servers.js';
import { OutstandingWindow } from '../chaos/window.js';
import type { HubInstance } from './cluster.js';

export const API = '/api/exchange-hub';
export { TERMINAL, TERMINAL_SQL } from '../chaos/window.js';

export interface LoadSpec {
  /** Label of the sends (and of the ledger entries) of this run. */
  phase: string;
  /** Stop after this many sends were answered ... */
  sends?: number;
  /** ... or after this long. */
  durationMs?: number;
  /** Whatever `sends` says, go on until this holds (the kill and restart are done). */
  until?: () => boolean;
  /** `sleep`: host_exec /bin/sleep 20-200 ms (each execution logged by the agent); `echo`: no process. */
  kind: 'sleep' | 'echo';
  /** Every n-th send is a sync send (0: none). */
  syncEvery: number;
  /** Commands outstanding per project at most. */
  window: number;
  /** Requests in flight at once. */
  senders: number;
  /** The command's execution timeout. */
  timeoutMs: number;
  /** A sync send's wait. */
  waitMs: number;
}

export interface LedgerEntry {
  project: string;
  phase: string;
  sync: boolean;
  /** The instance that answered 2xx. */
  via: string;
  at: number;
}

/** One answer (or failure) of one send attempt. */
export interface Outcome {
  at: number;
  phase: string;
  instance: string;
  /** `2xx`, `409 CMD_ERR_PROJECT_OFFLINE`, `504 CMD_ERR_TIMEOUT`, `503 …`, `conn` (no answer). */
  code: string;
  sync: boolean;
  project: string;
  /** For a 409: whether the project's agent was connected when the send went out. */
  projectConnected: boolean;
  ms: number;
}

export class ScaleLoad {
  readonly ledger = new Map<string, LedgerEntry>();
  readonly outcomes: Outcome[] = [];
  /** The label outcomes are recorded under (the run moves it: before the kill, instance down …). */
  phase = '';
  private answered = 0;
  private waiters: Array<{ n: number; resolve: () => void }> = [];
  private rr = 0;
  private target = 0;
  private readonly window: OutstandingWindow;

  constructor(
    private readonly projects: string[],
    /** The instances a caller may reach now (the killed one leaves this list at once). */
    private readonly serving: () => HubInstance[],
    private readonly connected: () => Set<string>,
    pgs: PrivatePostgres,
    db: string,
  ) {
    this.window = new OutstandingWindow(pgs, db);
  }

  /** Resolves once `n` sends of the current run were answered (or the run ended). */
  reached(n: number): Promise<void> {
    if (this.answered >= n) return Promise.resolve();
    return new Promise((resolve) => this.waiters.push({ n, resolve }));
  }

  async run(spec: LoadSpec): Promise<void> {
    this.phase = spec.phase;
    this.answered = 0;
    let claimed = 0;
    let stopped = false;
    const deadline = spec.durationMs ? Date.now() + spec.durationMs : Number.POSITIVE_INFINITY;
    const more = () =>
      Date.now() < deadline &&
      (spec.sends === undefined || claimed < spec.sends || (spec.until ? !spec.until() : false));
    const poller = (async () => {
      while (!stopped) {
        await this.window.poll();
        await sleep(150);
      }
    })();
    const sender = async () => {
      while (more()) {
        const project = this.pick(spec.window);
        if (!project) {
          await sleep(10);
          continue;
        }
        const n = ++claimed;
        const sync = spec.syncEvery > 0 && n % spec.syncEvery === 0;
        this.window.sending(project);
        try {
          await this.sendOne(spec, project, sync);
        } finally {
          this.window.done(project);
        }
        this.answered++;
        this.wake();
      }
    };
    try {
      await Promise.all(Array.from({ length: spec.senders }, () => sender()));
    } finally {
      stopped = true;
      this.answered = Number.POSITIVE_INFINITY;
      this.wake();
      await poller;
    }
  }

  private wake(): void {
    const due = this.waiters.filter((w) => w.n <= this.answered);
    this.waiters = this.waiters.filter((w) => w.n > this.answered);
    for (const w of due) w.resolve();
  }

  private outstanding(p: string): number {
    return this.window.outstanding(p);
  }

  private pick(window: number): string | undefined {
    for (let k = 0; k < this.projects.length; k++) {
      const p = this.projects[(this.rr + k) % this.projects.length];
      if (this.outstanding(p) < window) {
        this.rr = (this.rr + k + 1) % this.projects.length;
        return p;
      }
    }
    return undefined;
  }

  private nextInstance(): HubInstance | undefined {
    const list = this.serving();
    if (list.length === 0) return undefined;
    return list[this.target++ % list.length];
  }

  private async sendOne(spec: LoadSpec, project: string, sync: boolean): Promise<void> {
    const key = randomUUID();
    const payload =
      spec.kind === 'sleep'
        ? {
            command_type: 'host_exec',
            payload: { command: '/bin/sleep', args: [(0.02 + Math.random() * 0.18).toFixed(3)] },
          }
        : { command_type: 'echo', payload: { n: this.ledger.size } };
    const body = JSON.stringify({
      project_id: project,
      ...payload,
      timeout_ms: spec.timeoutMs,
      ...(sync ? { wait_ms: spec.waitMs } : {}),
    });
    // a dead instance's callers try the next one with the same key (at most 10 attempts)
    for (let attempt = 0; attempt < 10; attempt++) {
      const hub = this.nextInstance();
      if (!hub) {
        await sleep(200);
        continue;
      }
      const t0 = Date.now();
      const wasConnected = this.connected().has(project);
      const base: Omit<Outcome, 'code' | 'ms'> = {
        at: t0,
        phase: this.phase,
        instance: hub.name,
        sync,
        project,
        projectConnected: wasConnected,
      };
      let res: Response;
      try {
        res = await fetch(`${hub.base}${API}/command/${sync ? 'sync' : 'send'}`, {
          method: 'POST',
          headers: { 'content-type': 'application/json', 'idempotency-key': key },
          body,
          signal: AbortSignal.timeout(spec.waitMs + 30_000),
        });
      } catch {
        this.outcomes.push({ ...base, phase: this.phase, code: 'conn', ms: Date.now() - t0 });
        await sleep(100);
        continue;
      }
      const text = await res.text().catch(() => '');
      let parsed: { command_id?: string; error?: { code?: string } } = {};
      try {
        parsed = JSON.parse(text);
      } catch {
        // not JSON
      }
      const ok = res.status >= 200 && res.status < 300;
      const code = ok ? '2xx' : `${res.status} ${parsed.error?.code ?? ''}`.trim();
      this.outcomes.push({ ...base, phase: this.phase, code, ms: Date.now() - t0 });
      const id = parsed.command_id;
      // a 504 names its command too: it was accepted, only the wait ran out
      if ((ok || res.status === 504) && typeof id === 'string' && !this.ledger.has(id)) {
        this.ledger.set(id, { project, phase: spec.phase, sync, via: hub.name, at: t0 });
        this.window.accepted(project);
      }
      return;
    }
  }
}
