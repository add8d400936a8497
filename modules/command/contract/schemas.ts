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

// defined in topics.ts, which imports no code: the CLI checks a --status with it without loading zod
// (test/bootstrap/cli-startup.test.ts)
export { COMMAND_STATUSES } from './topics.js';

/** The states a command ends in. */
export const TERMINAL_STATUSES: ReadonlySet<string> = new Set<CommandStatus>([
  'completed',
  'failed',
  'timeout',
  'cancelled',
]);

/** What a send does when its project is not online. */
export const OFFLINE_POLICIES = ['fail', 'queue'] as const satisfies readonly OfflinePolicy[];

/** The longest `module` / `operator_id` label. */
export const MAX_LABEL = 200;
/** The longest a queued command may wait for its project (30 days). */
export const MAX_QUEUE_TTL_MS = 30 * 24 * 3600 * 1000;
/**
 * `schedule_at`: an ISO 8601 date and time WITH its zone (`Z` or ±hh:mm), so the instant is never
 * read in the hub's local time. Seconds and fractions are optional.
 */
export const SCHEDULE_AT_RE =
  /^\d{4}-(0[1-9]|1[0-2])-(0[1-9]|[12]\d|3[01])T([01]\d|2[0-3]):[0-5]\d(:[0-5]\d(\.\d{1,9})?)?(Z|[+-]([01]\d|2[0-3]):[0-5]\d)$/i;
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

/** A time with its zone that Date can read (the regex alone lets 2026-02-31 through). */
const scheduleAt = z.string({ error: expected('expected an ISO 8601 time with zone') }).check((ctx) => {
  if (!SCHEDULE_AT_RE.test(ctx.value) || !validCalendarDate(ctx.value)) {
    ctx.issues.push({
      code: 'custom',
      message: `expected an ISO 8601 time with zone (e.g. 2026-12-24T18:00:00Z), got ${shown(ctx.value)}`,
      input: ctx.value,
    });
  }
});

/** True when the date part names a real day (Date.parse rolls 02-31 over to March). */
function validCalendarDate(text: string): boolean {
  const [y, m, d] = text.slice(0, 10).split('-').map(Number);
  const day = new Date(Date.UTC(y, m - 1, d));
  return (
    day.getUTCFullYear() === y &&
    day.getUTCMonth() === m - 1 &&
    day.getUTCDate() === d &&
    Number.isFinite(Date.parse(text))
  );
}

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
    schedule_at: scheduleAt.optional().meta({
      description:
        'Async sends only: start the command at this time (ISO 8601 with zone, e.g. 2026-12-24T18:00:00Z). Until then ' +
        'it is `scheduled` and can be cancelled; at its time it is sent, or queued/failed per offline_policy, and ' +
        'its timeout counts from then. A time already past starts it at once. At most the command module’s ' +
        'max_schedule_ahead_ms ahead (default 30 days); refused on /command/sync.',
    }),
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
