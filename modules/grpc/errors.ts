import { Metadata, type ServiceError, status } from '@grpc/grpc-js';
import { codeSpec, errorCode, HubError } from '../../core/errors.js';
// every domain's codes, so a code thrown by a module this process does not run still maps
import '../contracts.js';

/** Seconds to wait before retrying an UNAVAILABLE call: the REST API's Retry-After, as metadata. */
const RETRY_AFTER_S = 2;

/**
 * The gRPC status for a hub error code: the one its domain declares (`contract/codes.ts`, the
 * same declaration REST reads; see the header of exchange_hub.proto). INTERNAL for anything else.
 */
export function grpcStatusOf(code: string | undefined): status {
  const spec = codeSpec(code);
  return spec ? status[spec.grpc] : status.INTERNAL;
}

/**
 * A gRPC error for any thrown value. The status code comes from the hub's code; the hub's code
 * itself travels in trailing metadata `error-code` so callers can branch on it. Failures without
 * a declared code become INTERNAL without their message (it may hold internals); the log keeps
 * the detail.
 */
export function toServiceError(err: unknown, extra?: Record<string, string>): Partial<ServiceError> {
  const code = errorCode(err);
  const md = new Metadata();
  md.set('error-code', code ?? 'INTERNAL');
  for (const [k, v] of Object.entries(extra ?? {})) md.set(k, v);
  if (!codeSpec(code)) return { code: status.INTERNAL, details: 'internal error', metadata: md };
  const mapped = grpcStatusOf(code);
  if (mapped === status.UNAVAILABLE) md.set('retry-after', String(RETRY_AFTER_S));
  return { code: mapped, details: (err as Error).message, metadata: md };
}

/**
 * Whether the error is one the caller caused or expects (logged at debug): a declared code
 * answered with a status other than INTERNAL. The rest is a fault of ours.
 */
export function isExpected(err: unknown): boolean {
  const spec = codeSpec(errorCode(err));
  return spec !== undefined && spec.grpc !== 'INTERNAL';
}

/** INVALID_ARGUMENT naming the field, in the command module's format (`field: reason`). */
export function invalidArg(field: string, reason: string): HubError {
  return new HubError('CMD_ERR_INVALID', `${field}: ${reason}`, { field });
}
