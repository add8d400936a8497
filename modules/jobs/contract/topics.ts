/**
 * The jobs module's bus topics and payloads (docs/conventions.md#each-domain-owns-its-bus-topics):
 * one command to many projects (README "Jobs: one command to many projects"). Interfaces (web, grpc) ask these; the live
 * feed (modules/shared/interface-kit/event-feed.ts) turns `job.progress` events into WebSocket and gRPC events.
 */
import type { OfflinePolicy } from '../../shared/contract/schemas.js';

export const JOBS = {
  /** request CreateJobRequest → CreatedJob (201; `idempotent_replayed` when a key named an earlier job) */
  create: 'jobs/create',
  /** request { job_id } → JobView (JOB_ERR_NOT_FOUND) */
  get: 'jobs/get',
  /** request ListJobsRequest → { items: JobView[], total, limit, offset } */
  list: 'jobs/list',
  /** request { job_id } → JobView (JOB_ERR_NOT_CANCELLABLE once finished) */
  cancel: 'jobs/cancel',
  /** event JobProgressEvent: `jobs/event/{job_id}`, from the instance driving the job */
  event: (jobId: string) => `jobs/event/${jobId}`,
  eventPattern: 'jobs/event/+',
} as const;

export type JobStatus = 'scheduled' | 'running' | 'completed' | 'aborted' | 'cancelled';
/** Where each target is: not sent yet, sent and not terminal, or its command's terminal status. */
export type TargetState = 'pending' | 'in_flight' | 'completed' | 'failed' | 'timeout' | 'cancelled';

/** Which projects a job goes to: exactly one of the three is set (the schema checks it). */
export interface JobTargets {
  project_ids?: string[];
  /** every enabled project */
  all?: true;
  /** every enabled project whose metadata holds these pairs */
  metadata?: Record<string, unknown>;
}

export interface CreateJobRequest {
  targets: JobTargets;
  command_type: string;
  payload?: unknown;
  timeout_ms?: number;
  offline_policy?: OfflinePolicy;
  rollout?: { max_in_flight?: number; max_per_minute?: number };
  abort?: { failure_ratio: number; min_done?: number };
  /** ISO time: the job waits as `scheduled` until then. */
  schedule_at?: string;
  /** REST `Idempotency-Key`, gRPC `idempotency_key`. */
  idempotency_key?: string;
}

export interface JobCounts {
  total: number;
  pending: number;
  in_flight: number;
  completed: number;
  failed: number;
  timeout: number;
  cancelled: number;
}

export interface JobView {
  job_id: string;
  status: JobStatus;
  counts: JobCounts;
  targets: JobTargets;
  command_type: string;
  payload: unknown;
  timeout_ms: number | null;
  offline_policy: OfflinePolicy | null;
  rollout: { max_in_flight: number; max_per_minute: number | null };
  abort: { failure_ratio: number; min_done: number } | null;
  schedule_at: string | null;
  /** Why the job ended as it did (an abort says its ratio), or null. */
  reason: string | null;
  created_at: string;
  started_at: string | null;
  finished_at: string | null;
}

export type CreatedJob = JobView & { idempotent_replayed?: true };

export interface ListJobsRequest {
  status?: JobStatus | JobStatus[];
  limit?: number;
  offset?: number;
}

/** `jobs/event/{job_id}`: the job as it is now, after its counts or status changed. */
export interface JobProgressEvent {
  job: JobView;
  at: number;
}
