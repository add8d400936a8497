/**
 * Idempotent sends (issue 14 item 3): a caller's `idempotency_key` (REST header
 * `Idempotency-Key`, gRPC field `idempotency_key`) names one command for at least
 * `idempotency_retention_ms` (24 h by default). The same key with the same request answers the
 * command the first send made; the same key with another request is refused with
 * CMD_ERR_IDEMPOTENCY_MISMATCH. Keys are global to the hub (not per token or project yet).
 *
 * Correctness does not rest on this file's look-ups: the key row is written by the very
 * statement that writes the tracker and outbox rows (insert-batch.ts), under the table's primary
 * key, so concurrent sends with one key make one command and a crash never splits a key from its
 * command. The look-ups only decide what to answer. What a key may be is the send schema's
 * (contract/schemas.ts `idempotencyKey`).
 */
import { createHash } from 'node:crypto';
import { HubError } from '../../core/errors.js';
import { canonicalJson } from '../shared/signing.js';
import { type Deps, isoAt, query } from './deps.js';
import { TRACKER_COLUMNS, type TrackerRow } from './rows.js';

/** Keys deleted per statement by the retention sweep. */
const SWEEP_BATCH = 1000;

/** What a retry must repeat for its key to name the same command. */
export interface HashedRequest {
  project_id: string;
  command_type: string;
  /** The payload as canonical JSON (RFC 8785), so key order and spacing do not count. */
  payload_json: string;
  /** The optional fields as the caller gave them (null when left out), so a config default changed between two tries does not make them differ. */
  timeout_ms: number | null;
  offline_policy: string;
  queue_ttl_ms: number | null;
  module: string | null;
  operator_id: string | null;
  /** The scheduled start as an instant (ISO, UTC, ms), or null for a send that starts at once. */
  schedule_at?: string | null;
}

/**
 * SHA-256 (hex) of the request's canonical form. Left out on purpose: `command_id` (a sync
 * caller's waiter picks a fresh one per try; the key wins) and `is_sync`/`wait_ms` (how the
 * caller waits is not part of the command: a sync retry of an async send waits for it).
 */
export function requestHash(r: HashedRequest): string {
  const canonical = canonicalJson({
    v: 1,
    project_id: r.project_id,
    command_type: r.command_type,
    payload: JSON.parse(r.payload_json),
    timeout_ms: r.timeout_ms,
    offline_policy: r.offline_policy,
    queue_ttl_ms: r.queue_ttl_ms,
    module: r.module,
    operator_id: r.operator_id,
    // only when given, so the hashes of keys stored before schedules existed stay the same;
    // the instant, not the text, so `Z` and `+00:00` are one request
    ...(r.schedule_at ? { schedule_at: r.schedule_at } : {}),
  });
  return createHash('sha256').update(canonical, 'utf8').digest('hex');
}

export function mismatch(commandId: string): HubError {
  return new HubError(
    'CMD_ERR_IDEMPOTENCY_MISMATCH',
    `idempotency_key: already used by command ${commandId} with a different request; use a new key for a new command`,
    { field: 'idempotency_key', command_id: commandId },
  );
}

export class IdempotencyKeys {
  constructor(private readonly d: Deps) {}

  /** The command a key names, with the hash of the request that made it; null when the key is unknown. */
  async find(key: string): Promise<{ hash: string; row: TrackerRow } | null> {
    const [row] = await query<TrackerRow & { request_hash: string }>(
      this.d.db,
      `SELECT k.request_hash, ${TRACKER_COLUMNS.split(', ')
        .map((c) => `t.${c}`)
        .join(', ')}
         FROM command_idempotency k JOIN command_tracker t ON t.command_id = k.command_id
        WHERE k.idempotency_key = ?`,
      [key],
    );
    if (!row) return null;
    const { request_hash, ...tracker } = row;
    return { hash: request_hash, row: tracker };
  }

  /**
   * Deletes keys older than the retention (their commands stay). Batched, so a backlog after a
   * long outage does not become one long statement; returns how many went.
   */
  async sweep(): Promise<number> {
    const cutoff = isoAt(this.d.clock.now() - this.d.cfg.idempotency_retention_ms);
    let removed = 0;
    for (;;) {
      const rows = await query<{ idempotency_key: string }>(
        this.d.db,
        `DELETE FROM command_idempotency WHERE idempotency_key IN (
           SELECT idempotency_key FROM command_idempotency WHERE created_at < ?::timestamptz
            ORDER BY created_at LIMIT ${SWEEP_BATCH} FOR UPDATE SKIP LOCKED)
         RETURNING idempotency_key`,
        [cutoff],
      );
      removed += rows.length;
      if (rows.length < SWEEP_BATCH) break;
    }
    if (removed > 0) {
      this.d.counters.idempotency_keys_expired += removed;
      this.d.log.info(
        { removed, retention_ms: this.d.cfg.idempotency_retention_ms },
        'expired idempotency keys removed',
      );
    }
    return removed;
  }
}
