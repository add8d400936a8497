/**
 * The outbox service's error codes, declared beside it (core/errors.ts `defineCodes`): their
 * HTTP and gRPC statuses and whether each is a caller's mistake.
 */
import { type CodesOf, defineCodes } from '../../errors.js';

export const OUTBOX_CODES = defineCodes({
  /** outbox.add with an event type the module did not declare: the business transaction rolls back */
  OUTBOX_ERR_UNDECLARED_EVENT: { http: 500, grpc: 'INTERNAL' },
  /** a declaration names an event type the catalogue does not know */
  OUTBOX_ERR_UNKNOWN_EVENT: { http: 500, grpc: 'INTERNAL' },
  /** a second module declared an event type another module already owns */
  OUTBOX_ERR_EVENT_OWNED: { http: 500, grpc: 'INTERNAL' },
  /** a declaration or an operator request is malformed (bad table name, bad route) */
  OUTBOX_ERR_INVALID: { http: 400, grpc: 'INVALID_ARGUMENT' },
  /** no dead event with that id (on that route) */
  OUTBOX_ERR_NOT_FOUND: { http: 404, grpc: 'NOT_FOUND' },
  /** a destination refused or failed a delivery (counted per route, retried) */
  OUTBOX_ERR_DELIVERY: { http: 500, grpc: 'INTERNAL' },
});

declare module '../../errors.js' {
  interface HubErrorCodes extends CodesOf<typeof OUTBOX_CODES> {}
}
