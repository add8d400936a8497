/**
 * The jobs domain's requests, as the one schema every interface validates with: REST
 * (web/schemas.ts builds the body from `createJobFields`), gRPC (grpc/convert.ts) and the jobs
 * module itself. Field names are the issue's (issue 14 item 1): they are the contract.
 */
import { z } from 'zod';
import type { CommandStatus, OfflinePolicy } from '../../shared/contract/schemas.js';
import { commandType, expected, idempotencyKey, projectId, shown } from '../../shared/contract/schemas.js';
import type { JobStatus } from './topics.js';

export const JOB_STATUSES = [
  'scheduled',
  'running',
  'completed',
  'aborted',
  'cancelled',
] as const satisfies readonly JobStatus[];

/** Most targets one job may have (a larger fleet: several jobs, or raise nothing and split by metadata). */
export const MAX_TARGETS = 10_000;
/** What each target's command does when its project is not online (the command domain's policies). */
const OFFLINE_POLICIES = ['fail', 'queue'] as const satisfies readonly OfflinePolicy[];
/** The command module's longest timeout is its own config; this is the widest a job passes on. */
const MAX_TIMEOUT_MS = 24 * 3600 * 1000;
export const MAX_JOB_LIST_LIMIT = 500;
export const DEFAULT_JOB_LIST_LIMIT = 50;

const int = (min: number, max: number) => {
  const range = (iss: { input?: unknown }) => `must be between ${min} and ${max}, got ${shown(iss.input)}`;
  return z
    .number({ error: expected('expected an integer') })
    .int({ error: expected('expected an integer') })
    .min(min, { error: range })
    .max(max, { error: range });
};

export const jobTargetsSchema = z
  .object({
    project_ids: z
      .array(projectId, { error: expected('expected an array of project ids') })
      .min(1, { error: 'must name at least one project' })
      .max(MAX_TARGETS, { error: `at most ${MAX_TARGETS} projects` })
      .optional(),
    all: z.literal(true, { error: expected('expected true') }).optional(),
    metadata: z
      .record(z.string(), z.unknown(), { error: expected('expected an object') })
      .refine((m) => Object.keys(m).length > 0, { error: 'must name at least one key' })
      .optional(),
  })
  .strict()
  .refine((t) => [t.project_ids, t.all, t.metadata].filter((v) => v !== undefined).length === 1, {
    error: 'expected exactly one of project_ids, all, metadata',
  })
  .meta({ description: '`{project_ids: [...]}`, `{all: true}` (every enabled project) or `{metadata: {key: value}}`' });

/** A POST /jobs body's fields (REST takes exactly these). */
export function createJobFields() {
  return {
    targets: jobTargetsSchema,
    command_type: commandType,
    payload: z.unknown().optional().meta({ description: 'Any JSON; an empty object when left out' }),
    timeout_ms: int(1, MAX_TIMEOUT_MS).optional().meta({ description: 'Each command’s execution timeout' }),
    offline_policy: z
      .enum(OFFLINE_POLICIES, { error: expected(`expected ${OFFLINE_POLICIES.map((p) => `"${p}"`).join(' or ')}`) })
      .optional()
      .meta({ description: 'Per target: `fail` (default) counts an offline project as failed; `queue` waits for it' }),
    rollout: z
      .object({
        max_in_flight: int(1, MAX_TARGETS).optional().meta({ description: 'Commands not terminal at once' }),
        max_per_minute: int(1, 1_000_000).optional().meta({ description: 'Commands sent in any 60 s' }),
      })
      .strict()
      .optional(),
    abort: z
      .object({
        failure_ratio: z
          .number({ error: expected('expected a number') })
          .gt(0, { error: (iss) => `must be more than 0 and at most 1, got ${shown(iss.input)}` })
          .max(1, { error: (iss) => `must be more than 0 and at most 1, got ${shown(iss.input)}` }),
        min_done: int(1, MAX_TARGETS)
          .optional()
          .meta({ description: 'Targets done before the ratio counts (default 1)' }),
      })
      .strict()
      .optional()
      .meta({ description: 'Abort when (failed + timeout) / done ≥ failure_ratio once min_done targets are done' }),
    schedule_at: z
      .string({ error: expected('expected an ISO 8601 time') })
      .refine((s) => /^\d{4}-\d\d-\d\dT/.test(s) && Number.isFinite(Date.parse(s)), {
        error: (iss) => `expected an ISO 8601 time, got ${shown(iss.input)}`,
      })
      .optional()
      .meta({ description: 'ISO time: the job stays `scheduled` until then (cancellable)' }),
  };
}

/** JOBS.create's request as the bus carries it: the body plus the caller's retry key. */
export const createJobRequestSchema = z.object({ ...createJobFields(), idempotency_key: idempotencyKey.optional() });
export type CheckedCreateJob = z.output<typeof createJobRequestSchema>;

export const listJobsRequestSchema = z.object({
  status: z
    .union([z.enum(JOB_STATUSES), z.array(z.enum(JOB_STATUSES)).min(1)], {
      error: expected(`expected one or more of ${JOB_STATUSES.join(', ')}`),
    })
    .optional(),
  limit: int(1, MAX_JOB_LIST_LIMIT).optional(),
  offset: int(0, Number.MAX_SAFE_INTEGER).optional(),
});

/** Command statuses a target's command can be in, mapped to the target's state. */
export const TARGET_STATE_OF: Record<CommandStatus, 'in_flight' | 'completed' | 'failed' | 'timeout' | 'cancelled'> = {
  // a job's own commands are never scheduled (the job is); a command scheduled by other means counts as started
  scheduled: 'in_flight',
  pending: 'in_flight',
  sent: 'in_flight',
  acked: 'in_flight',
  completed: 'completed',
  failed: 'failed',
  timeout: 'timeout',
  cancelled: 'cancelled',
};
