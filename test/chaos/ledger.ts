/**
 * The ledger method. Every command the hub answered 2xx goes into the ledger; each agent writes
 * the id of every execution to its own file; at the end every ledger id is audited in the
 * database: terminal, its result stored whenever an agent ran it, and run at most once.
 *
 * The load keeps a bounded number of commands outstanding per project (so the agents' queues
 * stay short and a command's timeout measures loss, not queueing) and answers "accepted N yet?"
 * so a scenario can strike at a given point of the run.
 */
import type { Queryable } from './servers.js';
import { sleep } from './servers.js';
import { OutstandingWindow, TERMINAL, TERMINAL_SQL } from './window.js';

export { TERMINAL } from './window.js';

export interface LoadOptions {
  /** Commands to have accepted (2xx) in all. */
  commands: number;
  /** Each command sleeps a uniformly drawn time in this range (ms). */
  sleepMs: readonly [number, number];
  /** Commands outstanding (sent, not terminal) per project at most. */
  window: number;
  /** The hub's execution timeout for each command. */
  timeoutMs: number;
  /** Requests in flight to the hub at once. */
  senders: number;
}

export interface Figures {
  scenario: string;
  accepted: number;
  terminal: number;
  executed: number;
  stored: number;
  lost: number;
  twice: number;
  http5xx: number;
  /** Answers other than 2xx and 5xx (409 offline …), and connection errors (hub down). */
  http4xx: number;
  connErrors: number;
  durationMs: number;
  /** Scenario-specific facts (kills, outage length, disk queue …). */
  notes: Record<string, unknown>;
  /** A few of the lost ids with what the database says of them. */
  lostSamples: unknown[];
  /** Commands that ended without any agent running them, by final status and error (a fault's price, not a loss). */
  notRun: Record<string, number>;
}

export class Load {
  /** command_id → project, for every 2xx. */
  readonly ledger = new Map<string, string>();
  http5xx = 0;
  http4xx = 0;
  connErrors = 0;
  readonly codes = new Map<string, number>();
  private claimed = 0;
  private readonly window: OutstandingWindow;
  private waiters: Array<{ n: number; resolve: () => void }> = [];
  private rr = 0;
  private stopped = false;

  constructor(
    private readonly opts: LoadOptions,
    private readonly projects: string[],
    private readonly base: () => string,
    private readonly pgs: Queryable,
    private readonly db: string,
  ) {
    this.window = new OutstandingWindow(pgs, db);
  }

  get accepted(): number {
    return this.ledger.size;
  }

  /** Resolves once `n` commands were accepted (or the load ended). */
  reached(n: number): Promise<void> {
    if (this.accepted >= n || this.stopped) return Promise.resolve();
    return new Promise((resolve) => this.waiters.push({ n, resolve }));
  }

  /** Sends until `commands` were accepted. */
  async run(): Promise<void> {
    const poller = this.poll();
    try {
      await Promise.all(Array.from({ length: this.opts.senders }, () => this.sender()));
    } finally {
      this.stopped = true;
      for (const w of this.waiters) w.resolve();
      this.waiters = [];
      await poller;
    }
  }

  private outstanding(p: string): number {
    return this.window.outstanding(p);
  }

  private pick(): string | undefined {
    for (let k = 0; k < this.projects.length; k++) {
      const p = this.projects[(this.rr + k) % this.projects.length];
      if (this.outstanding(p) < this.opts.window) {
        this.rr = (this.rr + k + 1) % this.projects.length;
        return p;
      }
    }
    return undefined;
  }

  private async sender(): Promise<void> {
    while (this.claimed < this.opts.commands) {
      const project = this.pick();
      if (!project) {
        await sleep(20);
        continue;
      }
      this.claimed++;
      this.window.sending(project);
      let ok = false;
      try {
        ok = await this.sendOne(project);
      } finally {
        this.window.done(project);
        if (!ok) this.claimed--;
      }
      if (!ok) await sleep(100);
    }
  }

  private async sendOne(project: string): Promise<boolean> {
    const [lo, hi] = this.opts.sleepMs;
    const secs = ((lo + Math.random() * (hi - lo)) / 1000).toFixed(3);
    let res: Response;
    try {
      res = await fetch(`${this.base()}/api/exchange-hub/command/send`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({
          project_id: project,
          command_type: 'host_exec',
          payload: { command: '/bin/sleep', args: [secs] },
          timeout_ms: this.opts.timeoutMs,
          offline_policy: 'queue',
          queue_ttl_ms: 600_000,
        }),
        signal: AbortSignal.timeout(30_000),
      });
    } catch {
      this.connErrors++;
      return false;
    }
    const text = await res.text().catch(() => '');
    if (res.status >= 200 && res.status < 300) {
      const id = (JSON.parse(text) as { command_id: string }).command_id;
      this.ledger.set(id, project);
      this.window.accepted(project);
      this.wake();
      return true;
    }
    if (res.status >= 500) this.http5xx++;
    else this.http4xx++;
    let code = String(res.status);
    try {
      code = `${res.status} ${(JSON.parse(text) as { error?: { code?: string } }).error?.code ?? ''}`.trim();
    } catch {
      // not JSON
    }
    this.codes.set(code, (this.codes.get(code) ?? 0) + 1);
    return false;
  }

  private wake(): void {
    const n = this.accepted;
    const due = this.waiters.filter((w) => w.n <= n);
    this.waiters = this.waiters.filter((w) => w.n > n);
    for (const w of due) w.resolve();
  }

  /** Polls the database for commands not yet terminal, per project (failures keep the last view). */
  private async poll(): Promise<void> {
    while (!this.stopped) {
      // database down (pg-stop): the window keeps sending against the last view, bounded
      await this.window.poll();
      await sleep(150);
    }
  }

  /**
   * Waits until every ledger id is terminal, or nothing became terminal for `stallMs`.
   * Resolves with the number terminal.
   */
  async settle(stallMs: number): Promise<number> {
    const ids = [...this.ledger.keys()];
    let last = -1;
    let since = Date.now();
    for (;;) {
      let n = last;
      try {
        const rows = await this.pgs.query<{ n: string }>(
          this.db,
          `SELECT count(*) AS n FROM command_tracker WHERE command_id = ANY($1) AND status IN ${TERMINAL_SQL}`,
          [ids],
        );
        n = Number(rows[0].n);
      } catch {
        // database restarting
      }
      if (n === ids.length) return n;
      if (n !== last) {
        last = n;
        since = Date.now();
      } else if (Date.now() - since > stallMs) return n;
      await sleep(1_000);
    }
  }

  /** The audit of every ledger id against the database and the agents' execution logs. */
  async audit(executions: string[]): Promise<Omit<Figures, 'scenario' | 'durationMs' | 'notes'>> {
    const ids = [...this.ledger.keys()];
    const runs = new Map<string, number>();
    for (const id of executions) runs.set(id, (runs.get(id) ?? 0) + 1);
    const rows = await this.pgs.query<{
      command_id: string;
      status: string;
      has_result: boolean;
      acked_at: Date | null;
      error: string | null;
    }>(
      this.db,
      `SELECT t.command_id, t.status, (r.command_id IS NOT NULL) AS has_result, t.acked_at, t.error
       FROM command_tracker t LEFT JOIN command_result r ON r.command_id = t.command_id
       WHERE t.command_id = ANY($1)`,
      [ids],
    );
    const byId = new Map(rows.map((r) => [r.command_id, r]));
    let terminal = 0;
    let executed = 0;
    let stored = 0;
    let lost = 0;
    let twice = 0;
    const lostSamples: unknown[] = [];
    const notRun: Record<string, number> = {};
    for (const id of ids) {
      const row = byId.get(id);
      const ran = runs.get(id) ?? 0;
      const isTerminal = row !== undefined && (TERMINAL as readonly string[]).includes(row.status);
      if (isTerminal) terminal++;
      if (ran > 0) executed++;
      if (ran > 0 && row?.has_result) stored++;
      if (ran > 1) twice++;
      if (isTerminal && ran === 0) {
        const why = row.error ? `${row.status}: ${row.error.slice(0, 80)}` : row.status;
        notRun[why] = (notRun[why] ?? 0) + 1;
      }
      // lost: a 2xx without a row, never terminal, or ran without its result reaching the store
      if (!row || !isTerminal || (ran > 0 && !row.has_result)) {
        lost++;
        if (lostSamples.length < 5)
          lostSamples.push({ command_id: id, executions: ran, ...(row ?? { row: 'missing' }) });
      }
    }
    return {
      accepted: ids.length,
      terminal,
      executed,
      stored,
      lost,
      twice,
      notRun,
      http5xx: this.http5xx,
      http4xx: this.http4xx,
      connErrors: this.connErrors,
      lostSamples,
    };
  }
}

export function figureLine(f: Figures): string {
  const s = (f.durationMs / 1000).toFixed(1);
  return (
    `${f.scenario}: accepted ${f.accepted}, terminal ${f.terminal}, results stored ${f.stored} / executed ${f.executed}, ` +
    `lost ${f.lost}, executed twice ${f.twice}, 5xx ${f.http5xx}, duration ${s} s`
  );
}
