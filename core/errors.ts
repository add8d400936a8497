/**
 * Stable error codes and the registry that says what each one means to a caller
 * (docs/conventions.md#one-errors-file-with-stable-codes). Callers branch on `code`, never on the
 * message text or on `instanceof` (classes are not identical across worker/process boundaries).
 *
 * Each domain declares its codes beside itself with `defineCodes` (core's own are below; a
 * module's are in its `contract/codes.ts`): the HTTP status and the gRPC status; a 4xx code is a
 * caller's mistake. REST, gRPC and the bus read that one declaration, so they cannot
 * disagree. The declaration also extends `HubErrorCodes`, so a code that no domain declares is a
 * compile error where it is thrown.
 *
 * @example
 *   // modules/x/contract/codes.ts
 *   export const X_CODES = defineCodes({
 *     X_ERR_INVALID: { http: 400, grpc: 'INVALID_ARGUMENT' },
 *   });
 *   declare module '../../../core/errors.js' {
 *     interface HubErrorCodes extends CodesOf<typeof X_CODES> {}
 *   }
 *   // anywhere
 *   throw new HubError('X_ERR_INVALID', 'name: required', { field: 'name' });
 */

/** gRPC status names (grpc/grpc `doc/statuscodes.md`); the grpc module turns them into numbers. */
export type GrpcStatusName =
  | 'INVALID_ARGUMENT'
  | 'DEADLINE_EXCEEDED'
  | 'NOT_FOUND'
  | 'ALREADY_EXISTS'
  | 'PERMISSION_DENIED'
  | 'RESOURCE_EXHAUSTED'
  | 'FAILED_PRECONDITION'
  | 'INTERNAL'
  | 'UNAVAILABLE'
  | 'UNAUTHENTICATED';

/** What a code means to a caller, declared once where the code is defined. */
/** What a domain declares for a code. */
export interface CodeDeclaration {
  /** The REST answer's status. */
  readonly http: number;
  /** The gRPC answer's status. */
  readonly grpc: GrpcStatusName;
}

/** A registered code: its declaration, and what follows from it. */
export interface CodeSpec extends CodeDeclaration {
  /**
   * The caller asked for something it may not have: exactly the 4xx codes (unknown project or
   * command, project offline, invalid input, wrong token …). A handler that throws one did its
   * job: it refused. Such a refusal is not a module error: not logged at error level, not
   * counted in a mailbox's `errors` (issue 15, item 6). Derived from `http`, never declared, so
   * the two cannot disagree.
   */
  readonly client: boolean;
}

/**
 * Every declared code, filled by the `declare module` blocks beside each `defineCodes` call.
 * `ErrorCode` is its keys: `new HubError('CMD_ERR_INVALD', …)` does not compile.
 */
// biome-ignore lint/suspicious/noEmptyInterface: filled by declaration merging, one block per domain
export interface HubErrorCodes {}

/** The type a domain's `declare module` block extends `HubErrorCodes` with. */
export type CodesOf<T> = Record<keyof T, CodeDeclaration>;

export type ErrorCode = keyof HubErrorCodes & string;

// Our own codes look like AREA_ERR_WHAT; anything else (pg SQLSTATEs, ECONNRESET, TypeError…)
// is an internal detail and never reaches a caller.
const CODE_SHAPE = /^[A-Z]+_ERR_[A-Z_]+$/;

const registry = new Map<string, CodeSpec>();

/**
 * Registers a domain's codes and returns them, typed. A code declared twice, or not shaped
 * AREA_ERR_WHAT, throws at load: two owners of one code would answer two ways.
 */
export function defineCodes<const T extends Record<string, CodeDeclaration>>(codes: T): Readonly<T> {
  for (const [code, spec] of Object.entries(codes)) {
    if (!CODE_SHAPE.test(code)) throw new Error(`error code ${code} is not shaped AREA_ERR_WHAT`);
    if (registry.has(code)) throw new Error(`error code ${code} is declared twice`);
    registry.set(code, Object.freeze({ http: spec.http, grpc: spec.grpc, client: spec.http < 500 }));
  }
  return Object.freeze(codes);
}

/** The declaration of `code`, or undefined for a code no loaded domain declares. */
export function codeSpec(code: string | undefined): CodeSpec | undefined {
  return code === undefined ? undefined : registry.get(code);
}

/** Every code the loaded domains declare, with its declaration. */
export function registeredCodes(): ReadonlyMap<string, CodeSpec> {
  return registry;
}

// ─── core's own codes ─────────────────────────────────────────────────────────────────────

export const CORE_CODES = defineCodes({
  // host and config
  HOST_ERR_CONFIG_READ: { http: 500, grpc: 'INTERNAL' },
  HOST_ERR_CONFIG_YAML: { http: 500, grpc: 'INTERNAL' },
  HOST_ERR_CONFIG_INVALID: { http: 500, grpc: 'INTERNAL' },
  HOST_ERR_CONFIG_ENV: { http: 500, grpc: 'INTERNAL' },
  /** no module of that name (an admin request named it) */
  HOST_ERR_UNKNOWN_MODULE: { http: 404, grpc: 'NOT_FOUND' },
  HOST_ERR_UNKNOWN_TYPE: { http: 500, grpc: 'INTERNAL' },
  HOST_ERR_DEPENDENCY: { http: 500, grpc: 'INTERNAL' },
  // RestartModule / restart route: the module failed to start again (the host retries it with
  // backoff). The message is the host's own, the text module listings show as last_error.
  HOST_ERR_START_TIMEOUT: { http: 500, grpc: 'INTERNAL' },
  HOST_ERR_START_FAILED: { http: 500, grpc: 'INTERNAL' },
  /** the hub is stopping: try again elsewhere or later */
  HOST_ERR_STOPPING: { http: 503, grpc: 'UNAVAILABLE' },
  HOST_ERR_PORT_IN_USE: { http: 500, grpc: 'INTERNAL' },
  // bus: the module behind a request is not running (restarting, disabled), is overloaded, or
  // the bus is closing; worth a retry
  BUS_ERR_REQUEST_TIMEOUT: { http: 503, grpc: 'UNAVAILABLE' },
  BUS_ERR_NO_RESPONDER: { http: 503, grpc: 'UNAVAILABLE' },
  BUS_ERR_MAILBOX_FULL: { http: 503, grpc: 'RESOURCE_EXHAUSTED' },
  BUS_ERR_BAD_TOPIC: { http: 500, grpc: 'INTERNAL' },
  BUS_ERR_HANDLER: { http: 500, grpc: 'INTERNAL' },
  BUS_ERR_CLOSED: { http: 503, grpc: 'UNAVAILABLE' },
  // services
  DB_ERR_UNKNOWN_DATABASE: { http: 500, grpc: 'INTERNAL' },
  DB_ERR_CONFIG: { http: 500, grpc: 'INTERNAL' },
  DB_ERR_MIGRATION: { http: 500, grpc: 'INTERNAL' },
  DB_ERR_DATA_DIR_LOCKED: { http: 500, grpc: 'INTERNAL' },
  /** The embedded PostgreSQL server could not be created or started (services/postgres-server.ts). */
  DB_ERR_SERVER: { http: 500, grpc: 'INTERNAL' },
  /** The database could not be reached (down, restarting, no connection): the hub refuses rather than guess (issue 9). */
  DB_ERR_UNAVAILABLE: { http: 503, grpc: 'UNAVAILABLE' },
});

export interface HubErrorCodes extends CodesOf<typeof CORE_CODES> {}

// ─── the error ────────────────────────────────────────────────────────────────────────────

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

/** Whether `err` carries a code its domain declares a caller's mistake: a refusal, not a failure. */
export function isClientMistake(err: unknown): boolean {
  return codeSpec(errorCode(err))?.client === true;
}

/** Whether `code` is shaped like one of the hub's codes (AREA_ERR_WHAT), declared or not. */
export function isHubCodeShape(code: string | undefined): code is string {
  return code !== undefined && CODE_SHAPE.test(code);
}

export function errorCode(err: unknown): string | undefined {
  return err && typeof err === 'object' && typeof (err as { code?: unknown }).code === 'string'
    ? (err as { code: string }).code
    : undefined;
}
