/**
 * The envelope every message shares (docs/wire-protocol.md#the-envelope), its schemas, and the
 * steps before a payload is looked at: size, UTF-8, JSON, envelope, project id. The payload is
 * validated against its type's schema last, and the message stays bound to what was sent, since
 * the signature covers that (docs/wire-protocol.md#signing, signing.ts).
 */
import { z } from 'zod';
import { bindSignedSource } from '../signing.js';
import { fail, kindOf, type ParseResult, schemaFailure, show } from './describe.js';
import { uuid, wireTime } from './fields.js';
import { COMMAND_TYPE_RE, DEFAULT_MAX_MESSAGE_BYTES, isValidProjectId, PROTOCOL_VERSION } from './wire.js';

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

export interface ParseOptions {
  /** Refuse larger messages before decoding them; default 256 KiB. */
  maxBytes?: number;
}

const utf8 = new TextDecoder('utf-8', { fatal: true });

/** Size check, then UTF-8, then JSON, then "is an object". */
export function decode(raw: unknown, opts: ParseOptions | undefined): ParseResult<Record<string, unknown>> {
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
export function checkEnvelope<S extends typeof CommandMessageSchema | typeof DataMessageSchema>(
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
export function withPayload<M extends { payload: unknown }>(
  envelope: M,
  schema: z.ZodType,
  raw: Record<string, unknown>,
  plain?: (payload: unknown) => unknown,
): ParseResult<M> {
  let data = plain?.(envelope.payload);
  if (data === undefined) {
    const payload = schema.safeParse(envelope.payload);
    if (!payload.success) return schemaFailure(payload.error, raw, ['payload']);
    data = payload.data;
  }
  const msg = { ...envelope, payload: data };
  // Defaults may have been filled in; the signature covers what the sender sent (docs/wire-protocol.md#signing).
  // A message that is the sent object's own fields (plain.ts changed nothing) is its own source:
  // it canonicalises to the same text, and a WeakMap entry per uplink costs the collector too.
  if (envelope !== (raw as unknown) || data !== raw.payload) bindSignedSource(msg, raw);
  return { ok: true, value: msg };
}
