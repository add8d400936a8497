/**
 * The status module's presence-history topic (REST `GET /project/:project_id/history`, gRPC
 * GetProjectHistory): every state change of a project with the reason the status module gave it,
 * as written beside the transition itself (persist.ts `transitionSql`).
 */
import type { PresenceState } from './topics.js';

export const STATUS_HISTORY = {
  /** request PresenceHistoryRequest → PresenceHistoryPage (STATUS_ERR_NOT_FOUND, STATUS_ERR_INVALID) */
  list: 'status/project/history',
} as const;

/** Most changes one page may hold, and how many a page holds unless told. */
export const HISTORY_MAX_LIMIT = 500;
export const HISTORY_DEFAULT_LIMIT = 100;

export interface PresenceHistoryRequest {
  project_id: string;
  /** changes at or after: ISO time or ms since the epoch */
  since?: string | number;
  /** changes at or before */
  until?: string | number;
  limit?: number;
  offset?: number;
}

/** One presence change: from a state to another, why, and when (ISO 8601, hub clock). */
export interface PresenceChange {
  project_id: string;
  from_state: PresenceState;
  to_state: PresenceState;
  /** the status module's reason: `register`, `register_complete`, `heartbeat timeout`, `disconnect`, … */
  reason: string;
  at: string;
}

/** Newest first. */
export interface PresenceHistoryPage {
  items: PresenceChange[];
  total: number;
  limit: number;
  offset: number;
}
