import { HubError } from '../../../core/errors.js';

/** The sync-wait settings of an interface module (`default_sync_wait_ms`, `max_sync_wait_ms`). */
export interface SyncWaitPolicy {
  readonly default_sync_wait_ms: number;
  readonly max_sync_wait_ms: number;
}

/** What a sync request says about its wait: its own `wait_ms`, and its command's execution `timeout_ms`. */
export interface SyncWaitAsk {
  wait_ms?: number;
  timeout_ms?: number;
}

/**
 * How long a sync call waits for its result: the request's `wait_ms`, else the default or the
 * command's `timeout_ms` when that is longer (a wait shorter than the execution it waits for
 * would run out first); never more than the maximum. A `wait_ms` under 1 ms is refused
 * (CMD_ERR_INVALID naming the field).
 *
 * @example
 *   syncWait({ default_sync_wait_ms: 30_000, max_sync_wait_ms: 300_000 }, { timeout_ms: 60_000 }) // 60_000
 */
export function syncWait(policy: SyncWaitPolicy, ask: SyncWaitAsk): number {
  if (ask.wait_ms !== undefined && ask.wait_ms < 1) {
    throw new HubError('CMD_ERR_INVALID', 'wait_ms: must be at least 1 ms', { field: 'wait_ms' });
  }
  const wanted = ask.wait_ms ?? Math.max(policy.default_sync_wait_ms, ask.timeout_ms ?? 0);
  return Math.min(wanted, policy.max_sync_wait_ms);
}
