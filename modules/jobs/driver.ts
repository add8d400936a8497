/**
 * The rollout driver: sends each running job's targets as ordinary commands (COMMAND.send with
 * the target's command id and the job id), within the job's `max_in_flight` (targets whose
 * command is not terminal) and `max_per_minute` (targets sent in the last 60 s), aborts a job
 * whose failure ratio crosses its threshold, completes one whose targets are all terminal, and
 * starts scheduled jobs when their time comes.
 *
 * One driver per job at a time, across hub instances on one database: a lease row (job.lease_owner,
 * lease_until), taken only when free or lapsed, renewed every tick, on PostgreSQL and PGlite alike
 * (an advisory lock would pin a pooled connection, and PGlite has one). Should a lapsed lease's
 * holder still be running a tick, the two may overlap for that tick; nothing is sent twice even
 * then: a target's command id is fixed when it is stored (targets.ts), so a second send of it is
 * answered by the command module with the command already made.
 *
 * Targets are claimed (state in_flight, sent_at) before they are sent, in a statement that also
 * checks the job is still running and ours, so a cancel that commits first stops every send after
 * it. A claimed target whose command never got made (the process died between the claim and
 * the send) is found by the reconcile pass and sent again under the same id.
 */
import type { Knex } from 'knex';
import type { ModuleBus } from '../../core/bus.js';
import { errorCode } from '../../core/errors.js';
import type { Logger } from '../../core/log.js';
import type { Clock, ModuleTimers } from '../../core/module.js';
import { COMMAND, type CommandView, type SendCommandRequest } from '../command/contract/topics.js';
import type { JobsConfig } from './config.js';
import { TARGET_STATE_OF } from './contract/schemas.js';
import type { JobCounts, JobView, TargetState } from './contract/topics.js';
import { insertTargets, stopRemaining } from './service.js';
import { applyCommandStates, countsOf, emptyCounts, isoAt, type JobRow, query, toView } from './store.js';
import type { TargetResolver } from './targets.js';

/** Refusals that are the target's outcome (the project cannot take the command), not a reason to retry. */
const TARGET_REFUSALS = new Set([
  'CMD_ERR_PROJECT_OFFLINE',
  'CMD_ERR_UNKNOWN_PROJECT',
  'CMD_ERR_INVALID',
  'CMD_ERR_IDEMPOTENCY_MISMATCH',
]);
/** Commands of a job read per request when reconciling. */
const LIST_PAGE = 500;
/** Sends in flight at once within one tick (the command module groups them into one statement). */
const SEND_PARALLEL = 200;

export interface DriverDeps {
  db: Knex;
  bus: ModuleBus;
  cfg: JobsConfig;
  log: Logger;
  clock: Clock;
  timers: ModuleTimers;
  resolver: TargetResolver;
  /** This instance's lease owner id. */
  owner: string;
  progress(view: JobView): void;
  counters: { sent: number; send_refused: number; aborted: number; completed: number; takeovers: number };
}

export class Driver {
  private timer: NodeJS.Timeout | undefined;
  private running: Promise<void> | null = null;
  private again = false;
  private stopped = false;
  private readonly lastReconcile = new Map<string, number>();
  private readonly lastCounts = new Map<string, string>();
  private readonly held = new Set<string>();

  constructor(private readonly d: DriverDeps) {}

  start(): void {
    this.timer = this.d.timers.setInterval(() => this.wake(), this.d.cfg.tick_ms);
    this.wake();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    if (this.timer) this.d.timers.clear(this.timer);
    await this.running;
    // let another instance take our jobs at once rather than after the lease lapses
    if (this.held.size > 0) {
      await query(
        this.d.db,
        `UPDATE job SET lease_owner = NULL, lease_until = NULL
          WHERE lease_owner = ? AND job_id IN (SELECT jsonb_array_elements_text(?::jsonb))`,
        [this.d.owner, JSON.stringify([...this.held])],
      ).catch((err: unknown) => this.d.log.warn({ err }, 'releasing job leases failed; they lapse on their own'));
    }
  }

  /** A pass soon (one at a time; a wake during a pass makes one more). */
  wake(): void {
    if (this.stopped) return;
    if (this.running) {
      this.again = true;
      return;
    }
    this.running = this.pass()
      .catch((err: unknown) => this.d.log.warn({ err }, 'job driver pass failed; the next tick tries again'))
      .finally(() => {
        this.running = null;
        if (this.again && !this.stopped) {
          this.again = false;
          setImmediate(() => this.wake());
        }
      });
  }

  private async pass(): Promise<void> {
    const now = this.d.clock.now();
    const due = await query<{ job_id: string }>(
      this.d.db,
      `SELECT job_id FROM job
        WHERE (status = 'running' OR (status = 'scheduled' AND schedule_at <= ?::timestamptz))
          AND (lease_owner = ? OR lease_owner IS NULL OR lease_until < ?::timestamptz)
        ORDER BY created_at LIMIT 100`,
      [isoAt(now), this.d.owner, isoAt(now)],
    );
    const seen = new Set(due.map((r) => r.job_id));
    for (const id of this.held) if (!seen.has(id)) this.held.delete(id);
    for (const { job_id } of due) {
      if (this.stopped) return;
      const job = await this.lease(job_id);
      if (!job) {
        this.held.delete(job_id);
        continue;
      }
      if (!this.held.has(job_id)) {
        this.held.add(job_id);
        this.d.counters.takeovers++;
        this.d.log.info({ job_id, owner: this.d.owner, status: job.status }, 'job driver took the lease');
        this.lastReconcile.delete(job_id);
      }
      await this.drive(job);
    }
  }

  /** Takes or renews the lease; null when another instance holds it. */
  private async lease(jobId: string): Promise<JobRow | null> {
    const now = this.d.clock.now();
    const [row] = await query<JobRow>(
      this.d.db,
      `UPDATE job SET lease_owner = ?, lease_until = ?::timestamptz
        WHERE job_id = ? AND status IN ('scheduled', 'running')
          AND (lease_owner = ? OR lease_owner IS NULL OR lease_until < ?::timestamptz)
       RETURNING *`,
      [this.d.owner, isoAt(now + this.d.cfg.lease_ms), jobId, this.d.owner, isoAt(now)],
    );
    return row ?? null;
  }

  private async drive(job: JobRow): Promise<void> {
    if (job.status === 'scheduled') {
      const started = await this.startScheduled(job);
      if (!started) return;
      job = started;
    }
    const now = this.d.clock.now();
    if (now - (this.lastReconcile.get(job.job_id) ?? 0) >= this.d.cfg.reconcile_ms) {
      await this.reconcile(job.job_id, now);
      this.lastReconcile.set(job.job_id, now);
    }
    let counts = await this.counts(job.job_id);
    const done = counts.completed + counts.failed + counts.timeout;
    const bad = counts.failed + counts.timeout;
    if (job.failure_ratio !== null && done >= (job.min_done ?? 1) && bad / done >= job.failure_ratio) {
      await this.finish(
        job,
        'aborted',
        `failure ratio ${(bad / done).toFixed(3)} (${bad} failed or timed out of ${done} done) reached the abort threshold ${job.failure_ratio} after at least ${job.min_done ?? 1} done`,
      );
      return;
    }
    if (counts.pending === 0 && counts.in_flight === 0) {
      await this.finish(job, 'completed', null);
      return;
    }
    const sent = await this.send(job, counts);
    if (sent > 0) counts = await this.counts(job.job_id);
    this.report(job, counts);
  }

  /** A scheduled job whose time came: resolve its targets now and run it. */
  private async startScheduled(job: JobRow): Promise<JobRow | null> {
    const now = this.d.clock.now();
    let projects: string[];
    try {
      projects = await this.d.resolver.resolve(job.targets, false);
    } catch (err) {
      this.d.log.warn({ err, job_id: job.job_id }, 'resolving a scheduled job’s targets failed; retried next tick');
      return null;
    }
    const row = await this.d.db.transaction(async (trx) => {
      const [r] = await query<JobRow>(
        trx,
        `UPDATE job SET status = 'running', started_at = ?::timestamptz, updated_at = ?::timestamptz
          WHERE job_id = ? AND status = 'scheduled' AND lease_owner = ? RETURNING *`,
        [isoAt(now), isoAt(now), job.job_id, this.d.owner],
      );
      if (!r) return null;
      await insertTargets(trx, job.job_id, projects, now);
      return r;
    });
    if (!row) return null;
    this.d.log.info({ job_id: job.job_id, targets: projects.length }, 'scheduled job started');
    return row;
  }

  private async counts(jobId: string): Promise<JobCounts> {
    return (await countsOf(this.d.db, [jobId])).get(jobId) ?? emptyCounts();
  }

  /**
   * Claims up to the free slots of pending targets and sends them. The claim statement checks
   * the job is running and still ours (FOR SHARE: a cancel committing meanwhile is waited for
   * and then seen), so nothing is sent after a cancel.
   */
  private async send(job: JobRow, counts: JobCounts): Promise<number> {
    const now = this.d.clock.now();
    let slots = Math.min(counts.pending, job.max_in_flight - counts.in_flight);
    if (job.max_per_minute !== null) {
      const [recent] = await query<{ n: number | string }>(
        this.d.db,
        `SELECT count(*) AS n FROM job_target WHERE job_id = ? AND sent_at > ?::timestamptz`,
        [job.job_id, isoAt(now - 60_000)],
      );
      slots = Math.min(slots, job.max_per_minute - Number(recent.n));
    }
    if (slots <= 0) return 0;
    const claimed = await query<{ project_id: string; command_id: string }>(
      this.d.db,
      `UPDATE job_target t SET state = 'in_flight', sent_at = ?::timestamptz, updated_at = ?::timestamptz
        WHERE t.job_id = ? AND t.seq IN (
                SELECT seq FROM job_target WHERE job_id = ? AND state = 'pending' ORDER BY seq LIMIT ?)
          AND t.state = 'pending'
          AND EXISTS (SELECT 1 FROM job j WHERE j.job_id = t.job_id AND j.status = 'running'
                         AND j.lease_owner = ? FOR SHARE)
       RETURNING t.project_id, t.command_id`,
      [isoAt(now), isoAt(now), job.job_id, job.job_id, slots, this.d.owner],
    );
    for (let i = 0; i < claimed.length; i += SEND_PARALLEL) {
      await Promise.all(claimed.slice(i, i + SEND_PARALLEL).map((t) => this.sendOne(job, t.project_id, t.command_id)));
    }
    return claimed.length;
  }

  private async sendOne(job: JobRow, projectId: string, commandId: string): Promise<void> {
    const req: SendCommandRequest = {
      project_id: projectId,
      command_type: job.command_type,
      payload: job.payload,
      command_id: commandId,
      job_id: job.job_id,
      module: 'jobs',
      ...(job.timeout_ms !== null ? { timeout_ms: job.timeout_ms } : {}),
      ...(job.offline_policy !== null ? { offline_policy: job.offline_policy } : {}),
    };
    try {
      const view = await this.d.bus.request<CommandView>(COMMAND.send, req, {
        timeoutMs: this.d.cfg.request_timeout_ms,
      });
      this.d.counters.sent++;
      await applyCommandStates(
        this.d.db,
        [{ command_id: commandId, state: TARGET_STATE_OF[view.status] }],
        this.d.clock.now(),
      );
    } catch (err) {
      const code = errorCode(err);
      const now = isoAt(this.d.clock.now());
      if (code && TARGET_REFUSALS.has(code)) {
        // the target's outcome: its project cannot take the command (offline, unknown, disabled)
        this.d.counters.send_refused++;
        await query(
          this.d.db,
          `UPDATE job_target SET state = 'failed', error = ?, updated_at = ?::timestamptz
            WHERE command_id = ? AND state = 'in_flight'`,
          [`${code}: ${(err as Error).message}`.slice(0, 500), now, commandId],
        );
        this.d.log.debug(
          { job_id: job.job_id, project_id: projectId, code },
          'job target refused by the command module',
        );
        return;
      }
      // the command module is away or slow: the target goes back to pending and is sent again (same id)
      await query(
        this.d.db,
        `UPDATE job_target SET state = 'pending', sent_at = NULL, updated_at = ?::timestamptz
          WHERE command_id = ? AND state = 'in_flight'`,
        [now, commandId],
      );
      this.d.log.warn({ job_id: job.job_id, project_id: projectId, code, err }, 'job target send failed; retried');
    }
  }

  /**
   * Re-reads the job's commands from the command module: every target whose command exists
   * takes its state (events may have been missed: a restart, a full mailbox), and a target
   * claimed long ago whose command does not exist goes back to pending (sent again, same id).
   */
  private async reconcile(jobId: string, now: number): Promise<void> {
    const states: Array<{ command_id: string; state: TargetState }> = [];
    for (let offset = 0; ; offset += LIST_PAGE) {
      const page = await this.d.bus.request<{ items: CommandView[]; total: number }>(
        COMMAND.list,
        { job_id: jobId, limit: LIST_PAGE, offset },
        { timeoutMs: this.d.cfg.request_timeout_ms },
      );
      for (const c of page.items) states.push({ command_id: c.command_id, state: TARGET_STATE_OF[c.status] });
      if (page.items.length < LIST_PAGE) break;
    }
    await applyCommandStates(this.d.db, states, now);
    const lost = await query<{ command_id: string }>(
      this.d.db,
      `UPDATE job_target SET state = 'pending', sent_at = NULL, updated_at = ?::timestamptz
        WHERE job_id = ? AND state = 'in_flight' AND sent_at < ?::timestamptz
          AND command_id NOT IN (SELECT jsonb_array_elements_text(?::jsonb))
       RETURNING command_id`,
      [
        isoAt(now),
        jobId,
        isoAt(now - 2 * this.d.cfg.request_timeout_ms),
        JSON.stringify(states.map((s) => s.command_id)),
      ],
    );
    if (lost.length > 0) {
      this.d.log.warn(
        { job_id: jobId, targets: lost.length },
        'job targets claimed but never sent: sending them again',
      );
    }
  }

  private async finish(job: JobRow, status: 'completed' | 'aborted', reason: string | null): Promise<void> {
    const now = this.d.clock.now();
    const [row] = await query<JobRow>(
      this.d.db,
      `UPDATE job SET status = ?, reason = ?, finished_at = ?::timestamptz, updated_at = ?::timestamptz,
              lease_owner = NULL, lease_until = NULL
        WHERE job_id = ? AND status = 'running' AND lease_owner = ?
       RETURNING *`,
      [status, reason, isoAt(now), isoAt(now), job.job_id, this.d.owner],
    );
    this.held.delete(job.job_id);
    if (!row) return;
    let stopped: Awaited<ReturnType<typeof stopRemaining>> | undefined;
    if (status === 'aborted') {
      this.d.counters.aborted++;
      stopped = await stopRemaining(this.d, job.job_id, now);
    } else this.d.counters.completed++;
    const counts = await this.counts(job.job_id);
    this.d.log.info({ job_id: job.job_id, status, reason, counts, ...stopped }, `job ${status}`);
    this.lastCounts.delete(job.job_id);
    this.lastReconcile.delete(job.job_id);
    this.d.progress(toView(row, counts));
  }

  /** job.progress when the counts changed since the last one this driver sent. */
  private report(job: JobRow, counts: JobCounts): void {
    const key = JSON.stringify(counts);
    if (this.lastCounts.get(job.job_id) === key) return;
    this.lastCounts.set(job.job_id, key);
    this.d.progress(toView(job, counts));
  }
}
