/**
 * Inbound: `parseUplink` (hub side) and `parseDownlink` (agent side) never throw; they return a
 * typed message or an error code with a reason naming the field. They do not check signatures,
 * clocks or replays: the receiver knows the secret and calls `verifyInbound` (signing.ts) next.
 */
import { findUnsafeJson } from '../sanitize.js';
import { bindSignedSource, sentText } from '../signing.js';
import { type Fail, fail, type ParseResult, show } from './describe.js';
import {
  DOWNLINK_DATA_PAYLOAD_SCHEMAS,
  type Downlink,
  type DownlinkDataMessage,
  type DownlinkDataType,
} from './downlinks.js';
import {
  type CommandMessage,
  CommandMessageSchema,
  checkEnvelope,
  DataMessageSchema,
  decode,
  type ParseOptions,
  withPayload,
} from './envelope.js';
import { plainDataEnvelope } from './plain.js';
import { type Uplink, type UplinkSpec, uplinkSpec } from './uplinks.js';
import {
  COMMAND_DOWN_PREFIX,
  COMMAND_TYPE_RE,
  isValidProjectId,
  MESSAGE_DOWN_PREFIX,
  TOPIC_COMMAND_UP,
  TOPIC_MESSAGE_UP,
} from './wire.js';

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
 * command) or `wdd/RDMC/message/up` (an uplink data message): its type must be one of the table
 * (uplinks.ts) of the topic's kind. Never throws. Does not verify the signature: call
 * `verifyInbound(result.value.msg, ...)` next.
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
    // a plainly valid data envelope skips its schema (plain.ts); the rest is checked and refused by it
    const plainEnv = isCommand ? undefined : plainDataEnvelope(obj);
    const env = plainEnv
      ? ({ ok: true, value: plainEnv } as const)
      : isCommand
        ? checkEnvelope(obj, 'command', topic, CommandMessageSchema)
        : checkEnvelope(obj, 'message', topic, DataMessageSchema);
    if (!env.ok) return env;
    const kind = isCommand ? 'command' : 'data';
    const field = isCommand ? 'command_type' : 'data_type';
    // a string either way (both envelope schemas say so); the union of the two outputs reads as unknown
    const type = String(isCommand ? env.value.command_type : env.value.data_type);
    const spec = uplinkSpec(type);
    if (spec?.kind !== kind)
      return fail('PROTO_ERR_UNKNOWN_TYPE', `${field}: unknown uplink ${kind} type ${show(type)}`);
    const r = withPayload(env.value, spec.schema, obj, spec.plain);
    if (!r.ok) return r;
    const unsafe = unsafePayload(spec, r.value.payload);
    if (unsafe) return unsafe;
    // its signature is checked against these bytes first (signing.ts signedAsSent)
    return { ok: true, value: { kind, msg: r.value, sent: sentText(r.value, raw) } as Uplink };
  });
}

/**
 * PROTO_ERR_UNSAFE_VALUE when an uplink's payload holds something the hub cannot store or serve
 * (NUL, a lone surrogate, nesting past the depth limit, too many values): refused here, once, so
 * it never reaches a presence batch, a jsonb column or a listing. A type's output fields (what a
 * real command printed) are exempt: stored cleaned (command/uplink.ts `clean`), never refused,
 * since refusing them would lose a real result.
 */
function unsafePayload(spec: UplinkSpec, payload: unknown): Fail | null {
  let checked = payload;
  const exempt = spec.outputFields;
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
      return { ok: true, value: { kind: 'command', msg, sent: sentText(msg, raw) } };
    }
    const env = checkEnvelope(obj, 'message', topic, DataMessageSchema);
    if (!env.ok) return env;
    if (env.value.project_id !== topicProject) return mismatch(env.value.project_id);
    const type = env.value.data_type;
    if (!Object.hasOwn(DOWNLINK_DATA_PAYLOAD_SCHEMAS, type)) {
      return fail('PROTO_ERR_UNKNOWN_TYPE', `data_type: unknown downlink data type ${show(type)}`);
    }
    const r = withPayload(env.value, DOWNLINK_DATA_PAYLOAD_SCHEMAS[type as DownlinkDataType], obj);
    if (!r.ok) return r;
    const msg = r.value as unknown as DownlinkDataMessage;
    return { ok: true, value: { kind: 'data', msg, sent: sentText(msg, raw) } };
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
