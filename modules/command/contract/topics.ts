/**
 * The command module's bus contract (send, read, cancel, dead letters, events)
 * (docs/conventions.md#each-domain-owns-its-bus-topics): every topic the command module publishes or
 * answers, with its payload type. Other modules import this file, never the module itself.
 * Project ids in topics are safe: isValidProjectId forbids `/`, `+`, `#` and NUL.
 */

import type { CommandStatus, OfflinePolicy } from '../../shared/contract/schemas.js';
import type { ExecResultPayload } from '../../shared/protocol.js';

export type { CommandStatus, OfflinePolicy };

/** Every state of a command, in the order it can go through them. */
export const COMMAND_STATUSES = [
  'scheduled',
  'pending',
  'sent',
  'acked',
  'completed',
  'failed',
  'timeout',
  'cancelled',
] as const satisfies readonly CommandStatus[];

export const COMMAND = {
  /** request SendCommandRequest → SentCommand (at once; the outbox delivers) */
  send: 'command/send',
  /** request { command_id } → CommandDetail (CMD_ERR_NOT_FOUND) */
  get: 'command/get',
  /** request ListCommandsRequest → { items: CommandView[], total, limit, offset } */
  list: 'command/list',
  /** request { command_id } → CommandView (CMD_ERR_NOT_CANCELLABLE once delivered) */
  cancel: 'command/cancel',
  /** request { limit?, offset? } → { items: CommandView[], total } — outbox rows that went dead */
  deadList: 'command/dead/list',
  /** request { command_id } → CommandView — a dead command goes back to the outbox */
  deadReplay: 'command/dead/replay',
  /** event CommandEvent: `command/event/{project_id}/{command_id}` */
  event: (projectId: string, commandId: string) => `command/event/${projectId}/${commandId}`,
  eventPattern: 'command/event/#',
  /** request {} → command module counters (outbox depth, latencies …) */
  stats: 'command/stats',
} as const;

export interface SendCommandRequest {
  project_id: string;
  command_type: string;
  payload?: unknown;
  /** Execution timeout; default from the command module's config. */
  timeout_ms?: number;
  module?: string;
  operator_id?: string;
  offline_policy?: OfflinePolicy;
  /** With offline_policy 'queue': how long the command may wait for the project (default config). */
  queue_ttl_ms?: number;
  /** Async only: when to start it (ISO 8601 with zone); `scheduled` until then. */
  schedule_at?: string;
  /** Callers that wait for the result choose the id first, so their waiter exists before the send. */
  command_id?: string;
  is_sync?: boolean;
  /**
   * A retry key (REST `Idempotency-Key`): the same key and request answer the command the first
   * send made; another request → CMD_ERR_IDEMPOTENCY_MISMATCH. 1-255 printable ASCII characters.
   */
  idempotency_key?: string;
  /** The job sending it (the jobs module sets it; no REST field). */
  job_id?: string;
}

/** COMMAND.send's answer: the command, flagged when an idempotency key named one made before. */
export type SentCommand = CommandView & { idempotent_replayed?: true };

export interface CommandTimings {
  /** created → sent (broker acknowledged) */
  queue_ms: number | null;
  /** sent → acked by the agent */
  delivery_ms: number | null;
  /** the agent's start_time → end_time */
  execution_ms: number | null;
  /** created → completed/failed */
  total_ms: number | null;
}

export interface CommandView {
  command_id: string;
  project_id: string;
  command_type: string;
  module: string | null;
  operator_id: string | null;
  status: CommandStatus;
  is_sync: boolean;
  offline_policy: OfflinePolicy;
  attempts: number;
  created_at: string;
  sent_at: string | null;
  acked_at: string | null;
  started_at: string | null;
  completed_at: string | null;
  timeout_at: string;
  /** When a scheduled send was asked to start (null: sent at once) */
  schedule_at: string | null;
  /** true when the result arrived after the command had been marked timeout */
  late_result: boolean;
  error: string | null;
  /** The job that sent the command (modules/jobs), or null. */
  job_id: string | null;
}

export interface CommandResultView extends Omit<ExecResultPayload, 'command_id'> {
  received_at: string;
}

export interface CommandDetail extends CommandView {
  payload: unknown;
  result: CommandResultView | null;
  timings: CommandTimings;
}

export interface ListCommandsRequest {
  project_id?: string;
  /**
   * Only commands of projects matching one of these ids or globs (project-scope.ts): the
   * caller's token is limited to them. Absent: every project.
   */
  project_patterns?: string[];
  status?: CommandStatus | CommandStatus[];
  command_type?: string;
  /** Only the commands of this job. */
  job_id?: string;
  /** ISO time or ms: created_at ≥ since */
  since?: string | number;
  until?: string | number;
  limit?: number;
  offset?: number;
}

/**
 * One event per state change, log chunk or result, in `command/event/{project_id}/{command_id}`.
 * `remote`: made by another hub instance on the same database and announced to this one
 * (command module, cluster-events.ts); counted as this instance's own work nowhere.
 */
export type CommandEvent = (
  | { kind: 'state'; command: CommandView; at: number }
  | { kind: 'log'; command_id: string; project_id: string; seq: number; content: string; at: number }
  | {
      kind: 'result';
      command: CommandView;
      result: CommandResultView;
      /** With `command`, the whole CommandDetail: a sync waiter answers from the event, no read back. */
      payload: unknown;
      timings: CommandTimings;
      at: number;
    }
) & { remote?: true };
