/**
 * One route's relay over one module's outbox table: claim due events with a lease (tables.ts
 * `claim`), deliver them (up to `concurrency` at once), mark each published, or count a failed
 * attempt with exponential backoff and jitter until `max_attempts`, then dead. Every hub
 * instance runs it; SKIP LOCKED and the lease keep two instances from sending one event twice,
 * and a killed instance's claims are taken over when their lease ends.
 */
import type { Knex } from 'knex';
import type { Logger } from '../../log.js';
import type { OutboxConfig, OutboxEnvelope, RouteConfig } from './contract.js';
import type { Destination } from './destination.js';
import { type ClaimedRow, claim, markFailed, markPublished, purgePublished, releaseLeases } from './tables.js';

/**
 * Test hook: with HUB_CRASH_POINT=outbox.before_publish the process kills itself with SIGKILL
 * once it has claimed events whose business transaction committed, before it delivers them;
 * `outbox.before_publish:<event type>` only when a claimed event is of that type (so events a
 * previous run left pending do not kill the process while it starts).
 */
export const CRASH_BEFORE_PUBLISH = 'outbox.before_publish';

function crashesOn(rows: readonly ClaimedRow[]): boolean {
  const point = process.env.HUB_CRASH_POINT;
  if (point === CRASH_BEFORE_PUBLISH) return true;
  if (!point?.startsWith(`${CRASH_BEFORE_PUBLISH}:`)) return false;
  const type = point.slice(CRASH_BEFORE_PUBLISH.length + 1);
  return rows.some((r) => r.event_type === type);
}
const PURGE_EVERY_MS = 60_000;

export interface RelayCounters {
  published: number;
  retried: number;
  died: number;
}

export interface RelayDeps {
  db: () => Knex;
  table: string;
  route: string;
  cfg: RouteConfig;
  outbox: OutboxConfig;
  /** This instance's lease owner id. */
  owner: string;
  destination: Destination;
  counters: RelayCounters;
  log: Logger;
}

/** Exponential from backoff.initial_ms, capped at max_ms, then a random 50–100 % of it (jitter). */
export function backoffMs(
  attemptsBefore: number,
  b: { initial_ms: number; max_ms: number },
  rnd = Math.random,
): number {
  const base = Math.min(b.initial_ms * 2 ** Math.min(attemptsBefore, 30), b.max_ms);
  return Math.max(1, Math.round(base * (0.5 + rnd() * 0.5)));
}

export class RouteRelay {
  private timer?: NodeJS.Timeout;
  private running?: Promise<void>;
  private again = false;
  private stopped = false;
  private purgedAt = 0;
  private failing = false;

  constructor(private readonly d: RelayDeps) {}

  start(): void {
    this.schedule(0);
  }

  /** A commit wrote events for this route: look now instead of at the next poll. */
  wake(): void {
    if (this.stopped) return;
    if (this.running) this.again = true;
    else this.schedule(0);
  }

  private schedule(ms: number): void {
    if (this.stopped) return;
    clearTimeout(this.timer);
    this.timer = setTimeout(() => {
      this.timer = undefined;
      this.running = this.pass()
        .then(
          (full) => full,
          (err) => {
            if (!this.failing) this.d.log.warn({ route: this.d.route, err }, 'outbox relay pass failed; retrying');
            this.failing = true;
            return false;
          },
        )
        .then((full) => {
          this.running = undefined;
          const now = this.again || full;
          this.again = false;
          this.schedule(now ? 0 : this.d.outbox.poll_interval_ms);
        });
    }, ms);
    this.timer.unref?.();
  }

  /** One claim and its deliveries; true when the claim was full (more may be due). */
  async pass(): Promise<boolean> {
    const { d } = this;
    const db = d.db();
    if (Date.now() - this.purgedAt > PURGE_EVERY_MS) {
      this.purgedAt = Date.now();
      await purgePublished(db, d.table, d.outbox.retention_ms);
    }
    const rows = await claim(db, d.table, d.route, d.owner, d.outbox.lease_ms, d.cfg.concurrency);
    this.failing = false;
    if (rows.length === 0) return false;
    if (crashesOn(rows)) process.kill(process.pid, 'SIGKILL');
    await Promise.all(rows.map((r) => this.deliver(db, r)));
    return rows.length === d.cfg.concurrency;
  }

  private async deliver(db: Knex, row: ClaimedRow): Promise<void> {
    const { d } = this;
    const envelope = (typeof row.payload === 'string' ? JSON.parse(row.payload) : row.payload) as OutboxEnvelope;
    const ids = { route: d.route, event_id: row.event_id, event_type: row.event_type, key: row.event_key };
    try {
      await d.destination.send(envelope);
    } catch (err) {
      const reason = err instanceof Error ? err.message : String(err);
      const delay = backoffMs(row.attempts, d.cfg.backoff);
      const status = await markFailed(db, d.table, row.id, d.owner, d.cfg.max_attempts, delay, reason);
      if (status === 'dead') {
        d.counters.died++;
        d.log.warn({ ...ids, attempts: row.attempts + 1, reason }, 'outbox event dead after its last attempt');
      } else if (status === 'pending') {
        d.counters.retried++;
        d.log.debug({ ...ids, attempts: row.attempts + 1, retry_in_ms: delay, reason }, 'outbox delivery failed');
      }
      return;
    }
    if (await markPublished(db, d.table, row.id, d.owner)) d.counters.published++;
    else d.log.warn(ids, 'outbox event delivered after its lease ran out (another instance may deliver it again)');
  }

  /**
   * Stops polling, waits for the deliveries in flight, then makes one last pass (bounded by the
   * destination's timeout_ms): the events the modules committed while they stopped (the status
   * module's final flush) go out now rather than at the next start. Gives back what it still holds.
   */
  async stop(): Promise<void> {
    this.stopped = true;
    clearTimeout(this.timer);
    await this.running?.catch(() => undefined);
    await this.pass().catch(() => undefined);
    await releaseLeases(this.d.db(), this.d.table, this.d.owner).catch(() => undefined);
  }
}
