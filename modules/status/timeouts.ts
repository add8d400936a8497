import type { Knex } from 'knex';
import type { Logger } from '../../core/log.js';
import type { Clock } from '../../core/module.js';
import type { PresenceState } from './contract/topics.js';
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
 *
 * Silence is counted from this instance's start at the earliest (`startedAt`): while the hub was
 * down nobody recorded the agents' heartbeats, and those sent meanwhile wait in the broker for its
 * session, to arrive just after the start. Judging the rows at the start ("stale on start") called
 * every project offline whose hub restart took longer than the timeout (a deploy flapped the whole
 * fleet: offline, a reregister ask, online again, and 409s in between). Now a project continued
 * from the database has a full timeout after the start to be heard from; one whose agent is
 * really gone goes offline then ('heartbeat timeout'). Another instance that kept running judges
 * by the shared rows as before.
 *
 * Silence is judged as of the moment the sweep took its place behind the module's queue
 * (`settled`), not as of when it runs: a hub behind on its uplinks holds heartbeats in its
 * mailbox that the agents sent in time. Judging by the clock alone called a whole fleet offline
 * whenever the status mailbox fell a timeout behind (a registration storm), and every heartbeat
 * then waiting was answered with a `reregister`: a flood into a publish queue that was already
 * late. One turn of I/O first (setImmediate) brings in what the socket holds after an event-loop
 * stall, so that a timer firing late does not judge ahead of the messages read in the same turn.
 */
export class Timeouts {
  sweeps = 0;
  timed_out = 0;
  failures = 0;
  private running: Promise<void> | null = null;
  private writing: Promise<unknown> | null = null;
  private stopped = false;

  constructor(
    private readonly d: {
      db: () => Knex;
      presence: Presence;
      clock: Clock;
      log: Logger;
      timeoutMs: number;
      channel: () => string | null;
      /** Resolves once the uplinks queued before the call are handled (the module's ModuleBus.settled). */
      settled: () => Promise<void>;
      reread: (ids: string[]) => void;
      /** The module's presence writer (persist.ts writeBatch with its outbox). */
      write: (db: Knex, batch: { rows: []; ops: Transition[] }, channel: string | null) => Promise<WriteResult>;
    },
    /** When this instance started (module clock): no silence is counted from before it. */
    private readonly startedAt = d.clock.now(),
  ) {}

  /** One sweep unless one runs (then that one's promise). */
  sweep(): Promise<void> {
    this.running ??= this.run('heartbeat timeout').finally(() => {
      this.running = null;
      this.sweeps++;
    });
    return this.running;
  }

  /**
   * No sweep decides after this: one waiting behind the queue gives up (a restarting module's
   * queue is the next instance's, and its judgement would be from before the stop). Resolves once
   * a write already sent is answered, so the pool is not closed under it.
   */
  async stop(): Promise<void> {
    this.stopped = true;
    await this.writing?.catch(() => {});
  }

  /** `asOf`: when the sweep started waiting for the queue; every uplink received before it is applied. */
  private candidates(reason: string, asOf: number): Transition[] {
    const now = Math.floor(this.d.clock.now());
    const cutoff = Math.min(now, asOf) - this.d.timeoutMs;
    // within a timeout of the start nobody can have been silent for a whole timeout here
    if (cutoff < this.startedAt) return [];
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
    const asOf = Math.floor(this.d.clock.now());
    await new Promise<void>((r) => setImmediate(r));
    await this.d.settled();
    if (this.stopped) return;
    const ops = this.candidates(reason, asOf);
    if (ops.length === 0) return;
    try {
      const writing = this.d.write(this.d.db(), { rows: [], ops }, this.d.channel());
      this.writing = writing;
      const { applied } = await writing.finally(() => {
        this.writing = null;
      });
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
