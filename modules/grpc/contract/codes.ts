/**
 * The grpc module's error codes.
 * Each code's HTTP and gRPC status and whether it is a caller's mistake, declared once
 * (core/errors.ts `defineCodes`); REST, gRPC and the bus read them from here.
 */
import { type CodesOf, defineCodes } from '../../../core/errors.js';

export const GRPC_CODES = defineCodes({
  /** a WatchEvents stream fell too far behind and was cut; the caller resumes it */
  GRPC_ERR_SLOW_STREAM: { http: 503, grpc: 'RESOURCE_EXHAUSTED' },
});

declare module '../../../core/errors.js' {
  interface HubErrorCodes extends CodesOf<typeof GRPC_CODES> {}
}
