/**
 * The status domain's error codes (projects, presence, credentials).
 * Each code's HTTP and gRPC status and whether it is a caller's mistake, declared once
 * (core/errors.ts `defineCodes`); REST, gRPC and the bus read them from here.
 */
import { type CodesOf, defineCodes } from '../../../core/errors.js';

export const STATUS_CODES = defineCodes({
  STATUS_ERR_INVALID: { http: 400, grpc: 'INVALID_ARGUMENT' },
  STATUS_ERR_NOT_FOUND: { http: 404, grpc: 'NOT_FOUND' },
  /** a project with that id exists already */
  STATUS_ERR_EXISTS: { http: 409, grpc: 'ALREADY_EXISTS' },
});

declare module '../../../core/errors.js' {
  interface HubErrorCodes extends CodesOf<typeof STATUS_CODES> {}
}
