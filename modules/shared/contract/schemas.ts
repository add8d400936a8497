/**
 * Request fields every interface shares (project ids, UUIDs), as zod schemas whose messages say
 * what was expected and what came, and the one way a zod failure becomes a hub error. REST, gRPC
 * and the modules validate with these, so a rule and its message are written once.
 */
import { z } from 'zod';
import { type ErrorCode, HubError } from '../../../core/errors.js';
import { COMMAND_TYPE_RE, isUuid, isValidProjectId, MAX_PROJECT_ID_BYTES, UUID_RE } from '../protocol.js';

/**
 * A command's state names (docs/wire-protocol.md) and offline policies. The command domain owns
 * them; they are declared here because the jobs contract names them too and a contract imports no
 * other contract. modules/command/contract/topics.ts re-exports them.
 */
export type CommandStatus =
  | 'scheduled'
  | 'pending'
  | 'sent'
  | 'acked'
  | 'completed'
  | 'failed'
  | 'timeout'
  | 'cancelled';
export type OfflinePolicy = 'fail' | 'queue';

/** A value as a message shows it: JSON, cut at 64 characters. */
export function shown(v: unknown): string {
  let s: string;
  try {
    s = JSON.stringify(v) ?? String(v);
  } catch {
    s = typeof v;
  }
  return s.length > 64 ? `${s.slice(0, 61)}...` : s;
}

/** A message for a field that is absent, or `what` plus the value that came. */
export const expected =
  (what: string) =>
  (iss: { input?: unknown }): string =>
    iss.input === undefined ? 'required' : `${what}, got ${shown(iss.input)}`;

const projectIdMessage = expected(
  `expected a project id (1-${MAX_PROJECT_ID_BYTES} bytes; no / + # NUL or control characters, not starting with $)`,
);

/** A project id (protocol.ts `isValidProjectId`: it becomes one MQTT topic level). */
export const projectId = z
  .string({ error: projectIdMessage })
  .max(MAX_PROJECT_ID_BYTES, { error: projectIdMessage })
  .refine(isValidProjectId, { error: projectIdMessage })
  .meta({ description: 'Project id: 1-128 UTF-8 bytes, no `/`, `+`, `#`, NUL or control characters' });

// the wire's UUID rule (protocol/wire.ts), for the contracts that import it from here
export { isUuid, UUID_RE };

/** A UUID, either case; the module that stores it lower-cases it. */
export const uuid = z
  .string({ error: expected('expected a UUID') })
  .regex(UUID_RE, { error: expected('expected a UUID') });

/** Where a request's part came from, named when a failure has no field (`(body): …`). */
export type RequestPart = 'body' | 'query' | 'params' | 'headers' | 'request';

/**
 * The first issue of a zod failure as a field and a message: an unknown key names the key
 * itself, and a failure of the whole value names the part (`(body)`).
 */
export function firstIssue(err: z.ZodError, where: RequestPart): { field: string; message: string } {
  const issue = err.issues[0];
  let field = issue.path.map(String).join('.');
  let message = issue.message;
  if (issue.code === 'unrecognized_keys') {
    const keys = (issue as { keys: string[] }).keys;
    field = [...issue.path.map(String), keys[0]].join('.');
    message = `unknown field${keys.length > 1 ? 's' : ''} ${keys.map((k) => JSON.stringify(k)).join(', ')}`;
  }
  return { field: field || `(${where})`, message };
}

/** A zod failure as the hub's validation error, its message starting with the field (`timeout_ms: …`). */
export function fromZod(code: ErrorCode, err: z.ZodError, where: RequestPart): HubError {
  const { field, message } = firstIssue(err, where);
  return new HubError(code, `${field}: ${message}`, { field, where });
}

/**
 * Parses `value` with `schema`, or throws what `invalid` makes of the first field at fault (each
 * domain's own error: the command module's `CMD_ERR_INVALID` with `details.field`).
 */
export function parseOr<S extends z.ZodType>(
  schema: S,
  value: unknown,
  invalid: (field: string, reason: string) => HubError,
): z.output<S> {
  const res = schema.safeParse(value);
  if (res.success) return res.data;
  const { field, message } = firstIssue(res.error, 'request');
  throw invalid(field, message);
}

/** A command type (protocol.ts COMMAND_TYPE_RE), as commands and jobs take it. */
export const commandType = z
  .string({ error: expected(`must match ${COMMAND_TYPE_RE}`) })
  .regex(COMMAND_TYPE_RE, { error: expected(`must match ${COMMAND_TYPE_RE}`) });

/** Longest idempotency key accepted (the common limit of idempotency-key schemes). */
export const MAX_IDEMPOTENCY_KEY = 255;
/** Printable ASCII (an HTTP header value carries it unchanged), no space at either end (HTTP trims those). */
const IDEMPOTENCY_KEY_RE = /^[\x21-\x7e](?:[\x20-\x7e]*[\x21-\x7e])?$/;

/** A retry key (REST header `Idempotency-Key`, gRPC and bus field `idempotency_key`) of sends and jobs. */
export const idempotencyKey = z
  .string({ error: (iss) => `expected a string, got ${typeof iss.input}` })
  .min(1, { error: 'must not be empty' })
  .max(MAX_IDEMPOTENCY_KEY, {
    error: (iss) => `longer than ${MAX_IDEMPOTENCY_KEY} characters (${(iss.input as string).length})`,
  })
  .regex(IDEMPOTENCY_KEY_RE, {
    error: 'only printable ASCII (0x20-0x7E) is allowed, with no space at either end',
  });
