/**
 * Bus and validation errors → HTTP. The body is always `{ error: { code, message, field? } }`
 * with the stable code callers branch on (docs/conventions.md#one-errors-file-with-stable-codes); an error the hub does not know
 * (a driver error, a bug) is a 500 that says nothing of its internals.
 */
import type { ZodError } from 'zod';
import { type ErrorCode, errorCode, HubError } from '../../core/errors.js';

export interface ErrorBody {
  error: { code: string; message: string; field?: string };
}

// Our own codes look like AREA_ERR_WHAT; anything else (pg SQLSTATEs, ECONNRESET, TypeError…)
// is an internal detail and never reaches a caller.
const HUB_CODE = /^[A-Z]+_ERR_[A-Z_]+$/;

const EXACT: Record<string, number> = {
  PROTO_ERR_PROJECT_ID: 400,
  CMD_ERR_UNKNOWN_PROJECT: 404,
  HOST_ERR_UNKNOWN_MODULE: 404,
  STATUS_ERR_EXISTS: 409,
  CMD_ERR_PROJECT_OFFLINE: 409,
  CMD_ERR_NOT_CANCELLABLE: 409,
  CMD_ERR_IDEMPOTENCY_MISMATCH: 409,
  WEB_ERR_BODY_TOO_LARGE: 413,
  WEB_ERR_MEDIA_TYPE: 415,
  BUS_ERR_NO_RESPONDER: 503,
  BUS_ERR_REQUEST_TIMEOUT: 503,
  BUS_ERR_MAILBOX_FULL: 503,
  BUS_ERR_CLOSED: 503,
  HOST_ERR_STOPPING: 503,
  MQTT_ERR_OFFLINE: 503,
  // the database is down or restarting: the hub refuses rather than guess (issue 9)
  DB_ERR_UNAVAILABLE: 503,
  CMD_ERR_TIMEOUT: 504,
};

/** The HTTP status for a hub error code. */
export function httpStatusOf(code: string | undefined): number {
  if (!code || !HUB_CODE.test(code)) return 500;
  const exact = EXACT[code];
  if (exact) return exact;
  if (code.endsWith('_ERR_INVALID')) return 400;
  if (code.startsWith('AUTH_ERR_')) return 401;
  if (code.endsWith('_NOT_FOUND')) return 404;
  return 500;
}

/**
 * Seconds a caller is told to wait (`Retry-After`, RFC 9110 §10.2.3) after a 503: a database
 * back from a restart, a module restarting or a full mailbox all take about this long.
 */
export const RETRY_AFTER_S = 2;

/**
 * Status, body and extra headers for anything thrown while answering a request. Every 503 says
 * when to come back (`retry-after`).
 */
export function toHttpError(err: unknown): {
  status: number;
  body: ErrorBody;
  internal: boolean;
  headers: Record<string, string>;
} {
  const code = errorCode(err);
  const status = httpStatusOf(code);
  const headers: Record<string, string> = status === 503 ? { 'retry-after': String(RETRY_AFTER_S) } : {};
  if (!code || !HUB_CODE.test(code)) {
    return {
      status,
      body: { error: { code: 'WEB_ERR_INTERNAL', message: 'internal error' } },
      internal: true,
      headers,
    };
  }
  const message = err instanceof Error ? err.message : String((err as { message?: unknown }).message ?? code);
  const details = (err as { details?: Record<string, unknown> }).details;
  const field = typeof details?.field === 'string' ? details.field : undefined;
  return {
    status,
    body: { error: { code, message, ...(field ? { field } : {}) } },
    internal: status >= 500,
    headers,
  };
}

/**
 * A zod failure as the hub's validation error: the first issue, its field named (an unknown key
 * names the key itself), and a message that starts with the field.
 */
export function fromZod(code: ErrorCode, err: ZodError, where: 'body' | 'query' | 'params' | 'headers'): HubError {
  const issue = err.issues[0];
  let field = issue.path.map(String).join('.');
  let message = issue.message;
  if (issue.code === 'unrecognized_keys') {
    const keys = (issue as { keys: string[] }).keys;
    field = [...issue.path.map(String), keys[0]].join('.');
    message = `unknown field${keys.length > 1 ? 's' : ''} ${keys.map((k) => JSON.stringify(k)).join(', ')}`;
  }
  if (!field) field = `(${where})`;
  return new HubError(code, `${field}: ${message}`, { field, where });
}
