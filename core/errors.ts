/**
 * One errors file with stable codes (docs/conventions.md#one-errors-file-with-stable-codes). Callers branch on `code`, never on the
 * message text or on `instanceof` (classes are not identical across worker/process boundaries).
 *
 * @example
 *   throw new HubError('HOST_ERR_UNKNOWN_MODULE', 'no provider named "x"', { path: 'modules.x.provider' });
 */
export type ErrorCode =
  // host and config
  | 'HOST_ERR_CONFIG_READ'
  | 'HOST_ERR_CONFIG_YAML'
  | 'HOST_ERR_CONFIG_INVALID'
  | 'HOST_ERR_CONFIG_ENV'
  | 'HOST_ERR_UNKNOWN_MODULE'
  | 'HOST_ERR_UNKNOWN_TYPE'
  | 'HOST_ERR_DEPENDENCY'
  | 'HOST_ERR_START_TIMEOUT'
  | 'HOST_ERR_START_FAILED'
  | 'HOST_ERR_STOPPING'
  | 'HOST_ERR_PORT_IN_USE'
  // bus
  | 'BUS_ERR_REQUEST_TIMEOUT'
  | 'BUS_ERR_NO_RESPONDER'
  | 'BUS_ERR_MAILBOX_FULL'
  | 'BUS_ERR_BAD_TOPIC'
  | 'BUS_ERR_HANDLER'
  | 'BUS_ERR_CLOSED'
  // services
  | 'DB_ERR_UNKNOWN_DATABASE'
  | 'DB_ERR_CONFIG'
  | 'DB_ERR_MIGRATION'
  | 'DB_ERR_DATA_DIR_LOCKED'
  /** The database could not be reached (down, restarting, no connection); worth a retry: 503. */
  | 'DB_ERR_UNAVAILABLE'
  // wire protocol
  | 'PROTO_ERR_JSON'
  | 'PROTO_ERR_SCHEMA'
  | 'PROTO_ERR_TOO_LARGE'
  | 'PROTO_ERR_SIGNATURE'
  | 'PROTO_ERR_CLOCK'
  | 'PROTO_ERR_REPLAY'
  | 'PROTO_ERR_UNKNOWN_TYPE'
  | 'PROTO_ERR_PROJECT_ID'
  | 'PROTO_ERR_UNSAFE_VALUE'
  // the bridge's verification step (mqtt-bridge/verify.ts)
  | 'PROTO_ERR_UNKNOWN_PROJECT'
  | 'PROTO_ERR_PROJECT_DISABLED'
  | 'PROTO_ERR_UNSIGNED'
  | 'PROTO_ERR_UNVERIFIABLE'
  // domain modules
  | 'CMD_ERR_INVALID'
  | 'CMD_ERR_NOT_FOUND'
  | 'CMD_ERR_PROJECT_OFFLINE'
  | 'CMD_ERR_UNKNOWN_PROJECT'
  | 'CMD_ERR_NOT_CANCELLABLE'
  | 'CMD_ERR_TIMEOUT'
  | 'CMD_ERR_IDEMPOTENCY_MISMATCH'
  | 'STATUS_ERR_INVALID'
  | 'STATUS_ERR_NOT_FOUND'
  | 'STATUS_ERR_EXISTS'
  | 'AGENT_ERR_HANDLER'
  | 'AGENT_ERR_NOT_ALLOWED'
  | 'AGENT_ERR_OFFLINE'
  | 'AGENT_ERR_INVALID'
  | 'AUTH_ERR_TOKEN'
  | 'WEB_ERR_INVALID'
  | 'WEB_ERR_NOT_FOUND'
  | 'WEB_ERR_BODY_TOO_LARGE'
  | 'WEB_ERR_MEDIA_TYPE'
  | 'WEB_ERR_INTERNAL'
  | 'WEB_ERR_WS_MESSAGE'
  | 'WEB_ERR_UPGRADE_REQUIRED'
  | 'MQTT_ERR_OFFLINE'
  | 'MQTT_ERR_PUBLISH'
  | 'MQTT_ERR_INVALID'
  | 'GRPC_ERR_SLOW_STREAM'
  // the outbox service (core/services/outbox)
  /** outbox.add with an event type the module did not declare: the business transaction rolls back */
  | 'OUTBOX_ERR_UNDECLARED_EVENT'
  /** a declaration names an event type the catalogue does not know */
  | 'OUTBOX_ERR_UNKNOWN_EVENT'
  /** a second module declared an event type another module already owns */
  | 'OUTBOX_ERR_EVENT_OWNED'
  /** a declaration or an operator request is malformed (bad table name, bad route) */
  | 'OUTBOX_ERR_INVALID'
  /** no dead event with that id (on that route) */
  | 'OUTBOX_ERR_NOT_FOUND'
  /** a destination refused or failed a delivery (counted per route, retried) */
  | 'OUTBOX_ERR_DELIVERY';

export class HubError extends Error {
  readonly code: ErrorCode;
  /** Extra machine-readable facts (config path, field name, command id …). */
  readonly details?: Record<string, unknown>;

  constructor(code: ErrorCode, message: string, details?: Record<string, unknown>, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'HubError';
    this.code = code;
    this.details = details;
  }

  toJSON(): SerializedError {
    return { code: this.code, message: this.message, ...(this.details ? { details: this.details } : {}) };
  }
}

/** The shape errors take when they cross a thread, process or network boundary. */
export interface SerializedError {
  code: string;
  message: string;
  details?: Record<string, unknown>;
}

export function serializeError(err: unknown): SerializedError {
  if (err instanceof HubError) return err.toJSON();
  if (err && typeof err === 'object') {
    const e = err as { code?: unknown; message?: unknown };
    return { code: typeof e.code === 'string' ? e.code : 'BUS_ERR_HANDLER', message: String(e.message ?? err) };
  }
  return { code: 'BUS_ERR_HANDLER', message: String(err) };
}

/** Rebuilds a HubError from its serialized form, keeping the code callers branch on. */
export function deserializeError(e: SerializedError): HubError {
  return new HubError(e.code as ErrorCode, e.message, e.details);
}

/**
 * Codes that mean the caller asked for something it may not have (4xx class: unknown project or
 * command, project offline, invalid input, wrong token …). A handler that throws one did its job:
 * it refused. Such a refusal is not a module error: it is not logged at error level and not
 * counted in a mailbox's `errors` (issue 15, item 6). Exact codes, plus every `*_ERR_INVALID`,
 * `*_NOT_FOUND` and `AUTH_ERR_*`.
 */
const CLIENT_MISTAKES: ReadonlySet<string> = new Set([
  'CMD_ERR_PROJECT_OFFLINE',
  'CMD_ERR_UNKNOWN_PROJECT',
  'CMD_ERR_NOT_CANCELLABLE',
  'CMD_ERR_IDEMPOTENCY_MISMATCH',
  'STATUS_ERR_EXISTS',
  'PROTO_ERR_PROJECT_ID',
  'AGENT_ERR_NOT_ALLOWED',
  'HOST_ERR_UNKNOWN_MODULE',
  'WEB_ERR_BODY_TOO_LARGE',
  'WEB_ERR_MEDIA_TYPE',
  'WEB_ERR_WS_MESSAGE',
  'WEB_ERR_UPGRADE_REQUIRED',
]);

/** Whether `err` carries a client-mistake code (see CLIENT_MISTAKES): a refusal, not a failure. */
export function isClientMistake(err: unknown): boolean {
  const code = errorCode(err);
  if (!code) return false;
  return (
    CLIENT_MISTAKES.has(code) ||
    code.endsWith('_ERR_INVALID') ||
    code.endsWith('_ERR_NOT_FOUND') ||
    code.startsWith('AUTH_ERR_')
  );
}

export function errorCode(err: unknown): string | undefined {
  return err && typeof err === 'object' && typeof (err as { code?: unknown }).code === 'string'
    ? (err as { code: string }).code
    : undefined;
}
