/**
 * The jobs domain's error codes (one command to many projects, modules/jobs).
 * Each code's HTTP and gRPC status declared once (core/errors.ts `defineCodes`); REST, gRPC and
 * the bus read them from here. An Idempotency-Key reused with another body answers the command
 * domain's CMD_ERR_IDEMPOTENCY_MISMATCH, as the issue names it for /jobs too.
 */
import { type CodesOf, defineCodes } from '../../../core/errors.js';

export const JOB_CODES = defineCodes({
  /** a request field is invalid; `details.field` names it and the message starts with it */
  JOB_ERR_INVALID: { http: 400, grpc: 'INVALID_ARGUMENT' },
  JOB_ERR_NOT_FOUND: { http: 404, grpc: 'NOT_FOUND' },
  /** the targets name a project that does not exist */
  JOB_ERR_UNKNOWN_PROJECT: { http: 404, grpc: 'NOT_FOUND' },
  /** the targets match no project now */
  JOB_ERR_NO_TARGETS: { http: 409, grpc: 'FAILED_PRECONDITION' },
  /** the job has finished (completed, aborted or cancelled) */
  JOB_ERR_NOT_CANCELLABLE: { http: 409, grpc: 'FAILED_PRECONDITION' },
});

declare module '../../../core/errors.js' {
  interface HubErrorCodes extends CodesOf<typeof JOB_CODES> {}
}
