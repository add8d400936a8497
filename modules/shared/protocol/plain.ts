/**
 * The common case without zod: a data envelope and the payloads of the frequent uplinks
 * (heartbeat, command_ack, log_result, exec_result) that are plainly valid
 * (the types the schemas ask for, nothing to refuse), turned into what the schemas would output
 * without running them. Anything else — a wrong type, a missing field, a key that could not be an
 * own data property of a copy (`__proto__`) — gives `undefined`, and the zod schema decides and
 * words the refusal as before. Every data uplink passes here: zod's envelope and heartbeat schemas
 * were about a tenth of the hub's CPU under bench heartbeat, and the copies they return about a
 * sixth of the bytes it allocated.
 *
 * The output may share objects with the input (a heartbeat's `metrics`), where zod copies. Inputs
 * are what JSON.parse made (decode): nothing else holds them, and the signature is checked
 * against that object (the message itself when it is that object's own fields, else the object
 * withPayload binds to it) before any module sees the message.
 *
 * test/modules/shared/plain.test.ts holds both to their schemas: for any input, a defined result
 * equals the schema's output, and the shapes agents send (the bench's, the seed's) take this path.
 */
import { z } from 'zod';
import type { DataMessageSchema } from './envelope.js';
import { parseRfc3339 } from './fields.js';
import type { CommandAckPayload, ExecResultPayload, HeartbeatPayload, LogResultPayload } from './uplinks.js';
import { isValidProjectId, PROTOCOL_VERSION } from './wire.js';

type Plain = Record<string, unknown>;
/** What DataMessageSchema outputs. */
type DataEnvelope = z.output<typeof DataMessageSchema>;

/** A non-array object whose own keys can all be copied as data (JSON.parse keeps `__proto__` as an own key; a copy would not). */
function plainObject(v: unknown): v is Plain {
  return typeof v === 'object' && v !== null && !Array.isArray(v) && !Object.hasOwn(v, '__proto__');
}

/** A time as wireTime outputs it: ms, from ms or an RFC 3339 string; undefined when wireTime would refuse it. */
function wireMs(v: unknown): number | undefined {
  if (typeof v === 'number') return Number.isSafeInteger(v) && v >= 0 ? v : undefined;
  if (typeof v === 'string') return parseRfc3339(v) ?? undefined;
  return undefined;
}

const optionalString = (v: unknown): boolean => v === undefined || typeof v === 'string';
const optionalCount = (v: unknown): boolean =>
  v === undefined || (typeof v === 'number' && Number.isFinite(v) && v >= 0);

/**
 * DataMessageSchema's output for `obj` (and a valid project id), or undefined for the schema to decide.
 *
 * @example plainDataEnvelope(JSON.parse(text))?.data_type === 'heartbeat'
 */
export function plainDataEnvelope(obj: Plain): DataEnvelope | undefined {
  if (
    Object.hasOwn(obj, '__proto__') ||
    obj.type !== 'message' ||
    obj.version !== PROTOCOL_VERSION ||
    typeof obj.message_id !== 'string' ||
    !z.regexes.guid.test(obj.message_id) ||
    !isValidProjectId(obj.project_id) ||
    typeof obj.data_type !== 'string' ||
    typeof obj.encrypted !== 'boolean' ||
    obj.payload === undefined || // any value, but present (JSON has no undefined)
    !optionalString(obj.signature)
  ) {
    return undefined;
  }
  const ms = wireMs(obj.timestamp);
  if (ms === undefined) return undefined;
  // the object itself when nothing changes: the caller copies it into the message (withPayload)
  return (ms === obj.timestamp ? obj : { ...obj, timestamp: ms }) as DataEnvelope;
}

/**
 * HeartbeatPayloadSchema's output for `payload`, or undefined for the schema to decide: `null`
 * reads as `{}`, `timestamp` as ms, and `uptime_s` is `uptime` when only that was sent.
 */
export function plainHeartbeat(payload: unknown): HeartbeatPayload | undefined {
  if (payload === null) return {};
  if (!plainObject(payload)) return undefined;
  const p = payload;
  if (
    !optionalString(p.instance_id) ||
    !optionalString(p.node_name) ||
    !optionalString(p.status) ||
    !optionalString(p.version) ||
    !optionalString(p.hostname) ||
    !(p.pid === undefined || (Number.isSafeInteger(p.pid) && (p.pid as number) >= 0)) ||
    !optionalCount(p.uptime) ||
    !optionalCount(p.uptime_s) ||
    !(p.metrics === undefined || plainObject(p.metrics))
  ) {
    return undefined;
  }
  let out: Plain = p;
  if (p.timestamp !== undefined) {
    const ms = wireMs(p.timestamp);
    if (ms === undefined) return undefined;
    if (ms !== p.timestamp) out = { ...out, timestamp: ms };
  }
  if (p.uptime_s === undefined && p.uptime !== undefined) out = { ...out, uptime_s: p.uptime };
  return out as HeartbeatPayload;
}

const isGuid = (v: unknown): boolean => typeof v === 'string' && z.regexes.guid.test(v);
const EXEC_STATUSES: ReadonlySet<unknown> = new Set(['success', 'failure', 'timeout']);

/** CommandAckPayloadSchema's output for `payload`, or undefined for the schema to decide. */
export function plainCommandAck(payload: unknown): CommandAckPayload | undefined {
  return plainObject(payload) && isGuid(payload.command_id) ? (payload as unknown as CommandAckPayload) : undefined;
}

/** LogResultPayloadSchema's output for `payload`, or undefined for the schema to decide. */
export function plainLogResult(payload: unknown): LogResultPayload | undefined {
  if (!plainObject(payload)) return undefined;
  const p = payload;
  const ok =
    isGuid(p.command_id) && Number.isSafeInteger(p.seq) && (p.seq as number) >= 0 && typeof p.content === 'string';
  return ok ? (p as unknown as LogResultPayload) : undefined;
}

/**
 * ExecResultPayloadSchema's output for `payload`, or undefined for the schema to decide: times
 * read as ms, `output` and `error` '' when absent.
 */
export function plainExecResult(payload: unknown): ExecResultPayload | undefined {
  if (!plainObject(payload)) return undefined;
  const p = payload;
  if (
    !isGuid(p.command_id) ||
    !EXEC_STATUSES.has(p.status) ||
    !Number.isSafeInteger(p.exit_code) ||
    !Number.isSafeInteger(p.duration) ||
    (p.duration as number) < 0 ||
    !optionalString(p.output) ||
    !optionalString(p.error)
  ) {
    return undefined;
  }
  const start = wireMs(p.start_time);
  const end = wireMs(p.end_time);
  if (start === undefined || end === undefined) return undefined;
  if (start === p.start_time && end === p.end_time && p.output !== undefined && p.error !== undefined) {
    return p as unknown as ExecResultPayload;
  }
  return { ...p, start_time: start, end_time: end, output: p.output ?? '', error: p.error ?? '' } as ExecResultPayload;
}
