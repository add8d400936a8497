/**
 * Which project a command belongs to, for the ownership check of every command-scoped uplink
 * (command_ack, exec_result, log_result): an agent may speak only of its own project's commands,
 * so a log line or an ack naming another project's command never reaches that command's
 * watchers or rows.
 *
 * The cheap path is memory: every command this instance creates or sees change state passes
 * through Events.state, which remembers it here (a bounded map, oldest forgotten first). A miss
 * (a command of another instance, or one older than the map) is read from command_tracker;
 * misses of the same turn of the event loop share one query, and the answer, known or unknown,
 * is remembered, so a flood of made-up ids costs one statement per turn, not one per message.
 */
import type { Knex } from 'knex';
import { LRUCache } from 'lru-cache';
import { forList, listStatement } from '../../core/services/sql-lists.js';
import { growingLru } from '../shared/growing-lru.js';
import { query } from './deps.js';

/** Who owns each of a group of command ids (a hot statement: every uplink's first sight of an id). */
export const OWNERS_SQL = listStatement(
  (inList) => `SELECT command_id, project_id FROM command_tracker WHERE ${inList('command_id')}`,
);

/** Command ids remembered (about 100 bytes each). */
export const MAX_OWNERS = 100_000;
/** Ids known not to exist, remembered briefly (a command created meanwhile is remembered by Events). */
const MAX_UNKNOWN = 10_000;
/** Ids per lookup statement. */
const LOOKUP_CHUNK = 1_000;

export class CommandOwners {
  /** LRU caches: a full Map popped through `keys().next()` walks its holes (events.ts MAX_REMEMBERED). */
  private readonly owners = growingLru<string, string>(MAX_OWNERS);
  private readonly unknown = new LRUCache<string, true>({ max: MAX_UNKNOWN });
  private pending = new Map<string, Array<(owner: string | null) => void>>();
  private scheduled = false;
  lookups = 0;

  constructor(private readonly db: () => Knex | undefined) {}

  /** A command and its project (called for every state change this instance publishes). */
  remember(commandId: string, projectId: string): void {
    if (this.owners.get(commandId) === projectId) return;
    this.owners.set(commandId, projectId);
    this.unknown.delete(commandId);
  }

  /** The owner when memory knows (null: known not to exist), undefined when the table must be asked. */
  cached(commandId: string): string | null | undefined {
    const p = this.owners.get(commandId);
    if (p !== undefined) return p;
    return this.unknown.has(commandId) ? null : undefined;
  }

  /** The owning project, or null when no such command exists: a value when cached, else a promise. */
  ownerOf(commandId: string): string | null | Promise<string | null> {
    const c = this.cached(commandId);
    if (c !== undefined) return c;
    return new Promise((resolve) => {
      const waiting = this.pending.get(commandId);
      if (waiting) waiting.push(resolve);
      else this.pending.set(commandId, [resolve]);
      if (!this.scheduled) {
        this.scheduled = true;
        setImmediate(() => void this.lookup());
      }
    });
  }

  private async lookup(): Promise<void> {
    const batch = this.pending;
    this.pending = new Map();
    this.scheduled = false;
    const ids = [...batch.keys()];
    const found = new Map<string, string>();
    let failed = false;
    const db = this.db();
    try {
      if (!db) throw new Error('command module not started');
      for (let i = 0; i < ids.length; i += LOOKUP_CHUNK) {
        this.lookups++;
        const chunk = ids.slice(i, i + LOOKUP_CHUNK);
        const rows = await query<{ command_id: string; project_id: string }>(db, forList(OWNERS_SQL, chunk.length), [
          JSON.stringify(chunk),
        ]);
        for (const r of rows) found.set(r.command_id, r.project_id);
      }
    } catch {
      // The database is unreachable: the uplink is refused as unknown (fail closed), not remembered.
      failed = true;
    }
    for (const [id, waiters] of batch) {
      const owner = found.get(id) ?? null;
      if (owner) this.remember(id, owner);
      else if (!failed) this.rememberUnknown(id);
      for (const w of waiters) w(owner);
    }
  }

  private rememberUnknown(commandId: string): void {
    this.unknown.set(commandId, true);
  }
}
