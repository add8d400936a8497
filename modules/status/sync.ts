/**
 * How one hub instance keeps its presence read model current when several share one PostgreSQL
 * (README "Several instances: presence"). Every transition is announced with pg_notify in the
 * transaction that makes it (persist.ts); each instance LISTENs on one dedicated connection, takes
 * the new state from the announcement at once, publishes the change on its own bus (once: the
 * version says whether it already did), and re-reads the changed rows for the rest (registration,
 * instance id) in one query per burst. A listener that reconnects re-reads every row, since
 * announcements made while it was away are gone.
 *
 * PGlite (the embedded default) is one process: nobody else writes, so there is no listener and
 * no check; the read model is the truth by construction.
 */
import { createHash } from 'node:crypto';
import type { Knex } from 'knex';
import type { Logger } from '../../core/log.js';
import type { SyncStats } from './contract/stats.js';
import { loadPresence, readPresence, stepsFromNotice } from './persist.js';
import type { Presence, PresenceEntry } from './presence.js';

/** The reason of a change learnt by a resync rather than from its announcement. */
export const RESYNC_REASON = 'learnt after the presence listener reconnected';

/**
 * The NOTIFY channel of a schema. Channels are per database, not per schema: two hubs (or two
 * test files) on one database with different schemas must not hear each other. Identifiers stop
 * at 63 bytes, so a long schema name is hashed.
 */
export function presenceChannel(schema: string | undefined): string {
  if (!schema) return 'gmq_presence';
  const plain = `gmq_presence_${schema.toLowerCase()}`;
  if (plain.length <= 63 && /^[a-z0-9_$]+$/.test(plain)) return plain;
  return `gmq_presence_${createHash('sha256').update(schema).digest('hex').slice(0, 32)}`;
}

/**
 * Applies what other instances did to the read model: their announcements, re-reads of rows
 * (after an announcement or a transition of ours that lost a race), checks of one row on the hot
 * path, and full resyncs.
 */
export class PresenceSync {
  readonly stats: SyncStats = { rereads: 0, checks: 0, resyncs: 0, bad_notices: 0 };
  private readonly queued = new Set<string>();
  private scheduled = false;
  private readonly checking = new Map<string, Promise<PresenceEntry | undefined>>();
  private closed = false;

  constructor(
    private readonly db: () => Knex,
    private readonly presence: Presence,
    private readonly log: Logger,
  ) {}

  /** An announcement: `{p: project_id, v: version, s: steps}` (persist.ts TRANSITION_SQL). */
  onNotice(payload: string): void {
    let n: { p?: unknown; v?: unknown; s?: unknown };
    try {
      n = JSON.parse(payload) as typeof n;
    } catch {
      this.stats.bad_notices++;
      return;
    }
    if (typeof n.p !== 'string' || !Number.isFinite(Number(n.v))) {
      this.stats.bad_notices++;
      return;
    }
    this.presence.announce(n.p, Number(n.v), stepsFromNotice(n.p, n.s));
    this.reread([n.p]);
  }

  /** Re-reads these rows soon, together with any others asked for meanwhile (one query per burst). */
  reread(ids: readonly string[]): void {
    for (const id of ids) this.queued.add(id);
    if (this.scheduled || this.closed) return;
    this.scheduled = true;
    setImmediate(() => void this.drain());
  }

  private async drain(): Promise<void> {
    while (this.queued.size > 0 && !this.closed) {
      const ids = [...this.queued];
      this.queued.clear();
      try {
        this.stats.rereads++;
        for (const row of await readPresence(this.db(), ids)) this.presence.applyRow(row);
      } catch (err) {
        // the listener's next resync (or the next announcement) brings them; not worth a retry loop
        if (!this.closed) this.log.warn({ err, projects: ids.length }, 'presence re-read failed');
        break;
      }
    }
    this.scheduled = false;
  }

  /**
   * The project's row, read now (one query, shared by concurrent callers): what a heartbeat or a
   * register_complete the read model cannot place is checked against before anything is decided.
   */
  check(projectId: string): Promise<PresenceEntry | undefined> {
    let p = this.checking.get(projectId);
    if (p) return p;
    this.stats.checks++;
    p = readPresence(this.db(), [projectId])
      .then((rows) => {
        for (const row of rows) this.presence.applyRow(row);
        return this.presence.get(projectId);
      })
      .finally(() => this.checking.delete(projectId));
    this.checking.set(projectId, p);
    return p;
  }

  /** Every row again (after the listener (re)connected): changes missed meanwhile are published once. */
  async resync(): Promise<void> {
    this.stats.resyncs++;
    const rows = await loadPresence(this.db());
    let changed = 0;
    for (const row of rows) if (this.presence.catchUp(row, RESYNC_REASON)) changed++;
    if (changed > 0) this.log.info({ changed }, 'presence resync found changes the listener missed');
  }

  close(): void {
    this.closed = true;
  }
}
