/**
 * Every REST body, query and path schema, plus the response shapes. The routes validate with
 * these and /openapi.json is generated from them, so the document cannot drift from the code.
 * Response schemas are checked against the bus contract types at compile time (see the end).
 */
import { z } from 'zod';
import type { DeadEvent } from '../../core/services/outbox/contract.js';
import {
  COMMAND_STATUSES,
  commandType,
  idempotencyKey,
  MAX_LIST_LIMIT,
  OFFLINE_POLICIES,
  sendFields,
} from '../command/contract/schemas.js';
import type { CommandDetail, CommandView } from '../command/contract/topics.js';
import { createJobFields, JOB_STATUSES, MAX_JOB_LIST_LIMIT } from '../jobs/contract/schemas.js';
import type { JobView } from '../jobs/contract/topics.js';
import { projectId, uuid } from '../shared/contract/schemas.js';
import type { CreatedProject, ProjectView, StatusChangedEvent } from '../status/contract/topics.js';
import type { WebConfig } from './config.js';

export { projectId };

const PRESENCE = ['offline', 'connecting', 'verifying', 'online', 'disconnecting'] as const;

// ─── requests ──────────────────────────────────────────────────────────────────────────────

/**
 * The command bodies are the command domain's send fields (contract/schemas.ts), strict: no
 * status, signature or command_id can be assigned by a caller.
 */
export function sendBodySchema(cfg: WebConfig) {
  return z
    .object(sendFields())
    .strict()
    .meta({ id: 'SendCommandBody', description: `JSON body, at most ${cfg.body_limit_bytes} bytes` });
}

export function syncBodySchema(cfg: WebConfig) {
  return sendBodySchema(cfg)
    .extend({
      wait_ms: z
        .number()
        .int()
        .min(1)
        .max(cfg.max_sync_wait_ms)
        .optional()
        .meta({
          description: `How long to wait for the result (default ${cfg.default_sync_wait_ms} ms, or timeout_ms when longer)`,
        }),
    })
    .strict()
    .meta({ id: 'SyncCommandBody' });
}

/** The response header of an answer an idempotency key replayed. */
export const IDEMPOTENT_REPLAYED = 'Idempotent-Replayed';

/**
 * The send routes' optional `Idempotency-Key` header. The command module checks it again (gRPC
 * and bus callers pass it too); here it is documented and refused early with the same rule.
 */
export const idempotencyHeaders = z.object({
  'idempotency-key': idempotencyKey.optional().meta({
    description:
      'Retry key (1-255 printable ASCII characters), kept at least 24 h: the same key with the same body answers ' +
      'the command the first request made (header Idempotent-Replayed: true); with another body, 409 ' +
      'CMD_ERR_IDEMPOTENCY_MISMATCH. Keys are global to the hub.',
  }),
});

export const commandIdParams = z.object({ command_id: uuid }).strict();
export const jobIdParams = z.object({ job_id: uuid }).strict();

/** POST /jobs: the jobs domain's fields (jobs/contract/schemas.ts), strict. */
export const createJobBody = z.object(createJobFields()).strict().meta({ id: 'CreateJobBody' });

export const listJobsQuery = z
  .object({
    status: z
      .string()
      .regex(new RegExp(`^(${JOB_STATUSES.join('|')})(,(${JOB_STATUSES.join('|')}))*$`), {
        message: `expected a comma list of ${JOB_STATUSES.join(', ')}`,
      })
      .optional(),
    limit: z.coerce.number().int().min(1).max(MAX_JOB_LIST_LIMIT).optional(),
    offset: z.coerce.number().int().min(0).optional(),
  })
  .strict();
export const projectIdParams = z.object({ project_id: projectId }).strict();
export const moduleNameParams = z.object({ name: z.string().regex(/^[a-z][a-z0-9_-]{0,63}$/) }).strict();

const limitQuery = (max: number) => z.coerce.number().int().min(1).max(max);
const offsetQuery = z.coerce.number().int().min(0);

export const listCommandsQuery = z
  .object({
    project_id: projectId.optional(),
    status: z
      .string()
      .regex(new RegExp(`^(${COMMAND_STATUSES.join('|')})(,(${COMMAND_STATUSES.join('|')}))*$`), {
        message: `expected a comma list of ${COMMAND_STATUSES.join(', ')}`,
      })
      .optional(),
    command_type: commandType.optional(),
    job_id: uuid.optional().meta({ description: 'Only the commands of this job' }),
    since: z.string().optional().meta({ description: 'created at or after: ISO time or ms since the epoch' }),
    until: z.string().optional().meta({ description: 'created before: ISO time or ms since the epoch' }),
    limit: limitQuery(MAX_LIST_LIMIT).optional(),
    offset: offsetQuery.optional(),
  })
  .strict();

export const pagingQuery = z
  .object({ limit: limitQuery(MAX_LIST_LIMIT).optional(), offset: offsetQuery.optional() })
  .strict();

export const listProjectsQuery = z
  .object({
    include_disabled: z.enum(['true', 'false']).optional(),
    limit: limitQuery(1000).optional(),
    offset: offsetQuery.optional(),
  })
  .strict();

export const createProjectBody = z
  .object({
    project_id: projectId.optional().meta({ description: 'Chosen id; a random one when left out' }),
    name: z.string().max(200).optional(),
    metadata: z.record(z.string(), z.unknown()).optional(),
  })
  .strict()
  .meta({ id: 'CreateProjectBody' });

export const rotateBody = z
  .object({
    overlap_s: z
      .number()
      .int()
      .min(0)
      .max(30 * 86_400)
      .optional()
      .meta({ description: 'How long the old secret keeps working' }),
  })
  .strict()
  .meta({ id: 'RotateBody' });

/** Bodies of POSTs that take none: empty or `{}`. */
export const emptyBody = z.object({}).strict();

// ─── responses ─────────────────────────────────────────────────────────────────────────────

export const errorSchema = z
  .object({
    error: z.object({
      code: z.string().meta({ description: 'Stable code: CMD_ERR_*, STATUS_ERR_*, AUTH_ERR_TOKEN, WEB_ERR_* …' }),
      message: z.string(),
      field: z.string().optional().meta({ description: 'The request field at fault (validation errors)' }),
    }),
  })
  .meta({ id: 'Error' });

const iso = z.string().meta({ description: 'ISO 8601 time' });
const isoOrNull = iso.nullable();

export const commandViewSchema = z
  .object({
    command_id: z.string(),
    project_id: z.string(),
    command_type: z.string(),
    module: z.string().nullable(),
    operator_id: z.string().nullable(),
    status: z.enum(COMMAND_STATUSES),
    is_sync: z.boolean(),
    offline_policy: z.enum(OFFLINE_POLICIES),
    attempts: z.number(),
    created_at: iso,
    sent_at: isoOrNull,
    acked_at: isoOrNull,
    started_at: isoOrNull,
    completed_at: isoOrNull,
    timeout_at: iso,
    schedule_at: isoOrNull.meta({ description: 'When a scheduled send starts (or started); null: sent at once' }),
    late_result: z.boolean().meta({ description: 'The result arrived after the command was marked timeout' }),
    error: z.string().nullable(),
    job_id: z.string().nullable().meta({ description: 'The job that sent the command, or null' }),
  })
  .meta({ id: 'CommandView' });

/** A dead-list item: the command, and why its outbox row went dead. */
export const deadCommandSchema = commandViewSchema
  .extend({
    last_error: z.string().nullable().meta({ description: 'Why the outbox row went dead (the last delivery error)' }),
  })
  .meta({ id: 'DeadCommand' });

const resultSchema = z.object({
  status: z.enum(['success', 'failure', 'timeout']),
  exit_code: z.number(),
  output: z.string(),
  error: z.string(),
  start_time: z.number(),
  end_time: z.number(),
  duration: z.number(),
  received_at: iso,
});

export const commandDetailSchema = commandViewSchema
  .extend({
    payload: z.unknown(),
    result: resultSchema.nullable(),
    timings: z.object({
      queue_ms: z.number().nullable().meta({ description: 'created → sent' }),
      delivery_ms: z.number().nullable().meta({ description: 'sent → acked' }),
      execution_ms: z.number().nullable().meta({ description: 'agent start → end' }),
      total_ms: z.number().nullable().meta({ description: 'created → completed' }),
    }),
  })
  .meta({ id: 'CommandDetail' });

const jobCount = (what: string) => z.number().meta({ description: what });

export const jobViewSchema = z
  .object({
    job_id: z.string(),
    status: z.enum(JOB_STATUSES),
    counts: z.object({
      total: jobCount('Targets of the job'),
      pending: jobCount('Not sent yet'),
      in_flight: jobCount('Sent, command not terminal'),
      completed: jobCount('Command completed'),
      failed: jobCount('Command failed, or refused by the command module (project offline, unknown, disabled)'),
      timeout: jobCount('Command timed out'),
      cancelled: jobCount('Never sent (job cancelled or aborted) or command cancelled'),
    }),
    targets: z.looseObject({}).meta({ description: 'The selector as given: project_ids, all or metadata' }),
    command_type: z.string(),
    payload: z.unknown(),
    timeout_ms: z.number().nullable(),
    offline_policy: z.enum(OFFLINE_POLICIES).nullable(),
    rollout: z.object({ max_in_flight: z.number(), max_per_minute: z.number().nullable() }),
    abort: z.object({ failure_ratio: z.number(), min_done: z.number() }).nullable(),
    schedule_at: isoOrNull,
    reason: z.string().nullable().meta({ description: 'Why the job ended as it did (an abort gives its ratio)' }),
    created_at: iso,
    started_at: isoOrNull,
    finished_at: isoOrNull,
  })
  .meta({ id: 'JobView' });

export const syncTimeoutSchema = z
  .object({
    error: errorSchema.shape.error,
    command_id: z.string(),
    command: commandDetailSchema.nullable(),
  })
  .meta({ id: 'SyncTimeout', description: 'The wait ran out; the command goes on: follow it by command_id' });

export const projectViewSchema = z
  .object({
    project_id: z.string(),
    name: z.string().nullable(),
    enabled: z.boolean(),
    state: z.enum(PRESENCE),
    state_since: isoOrNull,
    last_heartbeat_at: isoOrNull,
    instance_id: z.string().nullable(),
    agent_version: z.string().nullable(),
    metrics: z.record(z.string(), z.unknown()).nullable(),
    last_alert: z
      .looseObject({ level: z.enum(['info', 'warning', 'error', 'critical']), message: z.string() })
      .nullable(),
    created_at: iso,
    registration: z
      .record(z.string(), z.unknown())
      .nullable()
      .meta({ description: 'The accepted registration; node_version as the agent sent it (string or object)' }),
    rejected_uplinks: z.number().meta({ description: 'Uplinks of this project refused as malformed since start' }),
    last_rejected: z.object({ type: z.string().nullable(), code: z.string(), reason: z.string(), at: iso }).nullable(),
  })
  .meta({ id: 'ProjectView' });

export const createdProjectSchema = z
  .object({
    project_id: z.string(),
    secret: z.string().meta({ description: 'Shown this once' }),
    mqtt_username: z.string(),
    mqtt_password: z.string(),
  })
  .meta({ id: 'CreatedProject' });

export const statusChangedSchema = z.object({
  project_id: z.string(),
  state: z.enum(PRESENCE),
  previous: z.enum(PRESENCE),
  reason: z.string(),
  at: z.number(),
});

export const itemsOf = <T extends z.ZodType>(item: T) => z.object({ items: z.array(item) });
export const pageOf = <T extends z.ZodType>(item: T) =>
  z.object({ items: z.array(item), total: z.number(), limit: z.number().optional(), offset: z.number().optional() });

export const moduleInfoSchema = z
  .looseObject({
    name: z.string(),
    type: z.enum(['inner', 'worker', 'exe']),
    provider: z.string(),
    state: z.enum(['disabled', 'stopped', 'starting', 'running', 'stopping', 'failed']),
    started_at: isoOrNull,
    restarts: z.number(),
    failures: z.number(),
    last_error: z.string().nullable(),
    mailbox: z.looseObject({ queued: z.number(), handled: z.number(), dropped: z.number() }).nullable(),
  })
  .meta({ id: 'ModuleInfo' });

// ─── the outbox service's operator surface (core/services/outbox) ──────────────────────────

export const eventIdParams = z.object({ event_id: uuid }).strict();

export const outboxDeadQuery = z
  .object({
    route: z
      .string()
      .regex(/^[a-z][a-z0-9_-]{0,63}$/)
      .optional()
      .meta({ description: 'Only this route (a key under outbox.routes); all routes when left out' }),
    limit: limitQuery(500).optional(),
    offset: offsetQuery.optional(),
  })
  .strict();

export const outboxReplayBody = z
  .object({
    route: z
      .string()
      .regex(/^[a-z][a-z0-9_-]{0,63}$/)
      .optional()
      .meta({ description: 'Replay on this route only (default: every route the event died on)' }),
  })
  .strict();

export const deadEventSchema = z
  .object({
    event_id: z.string(),
    route: z.string(),
    event_type: z.string(),
    key: z.string(),
    attempts: z.number(),
    last_error: z.string().nullable(),
    created_at: z.string(),
    dead_at: z.string(),
    envelope: z
      .looseObject({
        event_id: z.string(),
        event_type: z.string(),
        key: z.string(),
        occurred_at: z.string(),
        source: z.string(),
        data: z.unknown(),
      })
      .meta({ description: 'What the route delivers: the webhook body, the MQTT payload' }),
  })
  .meta({ id: 'DeadEvent' });

export const replayedEventSchema = z
  .object({ event_id: z.string(), routes: z.array(z.string()) })
  .meta({ id: 'ReplayedEvent' });

export const readySchema = z.object({
  ready: z.boolean(),
  checks: z.record(z.string(), z.object({ ok: z.boolean(), reason: z.string().optional() })),
});

// ─── compile-time checks: the documented shapes are the bus contract's ─────────────────────
type Same<A, B> = [A] extends [B] ? ([B] extends [A] ? true : false) : false;
const same = <T extends true>(_: T) => undefined;
same<Same<z.output<typeof commandViewSchema>, CommandView>>(true);
same<Same<Omit<z.output<typeof commandDetailSchema>, 'payload'>, Omit<CommandDetail, 'payload'>>>(true);
same<Same<z.output<typeof createdProjectSchema>, CreatedProject>>(true);
same<Same<Omit<z.output<typeof jobViewSchema>, 'targets' | 'payload'>, Omit<JobView, 'targets' | 'payload'>>>(true);
same<Same<z.output<typeof statusChangedSchema>, StatusChangedEvent>>(true);
same<
  Same<
    Omit<z.output<typeof projectViewSchema>, 'last_alert' | 'metrics' | 'registration'>,
    Omit<ProjectView, 'last_alert' | 'metrics' | 'registration'>
  >
>(true);
same<Same<Omit<z.output<typeof deadEventSchema>, 'envelope'>, Omit<DeadEvent, 'envelope'>>>(true);
