/**
 * Presence history: reading a project's changes (newest first, paged) and the retention cleanup.
 * The rows are written by the flush itself, in the statement that applies each transition
 * (persist.ts `transitionSql`), so a change is in the history exactly when it happened. Neither
 * reading nor the cleanup locks a project_status row, so neither takes part in the flush's lock
 * order (persist.ts `lockInOrder`): the cleanup deletes only history rows, which nothing updates.
 */
import type { Knex } from 'knex';
import { z } from 'zod';
import type { Logger } from '../../core/log.js';
import { instant } from '../shared/contract/instant.js';
import {
  HISTORY_DEFAULT_LIMIT,
  HISTORY_MAX_LIMIT,
  type PresenceChange,
  type PresenceHistoryPage,
} from './contract/history-topics.js';
import type { PresenceState } from './contract/topics.js';
import { parseRequest } from './projects.js';

export const historyRequest = z
  .object({
    project_id: z.string(),
    since: instant.optional(),
    until: instant.optional(),
    limit: z.number().int().min(1).max(HISTORY_MAX_LIMIT).default(HISTORY_DEFAULT_LIMIT),
    offset: z.number().int().min(0).default(0),
  })
  .strict();

export type HistoryRequest = z.output<typeof historyRequest>;

/** A bus request body checked: STATUS_ERR_INVALID naming the field otherwise. */
export const parseHistoryRequest = (body: unknown): HistoryRequest => parseRequest(historyRequest, body);

interface HistoryDbRow {
  project_id: string;
  from_state: string;
  to_state: string;
  reason: string;
  at: Date | string;
}

const toChange = (r: HistoryDbRow): PresenceChange => ({
  project_id: r.project_id,
  from_state: r.from_state as PresenceState,
  to_state: r.to_state as PresenceState,
  reason: r.reason,
  at: new Date(r.at).toISOString(),
});

/**
 * One page of a project's presence changes, newest first (a project's changes of one flush share
 * their time: the id, taken in insertion order, breaks the tie so the page order is the order
 * they happened in, reversed). The caller checks the project exists.
 */
export async function readHistory(db: Knex, req: HistoryRequest): Promise<PresenceHistoryPage> {
  const scope = (q: Knex.QueryBuilder) => {
    q.where('project_id', req.project_id);
    if (req.since) q.where('at', '>=', req.since.toISOString());
    if (req.until) q.where('at', '<=', req.until.toISOString());
    return q;
  };
  // The page and its total from one snapshot: read apart, a presence flush between them gave a
  // total larger than what the pages held (a client paging to the total stopped a page short).
  const [rows, count] = await db.transaction(
    async (trx) => {
      const page = await scope(trx('project_status_history'))
        .select('project_id', 'from_state', 'to_state', 'reason', 'at')
        .orderBy([
          { column: 'at', order: 'desc' },
          { column: 'id', order: 'desc' },
        ])
        .limit(req.limit)
        .offset(req.offset);
      const n = await scope(trx('project_status_history')).count<{ n: string | number }[]>({ n: '*' });
      return [page, n] as const;
    },
    { isolationLevel: 'repeatable read', readOnly: true },
  );
  return {
    items: (rows as HistoryDbRow[]).map(toChange),
    total: Number(count[0]?.n ?? 0),
    limit: req.limit,
    offset: req.offset,
  };
}

/** Rows one cleanup statement deletes: short statements, so a large backlog never holds a long transaction. */
const CLEANUP_BATCH = 5000;

/**
 * Deletes history older than `retentionMs` before `now`, in batches. Every hub instance may run it
 * at once: deleting an already deleted row is nothing. Returns how many rows went.
 */
export async function cleanupHistory(db: Knex, now: number, retentionMs: number): Promise<number> {
  const cutoff = new Date(now - retentionMs).toISOString();
  let total = 0;
  for (;;) {
    // the count read back as a row: the same answer from pg and PGlite
    const res = (await db.raw(
      `WITH d AS (DELETE FROM project_status_history WHERE id IN (
         SELECT id FROM project_status_history WHERE at < ?::timestamptz ORDER BY at LIMIT ${CLEANUP_BATCH})
       RETURNING 1)
       SELECT count(*) AS n FROM d`,
      [cutoff],
    )) as { rows: Array<{ n: string | number }> };
    const n = Number(res.rows[0]?.n ?? 0);
    total += n;
    if (n < CLEANUP_BATCH) return total;
  }
}

/** The cleanup on its timer: a failure is logged and tried again at the next round. */
export function historyCleanup(db: () => Knex, now: () => number, retentionMs: number, log: Logger) {
  let running = false;
  return async (): Promise<void> => {
    if (running) return;
    running = true;
    try {
      const n = await cleanupHistory(db(), now(), retentionMs);
      if (n > 0) log.info({ deleted: n, retention_ms: retentionMs }, 'presence history past its retention deleted');
    } catch (err) {
      log.warn({ err }, 'presence history cleanup failed; trying again at the next round');
    } finally {
      running = false;
    }
  };
}
