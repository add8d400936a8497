/**
 * The uplink types (agent → hub), in one table: `UPLINKS`. Each entry says everything the hub
 * does with its type before a module's handler runs: its payload schema, its topic (by kind),
 * whether it must be signed, how its freshness is checked, whether it is durable (acknowledged to
 * the broker only after its owner wrote it) and which module owns it. The parser, the bridge's
 * verification and routing, the owners' subscriptions and handler maps, the JSON Schema document
 * and the uplink fuzzer all read this table: adding a type is one entry here (with its payload)
 * and one handler in its owner (README "Adding an uplink type").
 *
 * Payloads: agents may send more fields than listed; they are kept (z.looseObject). Each schema
 * is typed against its interface so the two cannot drift apart.
 */
import { z } from 'zod';
import type { SentText } from '../signing.js';
import type { CommandMessage, DataMessage } from './envelope.js';
import { int, orEmpty, uuid, wireTime } from './fields.js';
import { plainCommandAck, plainExecResult, plainHeartbeat, plainLogResult } from './plain.js';
import { TOPIC_COMMAND_UP, TOPIC_MESSAGE_UP } from './wire.js';

// ---------------------------------------------------------------------------------------------
// Payloads (docs/wire-protocol.md#message-types)

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

// ---------------------------------------------------------------------------------------------
// The table

/** The modules that handle uplinks, by provider name (the bridge asks the host whether one is configured). */
export type UplinkOwner = 'status' | 'command';

/**
 * How the bridge checks an uplink's timestamp and message_id after its signature
 * (docs/wire-protocol.md#what-is-verified):
 * - `window_and_replay`: inside the clock window on both sides, message_id not seen before;
 * - `future_only`: idempotent by command_id, so no replay check and only the future side of the
 *   window (a genuine copy may reach the hub long after it was signed, held by the broker while
 *   the hub was down);
 * - `none`: signature only (the MQTT last will is composed at connect: old timestamp, repeated id).
 */
export type Freshness = 'window_and_replay' | 'future_only' | 'none';

export interface UplinkSpec {
  /** `command` travels on `wdd/RDMC/command/up` (always signed), `data` on `wdd/RDMC/message/up`. */
  kind: 'command' | 'data';
  /** The payload as agents send it (input) and as handlers read it (output). */
  schema: z.ZodType;
  /** The schema's output for a plainly valid payload without running it, undefined to let it decide (plain.ts). */
  plain?: (payload: unknown) => unknown;
  /** `required`: unsigned is refused; `when_present`: verified when present, required only with `status.require_data_signature`. */
  signature: 'required' | 'when_present';
  freshness: Freshness;
  /**
   * Carries state the hub must not lose: the bridge sends it to its owner as a bus request and
   * acknowledges it to the broker only once the owner wrote it. Otherwise it is an event,
   * acknowledged once a mailbox took it (a lost heartbeat is replaced within seconds).
   */
  durable: boolean;
  owner: UplinkOwner;
  /** Command output fields: stored cleaned, never refused for NUL or lone surrogates (parse.ts). */
  outputFields?: readonly string[];
  /** One line for docs/wire-schema.json. */
  description: string;
  /** A payload as a real agent sends it (the seed's shapes: RFC 3339 times); tests and the fuzzer start from it. */
  example: Readonly<Record<string, unknown>> | null;
}

const CMD_ID = '0b6c2f0e-3a52-4f43-9d0e-6a7f0c1d2e3f';

/** Every uplink type, in the order of docs/wire-protocol.md#message-types. */
export const UPLINKS = {
  register: {
    kind: 'command',
    schema: RegisterPayloadSchema,
    signature: 'required',
    freshness: 'window_and_replay',
    durable: true,
    owner: 'status',
    description: 'SubNodeSync registration (seed 002 注册消息), signed; always answered with register_ack',
    example: {
      node_name: 'my-app',
      instance_id: 'my-app-hostname-12345',
      version: '1.0.0',
      pid: 12345,
      start_time: '2024-01-01T12:00:00Z',
      capabilities: ['mqtt_control', 'heartbeat'],
      metadata: { hostname: 'hostname' },
      node_version: { git_version: 'v1.0.0', go_version: 'go1.21', platform: 'linux/amd64' },
    },
  },
  register_complete: {
    kind: 'data',
    schema: RegisterCompletePayloadSchema,
    signature: 'when_present',
    freshness: 'window_and_replay',
    durable: true,
    owner: 'status',
    description: 'after an accepted register_ack: the project goes online',
    example: { instance_id: 'my-app-hostname-12345' },
  },
  heartbeat: {
    kind: 'data',
    schema: HeartbeatPayloadSchema,
    plain: plainHeartbeat,
    signature: 'when_present',
    freshness: 'window_and_replay',
    durable: false,
    owner: 'status',
    description: 'SubNodeSync heartbeat (seed 002 心跳消息); metric values strings or numbers, kept as sent',
    example: {
      timestamp: '2024-01-01T12:00:00Z',
      node_name: 'my-app',
      instance_id: 'my-app-hostname-12345',
      status: 'running',
      uptime: 3600,
      metrics: { process_cpu_usage_percent: '2.50', process_memory_usage_mb: 128 },
    },
  },
  command_ack: {
    kind: 'data',
    schema: CommandAckPayloadSchema,
    plain: plainCommandAck,
    signature: 'when_present',
    freshness: 'future_only',
    durable: true,
    owner: 'command',
    description: 'the agent has the command (a broker PUBACK is not delivery)',
    example: { command_id: CMD_ID },
  },
  log_result: {
    kind: 'data',
    schema: LogResultPayloadSchema,
    plain: plainLogResult,
    signature: 'when_present',
    freshness: 'window_and_replay',
    durable: false,
    owner: 'command',
    outputFields: ['content'],
    description: 'one ordered chunk of a command output, streamed live',
    example: { command_id: CMD_ID, seq: 0, content: 'line 1\n' },
  },
  exec_result: {
    kind: 'data',
    schema: ExecResultPayloadSchema,
    plain: plainExecResult,
    signature: 'when_present',
    freshness: 'future_only',
    durable: true,
    owner: 'command',
    outputFields: ['output', 'error'],
    description: 'the final result of a command (idempotent by command_id)',
    example: {
      command_id: CMD_ID,
      status: 'success',
      exit_code: 0,
      output: 'up 3 days',
      error: '',
      start_time: '2024-01-01T12:00:00Z',
      end_time: '2024-01-01T12:00:00.020Z',
      duration: 20,
    },
  },
  monitor: {
    kind: 'data',
    schema: MonitorPayloadSchema,
    signature: 'when_present',
    freshness: 'window_and_replay',
    durable: false,
    owner: 'status',
    description: 'metrics outside the heartbeat',
    example: { metrics: { disk_free_gb: 41.2, load: '0.10' } },
  },
  alert: {
    kind: 'data',
    schema: AlertPayloadSchema,
    signature: 'when_present',
    freshness: 'window_and_replay',
    durable: false,
    owner: 'status',
    description: 'an alert shown on the project',
    example: { level: 'warning', message: 'disk almost full' },
  },
  disconnect: {
    kind: 'data',
    schema: DisconnectPayloadSchema,
    signature: 'when_present',
    freshness: 'none',
    durable: true,
    owner: 'status',
    description: 'graceful goodbye (also the MQTT last will)',
    // a Go agent marshals a nil payload as null
    example: null,
  },
} as const satisfies Record<string, UplinkSpec>;

// ---------------------------------------------------------------------------------------------
// Derived from the table

type Table = typeof UPLINKS;
export type UplinkType = keyof Table;
type TypesWhere<F extends keyof UplinkSpec, V> = {
  [K in UplinkType]: Table[K][F & keyof Table[K]] extends V ? K : never;
}[UplinkType];
export type UplinkCommandType = TypesWhere<'kind', 'command'>;
export type UplinkDataType = TypesWhere<'kind', 'data'>;
/** The types a module owns: its handler map must have exactly these keys (`satisfies UplinkHandlers<'status'>`). */
export type UplinkTypeOf<O extends UplinkOwner> = TypesWhere<'owner', O>;
/** A type's payload as handlers read it (times as ms, defaults filled in). */
export type UplinkPayload<K extends UplinkType> = z.output<Table[K]['schema']>;
export type UplinkDataPayloads = { [K in UplinkDataType]: UplinkPayload<K> };

export type RegisterCommand = CommandMessage<'register', UplinkPayload<'register'>>;
/** Discriminated on `command_type` / `data_type`: switching on it narrows `payload`. */
export type UplinkCommandMessage = { [K in UplinkCommandType]: CommandMessage<K, UplinkPayload<K>> }[UplinkCommandType];
export type UplinkDataMessage = { [K in UplinkDataType]: DataMessage<K, UplinkPayload<K>> }[UplinkDataType];
/** What arrives on `wdd/RDMC/command/up` or `wdd/RDMC/message/up`. */
/** A parsed uplink; `sent`: its text, when the signature can be checked against it as sent (signing.ts sentText). */
export type Uplink =
  | { kind: 'command'; msg: UplinkCommandMessage; sent?: SentText }
  | { kind: 'data'; msg: UplinkDataMessage; sent?: SentText };

/** The topic each kind travels on. */
export const UPLINK_TOPIC = { command: TOPIC_COMMAND_UP, data: TOPIC_MESSAGE_UP } as const;

export const UPLINK_TYPES = Object.keys(UPLINKS) as readonly UplinkType[];
const typesWhere = <T extends UplinkType>(keep: (spec: UplinkSpec) => boolean): readonly T[] =>
  UPLINK_TYPES.filter((t) => keep(UPLINKS[t])) as T[];
export const UPLINK_COMMAND_TYPES = typesWhere<UplinkCommandType>((s) => s.kind === 'command');
export const UPLINK_DATA_TYPES = typesWhere<UplinkDataType>((s) => s.kind === 'data');

/** The types `owner` handles, in table order. */
export const uplinkTypesOf = <O extends UplinkOwner>(owner: O): readonly UplinkTypeOf<O>[] =>
  typesWhere<UplinkTypeOf<O>>((s) => s.owner === owner);

/**
 * The entry of a type an agent named, or undefined for a type the hub does not know. Own keys
 * only: `constructor` or `__proto__` from the wire never reach the prototype.
 */
export function uplinkSpec(type: string): UplinkSpec | undefined {
  return Object.hasOwn(UPLINKS, type) ? UPLINKS[type as UplinkType] : undefined;
}
