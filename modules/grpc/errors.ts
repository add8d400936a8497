import { Metadata, type ServiceError, status } from '@grpc/grpc-js';
import { errorCode, HubError } from '../../core/errors.js';

/** Seconds to wait before retrying an UNAVAILABLE call: the REST API's Retry-After, as metadata. */
const RETRY_AFTER_S = 2;

/** The hub's error codes as gRPC status codes (see the header of exchange_hub.proto). */
const CODE_TO_STATUS: Readonly<Record<string, status>> = {
  CMD_ERR_INVALID: status.INVALID_ARGUMENT,
  STATUS_ERR_INVALID: status.INVALID_ARGUMENT,
  PROTO_ERR_PROJECT_ID: status.INVALID_ARGUMENT,
  PROTO_ERR_JSON: status.INVALID_ARGUMENT,
  CMD_ERR_NOT_FOUND: status.NOT_FOUND,
  OUTBOX_ERR_NOT_FOUND: status.NOT_FOUND,
  OUTBOX_ERR_INVALID: status.INVALID_ARGUMENT,
  CMD_ERR_UNKNOWN_PROJECT: status.NOT_FOUND,
  STATUS_ERR_NOT_FOUND: status.NOT_FOUND,
  HOST_ERR_UNKNOWN_MODULE: status.NOT_FOUND,
  CMD_ERR_PROJECT_OFFLINE: status.FAILED_PRECONDITION,
  CMD_ERR_NOT_CANCELLABLE: status.FAILED_PRECONDITION,
  STATUS_ERR_EXISTS: status.ALREADY_EXISTS,
  // the idempotency key names a command another request made
  CMD_ERR_IDEMPOTENCY_MISMATCH: status.ALREADY_EXISTS,
  CMD_ERR_TIMEOUT: status.DEADLINE_EXCEEDED,
  AUTH_ERR_TOKEN: status.UNAUTHENTICATED,
  // the module behind the call is not running (restarting, disabled) or the hub is stopping
  BUS_ERR_NO_RESPONDER: status.UNAVAILABLE,
  BUS_ERR_CLOSED: status.UNAVAILABLE,
  BUS_ERR_REQUEST_TIMEOUT: status.UNAVAILABLE,
  HOST_ERR_STOPPING: status.UNAVAILABLE,
  // the database is down or restarting (issue 9): retry, as for any UNAVAILABLE
  DB_ERR_UNAVAILABLE: status.UNAVAILABLE,
  // RestartModule: the module failed to start again (the host retries it with backoff). The
  // message is the host's own, the same text ListModules shows as last_error, so it is kept.
  HOST_ERR_START_FAILED: status.INTERNAL,
  HOST_ERR_START_TIMEOUT: status.INTERNAL,
  HOST_ERR_PORT_IN_USE: status.INTERNAL,
  BUS_ERR_MAILBOX_FULL: status.RESOURCE_EXHAUSTED,
  GRPC_ERR_SLOW_STREAM: status.RESOURCE_EXHAUSTED,
};

/**
 * A gRPC error for any thrown value. The status code comes from the hub's code; the hub's code
 * itself travels in trailing metadata `error-code` so callers can branch on it. Unknown failures
 * become INTERNAL without their message (it may hold internals); the log keeps the detail.
 */
export function toServiceError(err: unknown, extra?: Record<string, string>): Partial<ServiceError> {
  const code = errorCode(err);
  const mapped = code ? CODE_TO_STATUS[code] : undefined;
  const md = new Metadata();
  md.set('error-code', code ?? 'INTERNAL');
  for (const [k, v] of Object.entries(extra ?? {})) md.set(k, v);
  if (mapped === undefined) return { code: status.INTERNAL, details: 'internal error', metadata: md };
  if (mapped === status.UNAVAILABLE) md.set('retry-after', String(RETRY_AFTER_S));
  return { code: mapped, details: (err as Error).message, metadata: md };
}

/** Whether the error is one the caller caused or expects (logged at debug), not a fault of ours. */
export function isExpected(err: unknown): boolean {
  const code = errorCode(err);
  return code !== undefined && code in CODE_TO_STATUS;
}

/** INVALID_ARGUMENT naming the field, in the command module's format (`field: reason`). */
export function invalidArg(field: string, reason: string): HubError {
  return new HubError('CMD_ERR_INVALID', `${field}: ${reason}`, { field });
}
