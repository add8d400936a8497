/**
 * The web module's error codes (REST, WebSocket, static files).
 * Each code's HTTP and gRPC status and whether it is a caller's mistake, declared once
 * (core/errors.ts `defineCodes`); REST, gRPC and the bus read them from here.
 */
import { type CodesOf, defineCodes } from '../../../core/errors.js';

export const WEB_CODES = defineCodes({
  /** a path, query, header or body the web module itself refuses; `field` names it */
  WEB_ERR_INVALID: { http: 400, grpc: 'INVALID_ARGUMENT' },
  WEB_ERR_NOT_FOUND: { http: 404, grpc: 'NOT_FOUND' },
  WEB_ERR_BODY_TOO_LARGE: { http: 413, grpc: 'RESOURCE_EXHAUSTED' },
  WEB_ERR_MEDIA_TYPE: { http: 415, grpc: 'INVALID_ARGUMENT' },
  /** anything the hub has no code for: said without its internals */
  WEB_ERR_INTERNAL: { http: 500, grpc: 'INTERNAL' },
  /** a WebSocket message the feed cannot take (answered on the socket, op `error`) */
  WEB_ERR_WS_MESSAGE: { http: 400, grpc: 'INVALID_ARGUMENT' },
  /** a plain HTTP request to the WebSocket path */
  WEB_ERR_UPGRADE_REQUIRED: { http: 426, grpc: 'FAILED_PRECONDITION' },
});

declare module '../../../core/errors.js' {
  interface HubErrorCodes extends CodesOf<typeof WEB_CODES> {}
}
