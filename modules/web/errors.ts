/**
 * Bus and validation errors → HTTP. The body is always `{ error: { code, message, field? } }`
 * with the stable code callers branch on (docs/conventions.md#one-errors-file-with-stable-codes); an error the hub does not know
 * (a driver error, a bug) is a 500 that says nothing of its internals.
 */
import { codeSpec, errorCode, isHubCodeShape } from '../../core/errors.js';
// every domain's codes, so a code thrown by a module this process does not run still maps
import '../contracts.js';

export interface ErrorBody {
  error: { code: string; message: string; field?: string };
}

/**
 * The HTTP status for a hub error code: the one its domain declares (`contract/codes.ts`). A code
 * no domain declares, or anything that is not a hub code (pg SQLSTATEs, ECONNRESET, TypeError…),
 * is a 500.
 */
export function httpStatusOf(code: string | undefined): number {
  return codeSpec(code)?.http ?? 500;
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
  // anything not shaped like a hub code is an internal detail and never reaches a caller
  if (!isHubCodeShape(code)) {
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

/** A zod failure as the hub's validation error (one rule for every interface: shared/contract/schemas.ts). */
export { fromZod } from '../shared/contract/schemas.js';
