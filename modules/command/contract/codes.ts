/**
 * The command domain's error codes.
 * Each code's HTTP and gRPC status and whether it is a caller's mistake, declared once
 * (core/errors.ts `defineCodes`); REST, gRPC and the bus read them from here.
 */
import { type CodesOf, defineCodes } from '../../../core/errors.js';

export const COMMAND_CODES = defineCodes({
  /** a request field is invalid; `details.field` names it and the message starts with it */
  CMD_ERR_INVALID: { http: 400, grpc: 'INVALID_ARGUMENT' },
  CMD_ERR_NOT_FOUND: { http: 404, grpc: 'NOT_FOUND' },
  /** offline_policy fail and the project is not online, or it is disabled */
  CMD_ERR_PROJECT_OFFLINE: { http: 409, grpc: 'FAILED_PRECONDITION' },
  CMD_ERR_UNKNOWN_PROJECT: { http: 404, grpc: 'NOT_FOUND' },
  CMD_ERR_NOT_CANCELLABLE: { http: 409, grpc: 'FAILED_PRECONDITION' },
  /** a sync caller's wait ran out; the command goes on */
  CMD_ERR_TIMEOUT: { http: 504, grpc: 'DEADLINE_EXCEEDED' },
  /** the idempotency key names a command another request made */
  CMD_ERR_IDEMPOTENCY_MISMATCH: { http: 409, grpc: 'ALREADY_EXISTS' },
});

declare module '../../../core/errors.js' {
  interface HubErrorCodes extends CodesOf<typeof COMMAND_CODES> {}
}
