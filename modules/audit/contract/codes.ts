/**
 * The audit domain's error codes.
 * Each code's HTTP and gRPC status and whether it is a caller's mistake, declared once
 * (core/errors.ts `defineCodes`); REST, gRPC and the bus read them from here.
 */
import { type CodesOf, defineCodes } from '../../../core/errors.js';

export const AUDIT_CODES = defineCodes({
  /** a filter of the audit listing the caller got wrong; `field` names it */
  AUDIT_ERR_INVALID: { http: 400, grpc: 'INVALID_ARGUMENT' },
  /**
   * An operator action was done but its audit record could not be written (the audit module did
   * not answer, or its database refused): the caller is told, with the action's target ids, instead
   * of a success with no record (README "Audit trail").
   */
  AUDIT_ERR_UNAVAILABLE: { http: 503, grpc: 'UNAVAILABLE' },
});

declare module '../../../core/errors.js' {
  interface HubErrorCodes extends CodesOf<typeof AUDIT_CODES> {}
}
