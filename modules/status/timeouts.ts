import type { Knex } from 'knex';
import type { Logger } from '../../core/log.js';
import type { Clock } from '../../core/module.js';
import type { PresenceState } from '../shared/topics.js';
import type { WriteResult } from './persist.js';
import type { Presence, PresenceEntry, Transition } from './presence.js';

/**
 * The silence sweep (docs/wire-protocol.md#mqtt-wire-protocol: no heartbeat for the timeout → offline; a handshake not completed
 * within it → offline), decided once, in PostgreSQL. The read model names the candidates: its
 * heartbeat time is never later than the row's (the row holds the latest of every instance), so a
 * project it shows fresh is fresh. Each candidate becomes a conditional UPDATE (`state='online'
 * AND last_heartbeat_at < cutoff`): of several instances sweeping at once one applies it, and a
 * heartbeat another instance wrote meanwhile makes it fail; failed candidates are re-read, which
 * brings that heartbeat into the read model so they stop being candidates.
 */
export class Timeouts {
  sweeps = 0;
  timed_out = 0;
  failures = 0;
  private running: Promise<void> | null = null;

  constructor(
    private readonly d: {
      db: () => Knex;
      presence: Presence;
      clock: Clock;
      log: Logger;
      timeoutMs: number;
      channel: () => string | null;
      reread: (ids: string[]) => void;
      /** The module's presence writer (persist.ts writeBatch with its outbox). */
      write: (db: Knex, batch: { rows: []; ops: Transition[] }, channel: string | null) => Promise<WriteResult>;
    },
  ) {}

  /** One sweep unless one runs (then that one's promise); `reason` names a silence timeout. */
  sweep(reason = 'heartbeat timeout'): Promise<void> {
    this.running ??= this.run(reason).finally(() => {
      this.running = null;
      this.sweeps++;
    });
    return this.running;
  }

  private candidates(reason: string): Transition[] {
    const now = Math.floor(this.d.clock.now());
    const cutoff = now - this.d.timeoutMs;
    const ops: Transition[] = [];
    const op = (e: PresenceEntry, to: PresenceState, why: string, expect: Transition['expect']): Transition => ({
      project_id: e.project_id,
      to,
      at: now,
      steps: [{ project_id: e.project_id, from_state: e.state, to_state: to, reason: why, at: now }],
      expect,
      set: { handshake: null },
    });
    for (const e of this.d.presence.all()) {
      if (e.pending > 0) continue; // its own transition is on its way
      if (e.state === 'online') {
        if ((e.last_heartbeat_at ?? e.state_since) < cutoff)
          ops.push(op(e, 'offline', reason, { states: ['online'], heartbeat_before: cutoff }));
      } else if (e.state === 'connecting' || e.state === 'verifying') {
        if (e.state_since < cutoff)
          ops.push(
            op(e, 'offline', 'registration not completed', {
              states: ['connecting', 'verifying'],
              since_before: cutoff,
            }),
          );
      } else if (e.state === 'disconnecting') {
        // a row an earlier version left half-way (transitions are written whole now)
        ops.push(op(e, 'offline', 'disconnected', { states: ['disconnecting'] }));
      }
    }
    return ops;
  }

  private async run(reason: string): Promise<void> {
    const ops = this.candidates(reason);
    if (ops.length === 0) return;
    try {
      const { applied } = await this.d.write(this.d.db(), { rows: [], ops }, this.d.channel());
      const lost: string[] = [];
      for (const o of ops) {
        const version = applied.get(o);
        if (version === undefined) lost.push(o.project_id);
        else {
          this.timed_out++;
          this.d.presence.decided(o, version);
        }
      }
      if (lost.length > 0) this.d.reread(lost);
    } catch (err) {
      this.failures++;
      this.d.log.warn({ err, candidates: ops.length }, 'presence sweep failed; trying again at the next sweep');
    }
  }
}
