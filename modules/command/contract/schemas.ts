/**
 * The command domain's requests, as the one schema every interface validates a send with: REST
 * (web/schemas.ts builds its bodies from `sendFields`), gRPC (grpc/convert.ts maps the proto
 * message onto `sendRequestSchema`) and the command module itself (validate.ts, with its
 * configured limits). The statuses, the policies and the bounds are defined here once.
 */
import { z } from 'zod';
import {
  commandType,
  expected,
  idempotencyKey,
  MAX_IDEMPOTENCY_KEY,
  projectId,
  shown,
  uuid,
} from '../../shared/contract/schemas.js';
import { unsafeTextProblem } from '../../shared/sanitize.js';
import type { CommandStatus, OfflinePolicy } from './topics.js';

/** Every state of a command, in the order it can go through them. */
export const COMMAND_STATUSES = [
  'pending',
  'sent',
  'acked',
  'completed',
  'failed',
  'timeout',
  'cancelled',
] as const satisfies readonly CommandStatus[];

/** What a send does when its project is not online. */
export const OFFLINE_POLICIES = ['fail', 'queue'] as const satisfies readonly OfflinePolicy[];

/** The longest `module` / `operator_id` label. */
export const MAX_LABEL = 200;
/** The longest a queued command may wait for its project (30 days). */
export const MAX_QUEUE_TTL_MS = 30 * 24 * 3600 * 1000;
/** Page sizes of the command lists. */
export const MAX_LIST_LIMIT = 500;
export const DEFAULT_LIST_LIMIT = 50;

/** The bounds that depend on the command module's config; an interface without it uses the widest. */
export interface SendLimits {
  /** Largest `timeout_ms` a caller may ask for (command config `max_timeout_ms`). */
  max_timeout_ms: number;
}
const WIDEST: SendLimits = { max_timeout_ms: Number.MAX_SAFE_INTEGER };

/** A whole number of milliseconds from 1 to `max`. */
const msUpTo = (max: number) => {
  const bounds = max === Number.MAX_SAFE_INTEGER ? 'must be at least 1' : `must be between 1 and ${max}`;
  const range = (iss: { input?: unknown }) => `${bounds}, got ${shown(iss.input)}`;
  return z
    .number({ error: expected('expected an integer') })
    .int({ error: expected('expected an integer') })
    .positive({ error: range })
    .max(max, { error: range });
};

/** A free-text label: at most MAX_LABEL characters, nothing jsonb cannot store. */
const label = z
  .string({ error: expected('expected a string') })
  .max(MAX_LABEL, { error: `longer than ${MAX_LABEL} characters` })
  .check((ctx) => {
    const problem = unsafeTextProblem(ctx.value);
    if (problem) ctx.issues.push({ code: 'custom', message: problem, input: ctx.value });
  });

// The command type and the retry key rules are shared with the jobs domain (a job sends commands
// and takes an Idempotency-Key too): defined once in modules/shared/contract/schemas.ts.
export { commandType, idempotencyKey, MAX_IDEMPOTENCY_KEY };

/** What a caller of any interface sets on a send. REST takes exactly these (its body is strict). */
export function sendFields(limits: SendLimits = WIDEST) {
  return {
    project_id: projectId,
    command_type: commandType,
    payload: z.unknown().optional().meta({ description: 'Any JSON; an empty object when left out' }),
    timeout_ms: msUpTo(limits.max_timeout_ms)
      .optional()
      .meta({ description: 'Execution timeout (default: the command module’s)' }),
    module: label.optional(),
    operator_id: label.optional(),
    offline_policy: z
      .enum(OFFLINE_POLICIES, { error: expected(`expected ${OFFLINE_POLICIES.map((p) => `"${p}"`).join(' or ')}`) })
      .optional()
      .meta({
        description: '`fail` (default): 409 when the project is not online; `queue`: wait for it up to queue_ttl_ms',
      }),
    queue_ttl_ms: msUpTo(MAX_QUEUE_TTL_MS).optional(),
  };
}

/**
 * COMMAND.send's request (SendCommandRequest), as gRPC and the bus carry it: the caller's fields
 * plus those a waiter or a retrying caller sets. Other keys are ignored.
 */
export function sendRequestSchema(limits: SendLimits = WIDEST) {
  return z.object({
    ...sendFields(limits),
    /** a sync caller's waiter picks the id first, so it listens before the send */
    command_id: uuid.optional(),
    is_sync: z.boolean({ error: expected('expected a boolean') }).optional(),
    idempotency_key: idempotencyKey.optional(),
    /** set by the jobs module only: the job the command belongs to (not a REST field) */
    job_id: uuid.optional(),
  });
}

export type SendRequest = z.output<ReturnType<typeof sendRequestSchema>>;
