/**
 * Outbound: `buildCommand` / `buildData` make well-formed, signed messages (docs/wire-protocol.md#signing).
 * Payloads of known types are checked against their schema here, so a bad message fails at the
 * sender, not at the receiver.
 */
import { randomUUID } from 'node:crypto';
import type { z } from 'zod';
import { HubError } from '../../../core/errors.js';
import { bindCanonicalText, canonicalJson, signCanonical, wireText } from '../signing.js';
import { schemaFailure, show } from './describe.js';
import { DOWNLINK_DATA_PAYLOAD_SCHEMAS } from './downlinks.js';
import type { CommandMessage, DataMessage } from './envelope.js';
import { uplinkSpec } from './uplinks.js';
import { COMMAND_TYPE_RE, isUuid, isValidProjectId, PROTOCOL_VERSION } from './wire.js';

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
 * The payload as RFC 8785 canonical JSON: what the message carries and what its signature
 * covers, so the caller's objects are never shared with the message (a later mutation would
 * break the signature) and values JSON cannot carry fail here, not at the receiver.
 */
function canonicalPayload(payload: unknown): string {
  if (payload === undefined) throw new HubError('PROTO_ERR_SCHEMA', 'payload: required (use null for "nothing")');
  try {
    return canonicalJson(payload);
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
  if (!isUuid(messageId)) {
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

/** The schema a known type's payload must match: an uplink of that kind, or (data) a downlink. */
function knownSchema(kind: 'command' | 'data', typeName: string): z.ZodType | undefined {
  const spec = uplinkSpec(typeName);
  if (spec?.kind === kind) return spec.schema;
  if (kind === 'data' && Object.hasOwn(DOWNLINK_DATA_PAYLOAD_SCHEMAS, typeName)) {
    return DOWNLINK_DATA_PAYLOAD_SCHEMAS[typeName as keyof typeof DOWNLINK_DATA_PAYLOAD_SCHEMAS];
  }
  return undefined;
}

const typeField = (kind: 'command' | 'data') => (kind === 'command' ? 'command_type' : 'data_type');

function checkTypeName(kind: 'command' | 'data', typeName: string): void {
  if (typeof typeName !== 'string' || !COMMAND_TYPE_RE.test(typeName)) {
    const field = typeField(kind);
    throw new HubError('PROTO_ERR_SCHEMA', `${field}: must match ${COMMAND_TYPE_RE}, got ${show(typeName)}`, { field });
  }
}

/** A known type's payload checked against its schema, so a bad message fails at the sender. */
function checkKnownPayload(kind: 'command' | 'data', typeName: string, body: unknown): void {
  const r = knownSchema(kind, typeName)?.safeParse(body);
  if (r && !r.success) {
    const f = schemaFailure(r.error, { payload: body }, ['payload']);
    throw new HubError('PROTO_ERR_SCHEMA', `${typeField(kind)} ${typeName}: ${f.reason}`, { field: 'payload' });
  }
}

/** A JSON-only copy of the payload, checked when its type is known. */
function checkedBody(kind: 'command' | 'data', typeName: string, payload: unknown): unknown {
  const body = JSON.parse(canonicalPayload(payload));
  checkKnownPayload(kind, typeName, body);
  return body;
}

/**
 * A signed command (docs/wire-protocol.md#signing). Throws a HubError (PROTO_ERR_PROJECT_ID, PROTO_ERR_SCHEMA) for
 * an invalid project id, command type, message id, timestamp, a payload that JSON cannot carry,
 * or a `register` payload that does not match its schema; a TypeError for an empty secret.
 *
 * @example
 *   const cmd = buildCommand('plant-7', 'host_exec', { script: 'uptime' }, secret);
 *   mqtt.publish(commandDownTopic('plant-7'), toWire(cmd), { qos: 1 });
 */
export function buildCommand(
  projectId: string,
  commandType: string,
  payload: unknown,
  secret: string,
  opts?: BuildOptions,
): CommandMessage {
  const { json, canonical } = composeCommand(projectId, commandType, () => canonicalPayload(payload), secret, opts);
  const cmd: CommandMessage = JSON.parse(json);
  bindCanonicalText(cmd, canonical);
  return cmd;
}

/**
 * A signed command as the JSON text to publish, from a payload already in canonical form (the
 * send path has it from validation): the canonical text of the message is composed around it
 * rather than walked again, and the signature is the HMAC of that text. Keys are written in
 * RFC 8785 order (UTF-16 code units); strings and the integer timestamp are what
 * `JSON.stringify` writes, which is what RFC 8785 specifies for them. The text sent is that
 * text with the signature added last (signing.ts wireText), which the receiver verifies as sent.
 * Checks and throws like `buildCommand`. `canonicalPayloadJson` must be canonicalJson output.
 *
 * @example
 *   const { message_id, json } = signedCommandJson('plant-7', 'echo', canonicalJson({ a: 1 }), secret);
 */
export function signedCommandJson(
  projectId: string,
  commandType: string,
  canonicalPayloadJson: string,
  secret: string,
  opts?: BuildOptions,
): { message_id: string; json: string } {
  const { message_id, json } = composeCommand(projectId, commandType, () => canonicalPayloadJson, secret, opts);
  return { message_id, json };
}

/** Both of the above: the envelope checked first, then the payload (so errors name the first bad field). */
function composeCommand(
  projectId: string,
  commandType: string,
  payloadJson: () => string,
  secret: string,
  opts: BuildOptions | undefined,
): { message_id: string; json: string; canonical: string } {
  checkTypeName('command', commandType);
  const base = baseFields(projectId, 'command', opts);
  const canonicalPayloadJson = payloadJson();
  if (knownSchema('command', commandType)) checkKnownPayload('command', commandType, JSON.parse(canonicalPayloadJson));
  const type = JSON.stringify(commandType);
  const id = JSON.stringify(base.message_id);
  const project = JSON.stringify(base.project_id);
  const version = JSON.stringify(base.version);
  const canonical =
    `{"command_type":${type},"message_id":${id},"payload":${canonicalPayloadJson},"project_id":${project}` +
    `,"timestamp":${base.timestamp},"type":"command","version":${version}}`;
  // on the wire as signed, the signature added last: the receiver verifies the bytes as sent (signing.ts wireText)
  const json = wireText(canonical, signCanonical(canonical, secret));
  return { message_id: base.message_id, json, canonical };
}

/**
 * A data message; signed when `secret` is given (the hub and agent sign everything they can).
 * Throws like `buildCommand`; payloads of known data types (uplink and downlink) are checked
 * against their schema.
 *
 * @example
 *   const ack = buildData('plant-7', 'command_ack', { command_id }, { secret });
 *   mqtt.publish(TOPIC_MESSAGE_UP, toWire(ack), { qos: 1 });
 */
export function buildData(
  projectId: string,
  dataType: string,
  payload: unknown,
  opts?: BuildOptions & { encrypted?: boolean; secret?: string },
): DataMessage & { signature?: string } {
  checkTypeName('data', dataType);
  const base = baseFields(projectId, 'message', opts);
  const body = checkedBody('data', dataType, payload);
  const unsigned: DataMessage = { ...base, data_type: dataType, payload: body, encrypted: opts?.encrypted ?? false };
  if (opts?.secret === undefined) return unsigned;
  const canonical = canonicalJson(unsigned);
  const signed = { ...unsigned, signature: signCanonical(canonical, opts.secret) };
  // toWire(signed) writes the text it was signed over, which its receiver verifies as sent
  bindCanonicalText(signed, canonical);
  return signed;
}
