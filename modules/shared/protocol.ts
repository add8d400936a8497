/**
 * The MQTT wire protocol shared by every hub module and by the agent (docs/wire-protocol.md#mqtt-wire-protocol). Topic names,
 * field names, type names and the signature rule are a fixed contract with agents we do not
 * control: do not rename anything here.
 *
 * Inbound: `parseUplink` (hub side) and `parseDownlink` (agent side) never throw; they return a
 * typed message or an error code with a reason naming the field. They do not check signatures,
 * clocks or replays: the receiver knows the secret and calls `verifyInbound` (signing.ts) next.
 * Outbound: `buildCommand` / `buildData` make well-formed, signed messages.
 *
 * @example
 *   const r = parseUplink(topic, packet.payload);
 *   if (!r.ok) return reject(r.code, r.reason);
 *   if (r.value.kind === 'data' && r.value.msg.data_type === 'exec_result') {
 *     r.value.msg.payload.exit_code; // number
 *   }
 */
import { randomUUID } from 'node:crypto';
import { z } from 'zod';
import { type ErrorCode, HubError } from '../../core/errors.js';
import { findUnsafeJson } from './sanitize.js';
import { bindSignedSource, canonicalJson, signMessage } from './signing.js';

// ---------------------------------------------------------------------------------------------
// Topics (docs/wire-protocol.md#topics)

export const TOPIC_COMMAND_UP = 'wdd/RDMC/command/up';
export const TOPIC_MESSAGE_UP = 'wdd/RDMC/message/up';
const COMMAND_DOWN_PREFIX = 'wdd/RDMC/command/down/';
const MESSAGE_DOWN_PREFIX = 'wdd/RDMC/message/down/';
export const commandDownTopic = (projectId: string): string => `${COMMAND_DOWN_PREFIX}${projectId}`;
export const messageDownTopic = (projectId: string): string => `${MESSAGE_DOWN_PREFIX}${projectId}`;

/** docs/wire-protocol.md#the-envelope: every message is version "1.0". */
export const PROTOCOL_VERSION = '1.0';
/** Messages larger than this are refused before any decoding (256 KiB). */
export const DEFAULT_MAX_MESSAGE_BYTES = 256 * 1024;
/** The longest project id, in UTF-8 bytes. */
export const MAX_PROJECT_ID_BYTES = 128;

// C0 and C1 control characters and DEL ([MQTT-1.5.4-2] says topic names SHOULD NOT hold them),
// the MQTT separators and wildcards ('/', '+', '#'), and lone surrogates, which cannot be encoded
// as UTF-8 ([MQTT-1.5.4-1]). NUL is a C0 control character.
// biome-ignore lint/suspicious/noControlCharactersInRegex: matching control characters is the point
const FORBIDDEN_IN_PROJECT_ID = /[\u0000-\u001f\u007f-\u009f/+#]|\p{Cs}/u;

/**
 * A project id is one MQTT topic level (it ends `.../down/{project_id}`): a non-empty string of at
 * most 128 UTF-8 bytes, without '/', '+', '#', NUL or other control characters, not starting
 * with '$' (brokers reserve `$` topics, [MQTT-4.7.2-1]).
 *
 * @example isValidProjectId('plant-7') === true; isValidProjectId('a/b') === false
 */
export function isValidProjectId(id: unknown): id is string {
  return (
    typeof id === 'string' &&
    id.length > 0 &&
    id.length <= MAX_PROJECT_ID_BYTES && // UTF-8 is never shorter than UTF-16 code units
    Buffer.byteLength(id, 'utf8') <= MAX_PROJECT_ID_BYTES &&
    !id.startsWith('$') &&
    !FORBIDDEN_IN_PROJECT_ID.test(id)
  );
}

// ---------------------------------------------------------------------------------------------
// Type names

export const UPLINK_COMMAND_TYPES = ['register'] as const;
export const UPLINK_DATA_TYPES = [
  'register_complete',
  'heartbeat',
  'command_ack',
  'log_result',
  'exec_result',
  'monitor',
  'alert',
  'disconnect',
] as const;
export const DOWNLINK_DATA_TYPES = ['register_ack', 'reregister'] as const;

export type UplinkCommandType = (typeof UPLINK_COMMAND_TYPES)[number];
export type UplinkDataType = (typeof UPLINK_DATA_TYPES)[number];
export type DownlinkDataType = (typeof DOWNLINK_DATA_TYPES)[number];

/** Command type names: 1–64 characters of [a-z0-9_.-]. */
export const COMMAND_TYPE_RE = /^[a-z0-9_.-]{1,64}$/;

// ---------------------------------------------------------------------------------------------
// Message types (docs/wire-protocol.md#message-types)

export interface BaseMessage {
  message_id: string;
  type: 'command' | 'message';
  project_id: string;
  /** Milliseconds since the epoch, set by the sender. */
  timestamp: number;
  version: '1.0';
}

/** A command: always signed. `CommandMessage<'register', RegisterPayload>` narrows it. */
export interface CommandMessage<T extends string = string, P = unknown> extends BaseMessage {
  type: 'command';
  command_type: T;
  payload: P;
  /** Lowercase hex HMAC-SHA256 (docs/wire-protocol.md#signing). */
  signature: string;
}

/** A data message. Hub and agent sign data messages too when they can; receivers verify a present signature. */
export interface DataMessage<T extends string = string, P = unknown> extends BaseMessage {
  type: 'message';
  data_type: T;
  payload: P;
  encrypted: boolean;
  signature?: string;
}

// Payloads. Agents may send more fields than listed; they are kept (z.looseObject).

/**
 * Uplink command `register` (SubNodeSync registration fields), as the hub reads it: times are
 * normalised to ms, everything else is kept as sent (unknown fields included).
 */
export interface RegisterPayload {
  node_name: string;
  /** `{node_name}-{hostname}-{pid}` */
  instance_id: string;
  version: string;
  pid: number;
  /** ms since the epoch (sent as an RFC 3339 string or ms integer) */
  start_time: number;
  capabilities: string[];
  metadata: Record<string, unknown>;
  /** A string (`"v20.11.0"`) or seed 002's object `{git_version, git_commit, build_date, go_version, platform}`, kept as sent. */
  node_version: NodeVersion;
  [extra: string]: unknown;
}
/** seed 002: `{git_version, git_commit, build_date, go_version, platform}`; older agents send a string. */
export type NodeVersion = string | Record<string, unknown>;
/** A time on the wire: an RFC 3339 / ISO 8601 string with a zone (`"2024-01-01T12:00:00Z"`) or ms since the epoch. */
export type WireTime = string | number;
/** What an agent may send as a `register` payload (times as strings or ms). */
export type RegisterPayloadInput = Omit<RegisterPayload, 'start_time' | 'capabilities' | 'metadata'> & {
  start_time: WireTime;
  capabilities?: string[];
  metadata?: Record<string, unknown>;
};
export interface RegisterCompletePayload {
  instance_id?: string;
}
/**
 * Seed 002's heartbeat: `node_name, instance_id, status, pid, uptime` (seconds), `version,
 * hostname, metrics` (values strings like `"2.50"` or numbers, kept as sent). `timestamp` is
 * normalised to ms; `uptime_s` is `uptime_s` or, when absent, `uptime`.
 */
export interface HeartbeatPayload {
  instance_id?: string;
  node_name?: string;
  timestamp?: number;
  status?: string;
  pid?: number;
  uptime?: number;
  uptime_s?: number;
  version?: string;
  hostname?: string;
  metrics?: Record<string, unknown>;
  [extra: string]: unknown;
}
export interface CommandAckPayload {
  command_id: string;
}
export interface LogResultPayload {
  command_id: string;
  seq: number;
  content: string;
}
export type ExecStatus = 'success' | 'failure' | 'timeout';
export interface ExecResultPayload {
  command_id: string;
  status: ExecStatus;
  exit_code: number;
  output: string;
  error: string;
  /** ms since the epoch (sent as an RFC 3339 string or ms integer) */
  start_time: number;
  /** ms since the epoch (sent as an RFC 3339 string or ms integer) */
  end_time: number;
  duration: number;
}
export interface MonitorPayload {
  metrics: Record<string, unknown>;
  [extra: string]: unknown;
}
export type AlertLevel = 'info' | 'warning' | 'error' | 'critical';
export interface AlertPayload {
  level: AlertLevel;
  message: string;
  [extra: string]: unknown;
}
export interface DisconnectPayload {
  reason?: string;
}
export interface RegisterAckPayload {
  accepted: boolean;
  reason?: string;
  heartbeat_interval_s: number;
}
export interface ReregisterPayload {
  reason?: string;
}

export interface UplinkDataPayloads {
  register_complete: RegisterCompletePayload;
  heartbeat: HeartbeatPayload;
  command_ack: CommandAckPayload;
  log_result: LogResultPayload;
  exec_result: ExecResultPayload;
  monitor: MonitorPayload;
  alert: AlertPayload;
  disconnect: DisconnectPayload;
}
export interface DownlinkDataPayloads {
  register_ack: RegisterAckPayload;
  reregister: ReregisterPayload;
}

export type RegisterCommand = CommandMessage<'register', RegisterPayload>;
/** Discriminated on `data_type`: switching on it narrows `payload`. */
export type UplinkDataMessage = { [K in UplinkDataType]: DataMessage<K, UplinkDataPayloads[K]> }[UplinkDataType];
export type DownlinkDataMessage = {
  [K in DownlinkDataType]: DataMessage<K, DownlinkDataPayloads[K]>;
}[DownlinkDataType];

/** What arrives on `wdd/RDMC/command/up` or `wdd/RDMC/message/up`. */
export type Uplink = { kind: 'command'; msg: RegisterCommand } | { kind: 'data'; msg: UplinkDataMessage };
/** What arrives on `.../command/down/{project_id}` (any command) or `.../message/down/{project_id}`. */
export type Downlink = { kind: 'command'; msg: CommandMessage } | { kind: 'data'; msg: DownlinkDataMessage };

// ---------------------------------------------------------------------------------------------
// Schemas. Each is typed against its interface so the two cannot drift apart.

const uuid = () => z.guid(); // 8-4-4-4-12 hex, any version/variant: agents choose their generator
/** Safe integers; the marker message lets describeIssue say "integer" when a string arrives (zod says "number"). */
const INT_MARK = 'expected integer';
const int = () => z.int({ error: INT_MARK });
const msInt = () => int().nonnegative();
/**
 * A `null` payload (a Go agent marshals a nil payload that way) reads as `{}` when every field is
 * optional. A union rather than z.preprocess so the JSON Schema can say "object or null".
 */
const orEmpty = <T extends z.ZodType<object>>(schema: T) =>
  z.union([z.null().transform(() => ({}) as z.output<T>), schema], { error: 'expected object' });

// RFC 3339 §5.6 date-time (ISO 8601 profile): full date, 'T' (or 't' / a space, §5.6 NOTE),
// time with optional fraction (Go's RFC3339Nano sends up to 9 digits), and a zone, required:
// a time without one would mean a different instant on every host.
const RFC3339_RE =
  /^(\d{4})-(\d{2})-(\d{2})[Tt ](\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,9}))?(?:([Zz])|([+-])(\d{2}):(\d{2}))$/;

/**
 * ms since the epoch of an RFC 3339 date-time (`2024-01-01T12:00:00Z`, `2024-01-01T20:00:00.5+08:00`),
 * or null when `s` is not one (fields out of range included; fractions below 1 ms are cut off).
 *
 * @example parseRfc3339('2024-01-01T12:00:00Z') === 1704110400000
 */
export function parseRfc3339(s: string): number | null {
  const m = RFC3339_RE.exec(s);
  if (!m) return null;
  const [y, mo, d, h, mi, sec] = [m[1], m[2], m[3], m[4], m[5], m[6]].map(Number);
  if (mo < 1 || mo > 12 || d < 1 || h > 23 || mi > 59 || sec > 59) return null;
  const daysInMonth = new Date(Date.UTC(y, mo, 0)).getUTCDate();
  if (d > daysInMonth) return null;
  const ms = m[7] ? Number(m[7].slice(0, 3).padEnd(3, '0')) : 0;
  let offsetMin = 0;
  if (!m[8]) {
    const oh = Number(m[10]);
    const om = Number(m[11]);
    if (oh > 23 || om > 59) return null;
    offsetMin = (m[9] === '-' ? -1 : 1) * (oh * 60 + om);
  }
  const t = Date.UTC(y, mo - 1, d, h, mi, sec, ms) - offsetMin * 60_000;
  if (y < 100) return null; // Date.UTC maps years 0-99 to 1900-1999
  return Number.isSafeInteger(t) && t >= 0 ? t : null;
}

const TIME_EXPECTED = 'expected an RFC 3339 time string or ms integer';
/**
 * A time as agents send it (docs/wire-protocol.md#seed-shapes-the-hub-accepts, seed 002): an RFC 3339 string or ms since the epoch,
 * read as ms. Consumers only ever see numbers; the signature still covers the string that was
 * sent (withPayload binds the decoded object).
 */
const wireTime = () =>
  z
    .union([msInt(), z.string().meta({ format: 'date-time' })], { error: TIME_EXPECTED })
    .transform((v, ctx) => {
      if (typeof v === 'number') return v;
      const ms = parseRfc3339(v);
      if (ms === null) {
        ctx.issues.push({
          code: 'custom',
          input: v,
          message: `expected an RFC 3339 time like "2024-01-01T12:00:00Z" or ms integer, got ${show(v)}`,
        });
        return z.NEVER;
      }
      return ms;
    })
    .meta({
      description:
        'RFC 3339 date-time with a zone ("2024-01-01T12:00:00Z") or integer milliseconds since the epoch; read as ms',
    });

export const RegisterPayloadSchema: z.ZodType<RegisterPayload, RegisterPayloadInput> = z.looseObject({
  node_name: z.string(),
  instance_id: z.string(),
  version: z.string(),
  pid: int().nonnegative(),
  start_time: wireTime(),
  capabilities: z.array(z.string()).default([]),
  metadata: z.record(z.string(), z.unknown()).default({}),
  // kept as sent: a string, or seed 002's {git_version, git_commit, build_date, go_version, platform}
  node_version: z.union([z.string(), z.record(z.string(), z.unknown())], {
    error: 'expected a string or an object',
  }),
});
export const RegisterCompletePayloadSchema: z.ZodType<RegisterCompletePayload> = orEmpty(
  z.looseObject({ instance_id: z.string().optional() }),
);
export const HeartbeatPayloadSchema: z.ZodType<HeartbeatPayload> = orEmpty(
  z
    .looseObject({
      instance_id: z.string().optional(),
      node_name: z.string().optional(),
      timestamp: wireTime().optional(),
      status: z.string().optional(),
      pid: int().nonnegative().optional(),
      /** seed 002: seconds */
      uptime: z.number().nonnegative().optional(),
      uptime_s: z.number().nonnegative().optional(),
      version: z.string().optional(),
      hostname: z.string().optional(),
      // values as sent: seed 002 mixes strings ("2.50") and numbers
      metrics: z.record(z.string(), z.unknown()).optional(),
    })
    .transform((p) => (p.uptime_s === undefined && p.uptime !== undefined ? { ...p, uptime_s: p.uptime } : p)),
);
export const CommandAckPayloadSchema: z.ZodType<CommandAckPayload> = z.looseObject({ command_id: uuid() });
export const LogResultPayloadSchema: z.ZodType<LogResultPayload> = z.looseObject({
  command_id: uuid(),
  seq: int().nonnegative(),
  content: z.string(),
});
export const ExecResultPayloadSchema: z.ZodType<ExecResultPayload> = z.looseObject({
  command_id: uuid(),
  status: z.enum(['success', 'failure', 'timeout']),
  exit_code: int(),
  output: z.string().default(''),
  error: z.string().default(''),
  start_time: wireTime(),
  end_time: wireTime(),
  duration: int().nonnegative(),
});
export const MonitorPayloadSchema: z.ZodType<MonitorPayload> = z.looseObject({
  metrics: z.record(z.string(), z.unknown()),
});
export const AlertPayloadSchema: z.ZodType<AlertPayload> = z.looseObject({
  level: z.enum(['info', 'warning', 'error', 'critical']),
  message: z.string(),
});
export const DisconnectPayloadSchema: z.ZodType<DisconnectPayload> = orEmpty(
  z.looseObject({ reason: z.string().optional() }),
);
export const RegisterAckPayloadSchema: z.ZodType<RegisterAckPayload> = z.looseObject({
  accepted: z.boolean(),
  reason: z.string().optional(),
  heartbeat_interval_s: int().positive(),
});
export const ReregisterPayloadSchema: z.ZodType<ReregisterPayload> = orEmpty(
  z.looseObject({ reason: z.string().optional() }),
);

const UPLINK_COMMAND_PAYLOAD_SCHEMAS: { readonly [K in UplinkCommandType]: z.ZodType } = {
  register: RegisterPayloadSchema,
};
const UPLINK_DATA_PAYLOAD_SCHEMAS: { readonly [K in UplinkDataType]: z.ZodType<UplinkDataPayloads[K]> } = {
  register_complete: RegisterCompletePayloadSchema,
  heartbeat: HeartbeatPayloadSchema,
  command_ack: CommandAckPayloadSchema,
  log_result: LogResultPayloadSchema,
  exec_result: ExecResultPayloadSchema,
  monitor: MonitorPayloadSchema,
  alert: AlertPayloadSchema,
  disconnect: DisconnectPayloadSchema,
};
const DOWNLINK_DATA_PAYLOAD_SCHEMAS: { readonly [K in DownlinkDataType]: z.ZodType<DownlinkDataPayloads[K]> } = {
  register_ack: RegisterAckPayloadSchema,
  reregister: ReregisterPayloadSchema,
};

// Envelopes. `type` and `version` are checked first (see checkEnvelope); `project_id` only needs
// to be a string here, its finer rules give PROTO_ERR_PROJECT_ID.
const envelopeBase = {
  message_id: uuid(),
  project_id: z.string(),
  // the contract says ms (docs/wire-protocol.md#the-envelope); an agent that writes its times the seed's way may send a string here too
  timestamp: wireTime(),
  version: z.literal(PROTOCOL_VERSION),
};
export const CommandMessageSchema = z.looseObject({
  ...envelopeBase,
  type: z.literal('command'),
  command_type: z.string().regex(COMMAND_TYPE_RE),
  payload: z.unknown(),
  signature: z.string().regex(/^[0-9a-f]{64}$/),
});
export const DataMessageSchema = z.looseObject({
  ...envelopeBase,
  type: z.literal('message'),
  data_type: z.string(),
  payload: z.unknown(),
  encrypted: z.boolean(),
  signature: z.string().optional(),
});

// ---------------------------------------------------------------------------------------------
// Parsing

export type ParseErrorCode = Extract<
  ErrorCode,
  | 'PROTO_ERR_JSON'
  | 'PROTO_ERR_SCHEMA'
  | 'PROTO_ERR_TOO_LARGE'
  | 'PROTO_ERR_UNKNOWN_TYPE'
  | 'PROTO_ERR_PROJECT_ID'
  | 'PROTO_ERR_UNSAFE_VALUE'
>;
/** Every code `parseUplink` / `parseDownlink` can return. */
export const PARSE_ERROR_CODES: readonly ParseErrorCode[] = [
  'PROTO_ERR_JSON',
  'PROTO_ERR_SCHEMA',
  'PROTO_ERR_TOO_LARGE',
  'PROTO_ERR_UNKNOWN_TYPE',
  'PROTO_ERR_PROJECT_ID',
  'PROTO_ERR_UNSAFE_VALUE',
];
export type ParseResult<T> = { ok: true; value: T } | { ok: false; code: ParseErrorCode; reason: string };
export interface ParseOptions {
  /** Refuse larger messages before decoding them; default 256 KiB. */
  maxBytes?: number;
}

type Fail = { ok: false; code: ParseErrorCode; reason: string };
const fail = (code: ParseErrorCode, reason: string): Fail => ({ ok: false, code, reason });

const utf8 = new TextDecoder('utf-8', { fatal: true });

/** Short, log-safe rendering of an untrusted value. */
function show(value: unknown): string {
  let s: string;
  try {
    s = typeof value === 'string' ? JSON.stringify(value) : (JSON.stringify(value) ?? String(value));
  } catch {
    s = Object.prototype.toString.call(value);
  }
  return s.length > 64 ? `${s.slice(0, 61)}...` : s;
}

function kindOf(value: unknown): string {
  if (value === null) return 'null';
  if (Array.isArray(value)) return 'array';
  if (typeof value === 'number' && !Number.isInteger(value)) return 'non-integer number';
  return typeof value;
}

/** `["payload","items",0,"x"]` → `payload.items[0].x` */
function formatPath(path: readonly PropertyKey[]): string {
  let out = '';
  for (const seg of path) {
    if (typeof seg === 'number') out += `[${seg}]`;
    else out += out === '' ? String(seg) : `.${String(seg)}`;
  }
  return out === '' ? '(message)' : out;
}

function valueAt(root: unknown, path: readonly PropertyKey[]): unknown {
  let cur: unknown = root;
  for (const seg of path) {
    if (cur === null || typeof cur !== 'object' || !Object.hasOwn(cur, seg)) return undefined;
    cur = (cur as Record<PropertyKey, unknown>)[seg];
  }
  return cur;
}

/** One zod issue as `path: what was expected` (e.g. `payload.exit_code: expected integer, got non-integer number`). */
function describeIssue(issue: z.core.$ZodIssue, root: unknown, prefix: readonly PropertyKey[]): string {
  const path = [...prefix, ...issue.path];
  const where = formatPath(path);
  const actual = valueAt(root, path);
  switch (issue.code) {
    case 'invalid_type': {
      if (actual === undefined) return `${where}: required`;
      const expected = issue.expected === 'int' || issue.message === INT_MARK ? 'integer' : issue.expected;
      return `${where}: expected ${expected}, got ${kindOf(actual)}`;
    }
    case 'invalid_union': {
      // a branch that failed below the union (orEmpty's object: one of its fields) says more
      let inner: z.core.$ZodIssue | undefined;
      for (const branch of issue.errors) {
        for (const i of branch) if (i.path.length > 0 && (!inner || i.path.length > inner.path.length)) inner = i;
      }
      if (inner) return describeIssue(inner, root, [...prefix, ...issue.path]);
      // our other unions carry their expectation as the message (wireTime, node_version)
      if (actual === undefined) return `${where}: required`;
      return `${where}: ${issue.message}, got ${kindOf(actual)}`;
    }
    case 'invalid_value':
      return `${where}: expected ${issue.values.map((v) => JSON.stringify(v)).join(' | ')}, got ${show(actual)}`;
    case 'invalid_format':
      if (issue.format === 'guid') return `${where}: expected a UUID, got ${show(actual)}`;
      if (issue.format === 'regex' && 'pattern' in issue) return `${where}: must match ${issue.pattern}`;
      return `${where}: expected ${issue.format} format`;
    case 'too_small':
    case 'too_big': {
      const op = issue.code === 'too_small' ? (issue.inclusive ? '>=' : '>') : issue.inclusive ? '<=' : '<';
      const limit = issue.code === 'too_small' ? issue.minimum : issue.maximum;
      const what = issue.origin === 'string' || issue.origin === 'array' ? 'length' : 'value';
      return `${where}: ${what} must be ${op} ${String(limit)}`;
    }
    default:
      return `${where}: ${issue.message}`;
  }
}

function schemaFailure(error: z.ZodError, root: unknown, prefix: readonly PropertyKey[] = []): Fail {
  const [first, ...rest] = error.issues;
  const head = first ? describeIssue(first, root, prefix) : 'invalid message';
  return fail('PROTO_ERR_SCHEMA', rest.length > 0 ? `${head} (and ${rest.length} more)` : head);
}

/** Size check, then UTF-8, then JSON, then "is an object". */
function decode(raw: unknown, opts: ParseOptions | undefined): ParseResult<Record<string, unknown>> {
  const max = opts?.maxBytes ?? DEFAULT_MAX_MESSAGE_BYTES;
  let text: string;
  if (typeof raw === 'string') {
    // Checked before decoding anything: a UTF-16 unit is at least one UTF-8 byte.
    if (raw.length > max || Buffer.byteLength(raw, 'utf8') > max) {
      return fail('PROTO_ERR_TOO_LARGE', `message is larger than ${max} bytes`);
    }
    text = raw;
  } else if (raw instanceof Uint8Array) {
    if (raw.byteLength > max) {
      return fail('PROTO_ERR_TOO_LARGE', `message is ${raw.byteLength} bytes, larger than ${max}`);
    }
    try {
      text = utf8.decode(raw);
    } catch {
      return fail('PROTO_ERR_JSON', 'message is not valid UTF-8');
    }
  } else {
    return fail('PROTO_ERR_JSON', 'message must be a string or bytes');
  }
  let value: unknown;
  try {
    // JSON.parse makes `__proto__` an ordinary own key; it never touches a prototype.
    value = JSON.parse(text);
  } catch (err) {
    return fail('PROTO_ERR_JSON', `message is not valid JSON: ${(err as Error).message}`);
  }
  if (value === null || typeof value !== 'object' || Array.isArray(value)) {
    return fail('PROTO_ERR_JSON', `message must be a JSON object, got ${kindOf(value)}`);
  }
  return { ok: true, value: value as Record<string, unknown> };
}

/**
 * The envelope checks shared by both directions: `type` must match the topic, `version` must be
 * "1.0", the envelope fields must be well formed, and `project_id` must be valid.
 */
function checkEnvelope<S extends typeof CommandMessageSchema | typeof DataMessageSchema>(
  obj: Record<string, unknown>,
  expectedType: 'command' | 'message',
  topic: string,
  schema: S,
): ParseResult<z.output<S>> {
  if (obj.type !== expectedType) {
    return fail('PROTO_ERR_SCHEMA', `type: expected "${expectedType}" on ${topic}, got ${show(obj.type)}`);
  }
  if (obj.version !== PROTOCOL_VERSION) {
    return fail('PROTO_ERR_SCHEMA', `version: expected "${PROTOCOL_VERSION}", got ${show(obj.version)}`);
  }
  const env = schema.safeParse(obj);
  if (!env.success) return schemaFailure(env.error, obj);
  if (!isValidProjectId(env.data.project_id)) {
    return fail('PROTO_ERR_PROJECT_ID', `project_id: invalid project id ${show(env.data.project_id)}`);
  }
  return { ok: true, value: env.data as z.output<S> };
}

/** Validates `payload` and returns the message with the parsed payload, bound to `raw` for signature checks. */
function withPayload<M extends { payload: unknown }>(
  envelope: M,
  schema: z.ZodType,
  raw: Record<string, unknown>,
): ParseResult<M> {
  const payload = schema.safeParse(envelope.payload);
  if (!payload.success) return schemaFailure(payload.error, raw, ['payload']);
  const msg = { ...envelope, payload: payload.data };
  // Defaults may have been filled in; the signature covers what the sender sent (docs/wire-protocol.md#signing).
  bindSignedSource(msg, raw);
  return { ok: true, value: msg };
}

const ownKey = <T extends object>(table: T, key: string): key is Extract<keyof T, string> => Object.hasOwn(table, key);

function guard<T>(fn: () => ParseResult<T>): ParseResult<T> {
  try {
    return fn();
  } catch (err) {
    // Unreachable by design; the contract is "never throws", so an internal fault still answers.
    return fail('PROTO_ERR_SCHEMA', `message could not be parsed: ${(err as Error)?.message ?? String(err)}`);
  }
}

/**
 * Hub side: decode and validate a message received on `wdd/RDMC/command/up` (a `register`
 * command) or `wdd/RDMC/message/up` (an uplink data message). Never throws. Does not verify the
 * signature: call `verifyInbound(result.value.msg, ...)` next.
 *
 * @example
 *   const r = parseUplink('wdd/RDMC/message/up', buf);
 *   if (r.ok && r.value.kind === 'data' && r.value.msg.data_type === 'heartbeat') r.value.msg.payload.metrics;
 */
export function parseUplink(
  topic: string,
  raw: Buffer | Uint8Array | string,
  opts?: ParseOptions,
): ParseResult<Uplink> {
  return guard<Uplink>(() => {
    const isCommand = topic === TOPIC_COMMAND_UP;
    if (!isCommand && topic !== TOPIC_MESSAGE_UP) {
      return fail('PROTO_ERR_SCHEMA', `topic: ${show(topic)} is not an uplink topic`);
    }
    const decoded = decode(raw, opts);
    if (!decoded.ok) return decoded;
    const obj = decoded.value;
    if (isCommand) {
      const env = checkEnvelope(obj, 'command', topic, CommandMessageSchema);
      if (!env.ok) return env;
      const type = env.value.command_type;
      if (!ownKey(UPLINK_COMMAND_PAYLOAD_SCHEMAS, type)) {
        return fail('PROTO_ERR_UNKNOWN_TYPE', `command_type: unknown uplink command type ${show(type)}`);
      }
      const r = withPayload(env.value, UPLINK_COMMAND_PAYLOAD_SCHEMAS[type], obj);
      if (!r.ok) return r;
      const unsafe = unsafePayload(type, r.value.payload);
      if (unsafe) return unsafe;
      return { ok: true, value: { kind: 'command', msg: r.value as unknown as RegisterCommand } };
    }
    const env = checkEnvelope(obj, 'message', topic, DataMessageSchema);
    if (!env.ok) return env;
    const type = env.value.data_type;
    if (!ownKey(UPLINK_DATA_PAYLOAD_SCHEMAS, type)) {
      return fail('PROTO_ERR_UNKNOWN_TYPE', `data_type: unknown uplink data type ${show(type)}`);
    }
    const r = withPayload(env.value, UPLINK_DATA_PAYLOAD_SCHEMAS[type], obj);
    if (!r.ok) return r;
    const unsafe = unsafePayload(type, r.value.payload);
    if (unsafe) return unsafe;
    return { ok: true, value: { kind: 'data', msg: r.value as unknown as UplinkDataMessage } };
  });
}

/**
 * Command output, streamed or final: what a real command printed, stored cleaned (NUL dropped,
 * lone surrogates replaced, command/uplink.ts `clean`), never refused — refusing it would lose
 * a real result. Everything else an agent sends is free-form JSON checked by findUnsafeJson.
 */
const OUTPUT_FIELDS: Readonly<Record<string, readonly string[]>> = {
  exec_result: ['output', 'error'],
  log_result: ['content'],
};

/**
 * PROTO_ERR_UNSAFE_VALUE when an uplink's payload holds something the hub cannot store or serve
 * (NUL, a lone surrogate, nesting past the depth limit, too many values): refused here, once, so
 * it never reaches a presence batch, a jsonb column or a listing.
 */
function unsafePayload(type: string, payload: unknown): Fail | null {
  let checked = payload;
  const exempt = OUTPUT_FIELDS[type];
  if (exempt && payload !== null && typeof payload === 'object') {
    const rest: Record<string, unknown> = { ...(payload as Record<string, unknown>) };
    for (const k of exempt) if (typeof rest[k] === 'string') delete rest[k];
    checked = rest;
  }
  const bad = findUnsafeJson(checked);
  return bad ? fail('PROTO_ERR_UNSAFE_VALUE', `payload${bad.path}: ${bad.problem}`) : null;
}

/**
 * Agent side: decode and validate a message received on `wdd/RDMC/command/down/{project_id}`
 * (any command type, payload any JSON) or `wdd/RDMC/message/down/{project_id}` (`register_ack`,
 * `reregister`). The project id in the topic must equal `msg.project_id`
 * (PROTO_ERR_PROJECT_ID otherwise). Never throws; does not verify the signature.
 */
export function parseDownlink(
  topic: string,
  raw: Buffer | Uint8Array | string,
  opts?: ParseOptions,
): ParseResult<Downlink> {
  return guard<Downlink>(() => {
    const isCommand = typeof topic === 'string' && topic.startsWith(COMMAND_DOWN_PREFIX);
    const isMessage = typeof topic === 'string' && topic.startsWith(MESSAGE_DOWN_PREFIX);
    if (!isCommand && !isMessage) {
      return fail('PROTO_ERR_SCHEMA', `topic: ${show(topic)} is not a downlink topic`);
    }
    const topicProject = topic.slice((isCommand ? COMMAND_DOWN_PREFIX : MESSAGE_DOWN_PREFIX).length);
    if (!isValidProjectId(topicProject)) {
      return fail('PROTO_ERR_PROJECT_ID', `topic: invalid project id ${show(topicProject)} in ${show(topic)}`);
    }
    const decoded = decode(raw, opts);
    if (!decoded.ok) return decoded;
    const obj = decoded.value;
    const mismatch = (projectId: string): Fail =>
      fail('PROTO_ERR_PROJECT_ID', `project_id: ${show(projectId)} does not match the topic's ${show(topicProject)}`);
    if (isCommand) {
      const env = checkEnvelope(obj, 'command', topic, CommandMessageSchema);
      if (!env.ok) return env;
      if (env.value.project_id !== topicProject) return mismatch(env.value.project_id);
      const msg = { ...env.value } as CommandMessage;
      bindSignedSource(msg, obj);
      return { ok: true, value: { kind: 'command', msg } };
    }
    const env = checkEnvelope(obj, 'message', topic, DataMessageSchema);
    if (!env.ok) return env;
    if (env.value.project_id !== topicProject) return mismatch(env.value.project_id);
    const type = env.value.data_type;
    if (!ownKey(DOWNLINK_DATA_PAYLOAD_SCHEMAS, type)) {
      return fail('PROTO_ERR_UNKNOWN_TYPE', `data_type: unknown downlink data type ${show(type)}`);
    }
    const r = withPayload(env.value, DOWNLINK_DATA_PAYLOAD_SCHEMAS[type], obj);
    return r.ok ? { ok: true, value: { kind: 'data', msg: r.value as unknown as DownlinkDataMessage } } : r;
  });
}

/**
 * What can still be read from an uplink the parser refused: its project id and message type,
 * when they are well formed, so the refusal can be answered (a `register_ack` naming the
 * problem) and counted against the project. Never throws; reads only these two fields (the
 * rest of a refused message is never repeated anywhere). Oversized messages are not decoded.
 *
 * @example peekUplink('wdd/RDMC/command/up', buf) // { project_id: 'plant-7', type: 'register' }
 */
export function peekUplink(
  topic: string,
  raw: Buffer | Uint8Array | string,
  opts?: ParseOptions,
): { project_id?: string; type?: string } {
  try {
    const d = decode(raw, opts);
    if (!d.ok) return {};
    const obj = d.value;
    const out: { project_id?: string; type?: string } = {};
    if (isValidProjectId(obj.project_id)) out.project_id = obj.project_id;
    const type = topic === TOPIC_COMMAND_UP ? obj.command_type : obj.data_type;
    if (typeof type === 'string' && COMMAND_TYPE_RE.test(type)) out.type = type;
    return out;
  } catch {
    return {};
  }
}

// ---------------------------------------------------------------------------------------------
// Building

/** A fresh message id (UUID v4). */
export function newMessageId(): string {
  return randomUUID();
}

interface BuildOptions {
  messageId?: string;
  /** The timestamp to stamp, ms since the epoch; default `Date.now()`. */
  now?: number;
}

/**
 * A deep, JSON-only copy of `payload`: the message never shares objects with the caller (a later
 * mutation would break the signature), and values JSON cannot carry fail here, not at the receiver.
 */
function jsonCopy(payload: unknown): unknown {
  if (payload === undefined) throw new HubError('PROTO_ERR_SCHEMA', 'payload: required (use null for "nothing")');
  try {
    return JSON.parse(canonicalJson(payload));
  } catch (err) {
    throw new HubError('PROTO_ERR_SCHEMA', `payload: not JSON-serialisable: ${(err as Error).message}`, undefined, {
      cause: err,
    });
  }
}

function baseFields<T extends 'command' | 'message'>(projectId: string, type: T, opts: BuildOptions | undefined) {
  if (!isValidProjectId(projectId)) {
    throw new HubError('PROTO_ERR_PROJECT_ID', `project_id: invalid project id ${show(projectId)}`, {
      field: 'project_id',
    });
  }
  const messageId = opts?.messageId ?? newMessageId();
  if (!uuid().safeParse(messageId).success) {
    throw new HubError('PROTO_ERR_SCHEMA', `message_id: expected a UUID, got ${show(messageId)}`, {
      field: 'message_id',
    });
  }
  const timestamp = opts?.now ?? Date.now();
  if (!Number.isSafeInteger(timestamp) || timestamp < 0) {
    throw new HubError('PROTO_ERR_SCHEMA', `timestamp: expected a non-negative integer, got ${show(timestamp)}`, {
      field: 'timestamp',
    });
  }
  return { message_id: messageId, type, project_id: projectId, timestamp, version: PROTOCOL_VERSION } as const;
}

/** Known types get their payload checked at build time, so a bad message fails at the sender. */
function checkKnownPayload(
  table: Readonly<Record<string, z.ZodType>>,
  typeName: string,
  payload: unknown,
  field: 'command_type' | 'data_type',
): void {
  if (!Object.hasOwn(table, typeName)) return;
  const r = table[typeName].safeParse(payload);
  if (!r.success) {
    const f = schemaFailure(r.error, { payload }, ['payload']);
    throw new HubError('PROTO_ERR_SCHEMA', `${field} ${typeName}: ${f.reason}`, { field: 'payload' });
  }
}

/**
 * A signed command (docs/wire-protocol.md#signing). Throws a HubError (PROTO_ERR_PROJECT_ID, PROTO_ERR_SCHEMA) for
 * an invalid project id, command type, message id, timestamp, a payload that JSON cannot carry,
 * or a `register` payload that does not match its schema; a TypeError for an empty secret.
 *
 * @example
 *   const cmd = buildCommand('plant-7', 'host_exec', { script: 'uptime' }, secret);
 *   mqtt.publish(commandDownTopic('plant-7'), JSON.stringify(cmd), { qos: 1 });
 */
export function buildCommand(
  projectId: string,
  commandType: string,
  payload: unknown,
  secret: string,
  opts?: BuildOptions,
): CommandMessage {
  if (typeof commandType !== 'string' || !COMMAND_TYPE_RE.test(commandType)) {
    throw new HubError('PROTO_ERR_SCHEMA', `command_type: must match ${COMMAND_TYPE_RE}, got ${show(commandType)}`, {
      field: 'command_type',
    });
  }
  const base = baseFields(projectId, 'command', opts);
  const body = jsonCopy(payload);
  checkKnownPayload(UPLINK_COMMAND_PAYLOAD_SCHEMAS, commandType, body, 'command_type');
  const unsigned = { ...base, command_type: commandType, payload: body };
  return { ...unsigned, signature: signMessage(unsigned, secret) };
}

/**
 * A data message; signed when `secret` is given (the hub and agent sign everything they can).
 * Throws like `buildCommand`; payloads of known data types (uplink and downlink) are checked
 * against their schema.
 *
 * @example
 *   const ack = buildData('plant-7', 'command_ack', { command_id }, { secret });
 *   mqtt.publish(TOPIC_MESSAGE_UP, JSON.stringify(ack), { qos: 1 });
 */
export function buildData(
  projectId: string,
  dataType: string,
  payload: unknown,
  opts?: BuildOptions & { encrypted?: boolean; secret?: string },
): DataMessage & { signature?: string } {
  if (typeof dataType !== 'string' || !COMMAND_TYPE_RE.test(dataType)) {
    throw new HubError('PROTO_ERR_SCHEMA', `data_type: must match ${COMMAND_TYPE_RE}, got ${show(dataType)}`, {
      field: 'data_type',
    });
  }
  const base = baseFields(projectId, 'message', opts);
  const body = jsonCopy(payload);
  checkKnownPayload(UPLINK_DATA_PAYLOAD_SCHEMAS, dataType, body, 'data_type');
  checkKnownPayload(DOWNLINK_DATA_PAYLOAD_SCHEMAS, dataType, body, 'data_type');
  const unsigned: DataMessage = { ...base, data_type: dataType, payload: body, encrypted: opts?.encrypted ?? false };
  if (opts?.secret === undefined) return unsigned;
  return { ...unsigned, signature: signMessage(unsigned, opts.secret) };
}
