/**
 * The operator's trail of each command: one info line when it is accepted (or scheduled, or
 * started at its time) and one when it ends, with its ids and status, never its payload. The
 * lines are written just after the I/O their change set going, not in its way: a send's line
 * after its PUBLISH, a result's after the sync caller's answer.
 *
 * Why: a line is pino's serialisation and a write (handed to libuv's thread pool on a pipe; on a
 * regular file, one write(2) when the turn ends: core/log-destination.ts), 50-80 µs of the
 * event loop on these 2-core machines, and each of a sync command's two lines sat between a
 * database answer and what that answer lets go out (docs/benchmarks.md "A sync call leg by leg": legs 3 and
 * 7). So the lines of a moment are held and written in the next turn of the event loop (a
 * `setImmediate` queued from a `setImmediate`): after the immediates this moment queued, where
 * the bus's mailboxes hand the PUBLISH to the bridge and the result to the sync caller's waiter.
 * Best effort, not an order anyone relies on: a mailbox still busy with earlier work takes its
 * turn later. Lines keep their order; a line's `time` is when it is written, a turn or two after
 * the change. The module's stop writes what is held at once.
 */
import type { Logger } from '../../core/log.js';
import { TERMINAL_STATUSES } from './contract/schemas.js';
import type { CommandView } from './contract/topics.js';

export class LifecycleLines {
  private held: { view: CommandView; at: number }[] = [];
  private scheduled = false;
  private readonly writeHeld = (): void => {
    this.scheduled = false;
    this.flush();
  };
  /** The first hop: from this turn's immediates into the next turn's. */
  private readonly nextTurn = (): void => {
    setImmediate(this.writeHeld);
  };

  constructor(private readonly log: Logger) {}

  /** The line of `view`'s new state, if it has one, written after this moment's I/O. */
  add(view: CommandView, at: number): void {
    if (!hasLine(view)) return;
    this.held.push({ view, at });
    if (this.scheduled) return;
    this.scheduled = true;
    setImmediate(this.nextTurn);
  }

  /** Lines not written yet. */
  get waiting(): number {
    return this.held.length;
  }

  /** Writes every held line now, in order (the module stops; or the scheduled turn came). */
  flush(): void {
    if (this.held.length === 0) return;
    const lines = this.held;
    this.held = [];
    for (const { view, at } of lines) writeLine(this.log, view, at);
  }
}

function hasLine(c: CommandView): boolean {
  return c.status === 'scheduled' || c.status === 'pending' || TERMINAL_STATUSES.has(c.status);
}

function writeLine(log: Logger, c: CommandView, now: number): void {
  const ids = { command_id: c.command_id, project_id: c.project_id, command_type: c.command_type };
  if (c.status === 'scheduled') {
    log.info({ ...ids, schedule_at: c.schedule_at, offline_policy: c.offline_policy }, 'command scheduled');
  } else if (c.status === 'pending' && c.schedule_at !== null) {
    log.info({ ...ids, schedule_at: c.schedule_at, offline_policy: c.offline_policy }, 'scheduled command started');
  } else if (c.status === 'pending') {
    log.info({ ...ids, offline_policy: c.offline_policy, attempts: c.attempts }, 'command accepted');
  } else {
    const end = c.completed_at ? Date.parse(c.completed_at) : now;
    log.info(
      { ...ids, status: c.status, duration_ms: end - Date.parse(c.created_at), ...(c.error ? { error: c.error } : {}) },
      `command ${c.status}`,
    );
  }
}
