/**
 * Codes every module shares: the MQTT wire protocol's (PROTO_, protocol.ts and the bridge's verification step) and the callers' token (AUTH_, web and grpc).
 * Each code's HTTP and gRPC status and whether it is a caller's mistake, declared once
 * (core/errors.ts `defineCodes`); REST, gRPC and the bus read them from here.
 */
import { type CodesOf, defineCodes } from '../../../core/errors.js';

export const SHARED_CODES = defineCodes({
  // wire protocol: an uplink the bridge refuses is counted by code, never answered
  /** not JSON, not UTF-8, not an object; over gRPC a JSON text field that does not parse */
  PROTO_ERR_JSON: { http: 400, grpc: 'INVALID_ARGUMENT' },
  PROTO_ERR_SCHEMA: { http: 500, grpc: 'INTERNAL' },
  PROTO_ERR_TOO_LARGE: { http: 500, grpc: 'INTERNAL' },
  PROTO_ERR_SIGNATURE: { http: 500, grpc: 'INTERNAL' },
  PROTO_ERR_CLOCK: { http: 500, grpc: 'INTERNAL' },
  PROTO_ERR_REPLAY: { http: 500, grpc: 'INTERNAL' },
  PROTO_ERR_UNKNOWN_TYPE: { http: 500, grpc: 'INTERNAL' },
  /** a project id that cannot be one (it becomes an MQTT topic level) */
  PROTO_ERR_PROJECT_ID: { http: 400, grpc: 'INVALID_ARGUMENT' },
  PROTO_ERR_UNSAFE_VALUE: { http: 500, grpc: 'INTERNAL' },
  // the bridge's verification step (mqtt-bridge/verify.ts)
  PROTO_ERR_UNKNOWN_PROJECT: { http: 500, grpc: 'INTERNAL' },
  PROTO_ERR_PROJECT_DISABLED: { http: 500, grpc: 'INTERNAL' },
  PROTO_ERR_UNSIGNED: { http: 500, grpc: 'INTERNAL' },
  PROTO_ERR_UNVERIFIABLE: { http: 500, grpc: 'INTERNAL' },
  // callers of REST and gRPC
  /** no bearer token, or not a configured one */
  AUTH_ERR_TOKEN: { http: 401, grpc: 'UNAUTHENTICATED' },
  /**
   * a configured token whose role does not grant the operation's action, or whose `projects` do
   * not include the project asked for (one answer for both: a disallowed project is not told apart
   * from an unknown one)
   */
  AUTH_ERR_FORBIDDEN: { http: 403, grpc: 'PERMISSION_DENIED' },
  /** start-up refusal: an interface operation (REST route, gRPC method) declares no access (permissions.ts) */
  AUTH_ERR_UNDECLARED: { http: 500, grpc: 'INTERNAL' },
});

declare module '../../../core/errors.js' {
  interface HubErrorCodes extends CodesOf<typeof SHARED_CODES> {}
}
