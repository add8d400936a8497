/**
 * The ids of commands this agent accepted, kept on disk as they are accepted, so a process that
 * is killed (kill -9, power cut of the process) still knows them when it starts again: the hub
 * re-publishes a command until it gets our command_ack, and if the ack was lost with the process
 * the next one must acknowledge it again, not run it a second time (docs/wire-protocol.md#commands-and-acknowledgements).
 *
 * Two files in the agent's queue folder: `commands.seen`, a snapshot written on a graceful stop
 * and at start, and `commands.seen.log`, one JSON line appended (synchronously) per accepted
 * command, and one more (`done`) once its result is queued. At start both are read, the snapshot
 * is rewritten with what is still inside the replay window, and the journal is emptied. A command
 * the journal shows accepted and not done was running when the process ended: the next process
 * reports it failed (commands.ts importSeen) instead of leaving the hub to wait for its timeout.
 * The snapshot holds only finished commands (it is written once every one is done or reported).
 */
import fs from 'node:fs';
import path from 'node:path';
import type { Logger } from '../../core/log.js';

export interface SeenEntry {
  id: string;
  at: number;
  /** The result was queued (a journal line of its own, after the accepted one). */
  done?: true;
}

const SNAPSHOT = 'commands.seen';
const JOURNAL = 'commands.seen.log';

export class SeenJournal {
  private readonly snapshot: string;
  private readonly journal: string;
  private fd: number | null = null;

  constructor(
    dir: string,
    private readonly log: Logger,
  ) {
    this.snapshot = path.join(dir, SNAPSHOT);
    this.journal = path.join(dir, JOURNAL);
  }

  /** Everything recorded before, snapshot and journal (a torn last line is skipped). */
  load(): SeenEntry[] {
    const out: SeenEntry[] = [];
    const snap = readJson(this.snapshot);
    // the snapshot holds finished commands only (older agents wrote it without the flag)
    if (Array.isArray(snap)) for (const e of snap as SeenEntry[]) out.push({ ...e, done: true });
    let text = '';
    try {
      text = fs.readFileSync(this.journal, 'utf8');
    } catch {
      // no journal: nothing was accepted since the last snapshot
    }
    for (const line of text.split('\n')) {
      if (line === '') continue;
      try {
        out.push(JSON.parse(line) as SeenEntry);
      } catch {
        // a line cut by the kill: the command it named was not acknowledged either
      }
    }
    return out;
  }

  /** Writes `entries` as the snapshot and starts an empty journal. */
  compact(entries: SeenEntry[]): void {
    this.close();
    const tmp = path.join(path.dirname(this.snapshot), `.${SNAPSHOT}.tmp`);
    try {
      fs.writeFileSync(tmp, JSON.stringify(entries));
      fs.renameSync(tmp, this.snapshot);
      fs.writeFileSync(this.journal, '');
    } catch (err) {
      this.log.warn({ err, file: this.snapshot }, 'could not save the recent command ids');
    }
  }

  /**
   * Records one accepted command before it is acknowledged or run, or (`done`) that its result
   * was queued. Synchronous: once this returns the line is in the kernel's hands, so it outlives
   * the process.
   */
  append(entry: SeenEntry): void {
    try {
      this.fd ??= fs.openSync(this.journal, 'a');
      fs.writeSync(this.fd, `${JSON.stringify(entry)}\n`);
    } catch (err) {
      this.log.warn({ err, file: this.journal, command_id: entry.id }, 'could not record an accepted command id');
    }
  }

  close(): void {
    if (this.fd === null) return;
    try {
      fs.closeSync(this.fd);
    } catch {
      // already closed
    }
    this.fd = null;
  }
}

function readJson(file: string): unknown {
  try {
    return JSON.parse(fs.readFileSync(file, 'utf8'));
  } catch {
    return undefined;
  }
}
