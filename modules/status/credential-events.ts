/**
 * Tells every cache of credentials at once that a project's changed (STATUS.credentialsChanged):
 * created, disabled, enabled, rotated, and when a rotated-out secret's overlap ends. The broker
 * drops the project from its auth cache and disconnects sessions whose password no longer
 * authenticates; the bridge's verifier drops the project's secrets. Without this a disabled
 * project's password, or a rotated-out one, kept working for the caches' lifetimes.
 *
 * The end of an overlap is a timer per rotation (re-armed at start from the table, so a restart
 * does not forget it); Node timers hold at most ~24.8 days, the overlap up to 30 days, so a long
 * one is waited for in steps.
 */
import type { Knex } from 'knex';
import type { ModuleBus } from '../../core/bus.js';
import type { Logger } from '../../core/log.js';
import type { Clock, ModuleTimers } from '../../core/module.js';
import { type CredentialsChangedEvent, STATUS } from './contract/topics.js';

/** The longest single timer (a little under Node's 2^31 - 1 ms limit). */
const MAX_TIMER_MS = 2_000_000_000;

export class CredentialEvents {
  /** project id → the timer of its rotated-out secret's overlap end */
  private readonly overlaps = new Map<string, NodeJS.Timeout>();
  published = 0;

  constructor(
    private readonly bus: ModuleBus,
    private readonly clock: Clock,
    private readonly timers: ModuleTimers,
    private readonly log: Logger,
  ) {}

  publish(projectId: string, change: CredentialsChangedEvent['change']): void {
    const ev: CredentialsChangedEvent = { project_id: projectId, change, at: this.clock.now() };
    this.published++;
    this.log.debug({ project_id: projectId, change }, 'credentials changed');
    void this.bus.publish(STATUS.credentialsChanged, ev);
  }

  /** A rotation: published now, and `overlap_ended` when the previous secret stops verifying. */
  rotated(projectId: string, prevExpiresAt: number | null): void {
    this.publish(projectId, 'rotated');
    this.armOverlap(projectId, prevExpiresAt);
  }

  armOverlap(projectId: string, expiresAt: number | null): void {
    const old = this.overlaps.get(projectId);
    if (old) this.timers.clear(old);
    this.overlaps.delete(projectId);
    if (expiresAt === null) return;
    const wait = (): void => {
      const left = expiresAt - this.clock.now();
      if (left > 0) {
        // +1: the secret is valid while expires_at > now, so fire once it is not
        this.overlaps.set(projectId, this.timers.setTimeout(wait, Math.min(left + 1, MAX_TIMER_MS)));
        return;
      }
      this.overlaps.delete(projectId);
      this.publish(projectId, 'overlap_ended');
    };
    wait();
  }

  /** At start: the overlaps still running (a restart must not let an old password live on). */
  async rearm(db: Knex): Promise<number> {
    const rows: Array<{ project_id: string; prev_secret_expires_at: Date | string }> = await db('project')
      .select('project_id', 'prev_secret_expires_at')
      .whereNotNull('prev_secret_expires_at')
      .where('prev_secret_expires_at', '>', new Date(this.clock.now()));
    for (const r of rows) this.armOverlap(r.project_id, new Date(r.prev_secret_expires_at).getTime());
    return rows.length;
  }
}
