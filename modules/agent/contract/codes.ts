/**
 * The agent module's error codes (its command handlers and its broker session).
 * Each code's HTTP and gRPC status and whether it is a caller's mistake, declared once
 * (core/errors.ts `defineCodes`); REST, gRPC and the bus read them from here.
 */
import { type CodesOf, defineCodes } from '../../../core/errors.js';

export const AGENT_CODES = defineCodes({
  /** a handler failed while running a command */
  AGENT_ERR_HANDLER: { http: 500, grpc: 'INTERNAL' },
  /** the command asks for what the agent's allowlist does not allow */
  AGENT_ERR_NOT_ALLOWED: { http: 403, grpc: 'PERMISSION_DENIED' },
  /** not connected to the broker; the uplink waits in the queue */
  AGENT_ERR_OFFLINE: { http: 500, grpc: 'INTERNAL' },
  /** a command payload the handler cannot take */
  AGENT_ERR_INVALID: { http: 400, grpc: 'INVALID_ARGUMENT' },
});

declare module '../../../core/errors.js' {
  interface HubErrorCodes extends CodesOf<typeof AGENT_CODES> {}
}
