/**
 * How many commands a project has outstanding (accepted, not yet terminal), for a load that keeps
 * each project's queue short: what the database showed at the last poll, plus what was accepted
 * since that poll began (not visible in it yet), plus sends on the wire. Shared by the fault
 * suite's load (ledger.ts) and the multi-instance one (test/scale/load.ts).
 */
import type { Queryable } from './servers.js';

export const TERMINAL = ['completed', 'failed', 'timeout', 'cancelled'] as const;
export const TERMINAL_SQL = `(${TERMINAL.map((s) => `'${s}'`).join(', ')})`;

/** Commands older than this without a terminal state no longer count against a project's window. */
const STALE_MS = 20_000;

export class OutstandingWindow {
  private readonly inflight = new Map<string, number>();
  /** Non-terminal commands per project as of the last poll (not stale). */
  private open = new Map<string, number>();
  /** Accepted since the last poll began: not yet visible in `open`. */
  private fresh: Array<{ project: string; at: number }> = [];

  constructor(
    private readonly pgs: Queryable,
    private readonly db: string,
  ) {}

  outstanding(project: string): number {
    const since = this.fresh.filter((f) => f.project === project).length;
    return (this.open.get(project) ?? 0) + since + (this.inflight.get(project) ?? 0);
  }

  /** A send to `project` goes on the wire. */
  sending(project: string): void {
    this.inflight.set(project, (this.inflight.get(project) ?? 0) + 1);
  }

  /** Its answer came, or none will. */
  done(project: string): void {
    this.inflight.set(project, (this.inflight.get(project) ?? 1) - 1);
  }

  /** The hub accepted a command of `project`: it counts until a poll sees it. */
  accepted(project: string): void {
    this.fresh.push({ project, at: Date.now() });
  }

  /** One read of the database; a failure (database down) keeps the last view, bounded by `fresh`. */
  async poll(): Promise<void> {
    const began = Date.now();
    try {
      const rows = await this.pgs.query<{ project_id: string; n: string }>(
        this.db,
        `SELECT project_id, count(*) AS n FROM command_tracker
         WHERE status NOT IN ${TERMINAL_SQL} AND created_at > now() - make_interval(secs => $1)
         GROUP BY project_id`,
        [STALE_MS / 1000],
      );
      this.open = new Map(rows.map((r) => [r.project_id, Number(r.n)]));
      // 100 ms of margin: a row committed just before the poll began may be missing from it
      this.fresh = this.fresh.filter((f) => f.at > began - 100);
    } catch {
      this.fresh = this.fresh.filter((f) => f.at > Date.now() - STALE_MS);
    }
  }
}
