/**
 * The publish outcome window (config `publish_outcome_delay_ms`, 1 s): how long the outcome
 * of a send's first publish (its PUBACK) waits to be written. An agent usually acks within a few
 * ms of the PUBACK, and under load within a few hundred (at 256 commands in flight on 2 cores,
 * 37–58 % of acks came later than the 250 ms this window was before, and each of those commands
 * paid a tracker UPDATE that its ack's write made stale a moment later: docs/benchmarks.md "The publish
 * outcome window as long as the first backoff"). Written at once, every command paid one
 * more UPDATE and commit, which held the tracker row while the agent's ack and result were being
 * written (a sync caller waited for it), and emitted a `sent` event that was stale a moment later.
 *
 * So the relay hands each send's first PUBACK in here (`hold`), the uplink writer takes its time
 * for the ack's `sent_at` (`pubackAt`) and says which acks it wrote (`ackWritten`), and at the
 * window's end only the outcomes no ack wrote are written, together. An ack's write sets all an
 * outcome would (status, sent_at from the PUBACK time kept here, the outbox row published), and
 * the tracker was inserted with that first attempt counted. A command whose agent has not acked
 * is `sent` at the end of the window. Re-publishes (relay passes) are written at once, not here.
 *
 * Both halves live in this one object because they race: an ack can be written before the relay
 * has seen its command's PUBACK (the bridge answers the publish and hands over the agent's ack
 * in either order), so the written acks are remembered until the window asks, bounded by
 * ACKED_MAX (an id nobody asks for, a re-published command's or a redelivery's, is dropped with
 * the rest when the set fills, which costs only one outcome write).
 */
import type { Counters } from './events.js';
import type { Claimed } from './relay.js';

/** A window holding this many is written at once. */
const BATCH_MAX = 2_000;
/** Written acks remembered until the window asks, at most. */
const ACKED_MAX = 50_000;

export interface OutcomeWindowOptions {
  delayMs: number;
  counters: Counters;
  /** Writes the outcomes of `rows` (each PUBACKed at `pubackAt`); never rejects. */
  write(rows: Claimed[], pubackAt: Map<string, number>): Promise<void>;
  /** Keeps a write under way in the set a stop waits for. */
  track(run: Promise<void>): void;
}

export class OutcomeWindow {
  /** Sends' first publishes PUBACKed: command_id → the row and its PUBACK time. */
  private readonly due = new Map<string, { row: Claimed; at: number }>();
  /** Commands whose ack this instance wrote (alone or with the result) since the window last asked. */
  private readonly acked = new Set<string>();
  private timer?: NodeJS.Timeout;
  private stopped = false;

  constructor(private readonly o: OutcomeWindowOptions) {}

  /** A send's first publish was PUBACKed at `at`: its outcome waits for the window. False once stopped (write it at once). */
  hold(row: Claimed, at: number): boolean {
    if (this.stopped) return false;
    this.due.set(row.command_id, { row, at });
    if (this.due.size >= BATCH_MAX) {
      this.end();
      return true;
    }
    // a plain timer, not the module's: the host clears those before the relay's stop writes what is due
    this.timer ??= setTimeout(() => {
      this.timer = undefined;
      this.end();
    }, this.o.delayMs);
    return true;
  }

  /** When the command's first publish was PUBACKed, while its outcome waits here (the ack write records it as sent_at). */
  pubackAt(commandId: string): number | undefined {
    return this.due.get(commandId)?.at;
  }

  /** The uplink writer wrote the command's ack: its outcome needs no write of its own. */
  ackWritten(commandId: string): void {
    if (this.acked.size >= ACKED_MAX) this.acked.clear();
    this.acked.add(commandId);
  }

  /** The module stops: what the window holds is written now, and later PUBACKs are not held. */
  stop(): void {
    this.stopped = true;
    this.end();
  }

  /** Ends the window: writes the outcomes whose ack was not written meanwhile. */
  private end(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
    if (this.due.size === 0) return;
    const due = [...this.due.values()];
    this.due.clear();
    const unacked = due.filter(({ row }) => !this.acked.delete(row.command_id));
    this.o.counters.outcomes_skipped += due.length - unacked.length;
    if (unacked.length === 0) return;
    const rows = unacked.map(({ row }) => row);
    this.o.track(this.o.write(rows, new Map(unacked.map(({ row, at }) => [row.command_id, at]))));
  }
}
