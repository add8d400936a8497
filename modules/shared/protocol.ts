/**
 * The MQTT wire protocol shared by every hub module and by the agent (docs/wire-protocol.md#mqtt-wire-protocol).
 * Topic names, field names, type names and the signature rule are a fixed contract with agents
 * we do not control: do not rename anything here.
 *
 * This file is the protocol's one import path; the parts are in `protocol/`, one job each:
 * - `wire.ts`: topics, version, size limit, project id and type name rules;
 * - `envelope.ts`: the envelope, its schemas, and decoding up to the payload;
 * - `fields.ts`: field schemas and the tolerant reading of the seed's shapes (times, null payloads);
 * - `uplinks.ts`: **the table of uplink types** (`UPLINKS`): payload, signing, freshness,
 *   durability and owner of each; everything that enumerates uplink types reads it;
 * - `downlinks.ts`: the downlink data types (`register_ack`, `reregister`);
 * - `parse.ts`: `parseUplink` / `parseDownlink` / `peekUplink`, which never throw;
 * - `build.ts`: `buildCommand` / `buildData` / `signedCommandJson`, signed and checked at the sender
 *   (`toWire`, from signing.ts, writes a built message as the text it was signed over);
 * - `describe.ts`: parse results and refusal reasons naming the field.
 *
 * @example
 *   const r = parseUplink(topic, packet.payload);
 *   if (!r.ok) return reject(r.code, r.reason);
 *   if (r.value.kind === 'data' && r.value.msg.data_type === 'exec_result') {
 *     r.value.msg.payload.exit_code; // number
 *   }
 */

export { buildCommand, buildData, newMessageId, signedCommandJson } from './protocol/build.js';
export { PARSE_ERROR_CODES, type ParseErrorCode, type ParseResult } from './protocol/describe.js';
export {
  DOWNLINK_DATA_TYPES,
  type Downlink,
  type DownlinkDataMessage,
  type DownlinkDataPayloads,
  type DownlinkDataType,
  type RegisterAckPayload,
  RegisterAckPayloadSchema,
  type ReregisterPayload,
  ReregisterPayloadSchema,
} from './protocol/downlinks.js';
export {
  type BaseMessage,
  type CommandMessage,
  CommandMessageSchema,
  type DataMessage,
  DataMessageSchema,
  type ParseOptions,
} from './protocol/envelope.js';
export { parseRfc3339 } from './protocol/fields.js';
export { parseDownlink, parseUplink, peekUplink } from './protocol/parse.js';
export {
  type AlertLevel,
  type AlertPayload,
  AlertPayloadSchema,
  type CommandAckPayload,
  CommandAckPayloadSchema,
  type DisconnectPayload,
  DisconnectPayloadSchema,
  type ExecResultPayload,
  ExecResultPayloadSchema,
  type ExecStatus,
  type Freshness,
  type HeartbeatPayload,
  HeartbeatPayloadSchema,
  type LogResultPayload,
  LogResultPayloadSchema,
  type MonitorPayload,
  MonitorPayloadSchema,
  type NodeVersion,
  type RegisterCommand,
  type RegisterCompletePayload,
  RegisterCompletePayloadSchema,
  type RegisterPayload,
  type RegisterPayloadInput,
  RegisterPayloadSchema,
  UPLINK_COMMAND_TYPES,
  UPLINK_DATA_TYPES,
  UPLINK_TOPIC,
  UPLINK_TYPES,
  UPLINKS,
  type Uplink,
  type UplinkCommandMessage,
  type UplinkCommandType,
  type UplinkDataMessage,
  type UplinkDataPayloads,
  type UplinkDataType,
  type UplinkOwner,
  type UplinkPayload,
  type UplinkSpec,
  type UplinkType,
  type UplinkTypeOf,
  uplinkSpec,
  uplinkTypesOf,
  type WireTime,
} from './protocol/uplinks.js';
export {
  COMMAND_TYPE_RE,
  commandDownTopic,
  DEFAULT_MAX_MESSAGE_BYTES,
  isUuid,
  isValidProjectId,
  MAX_PROJECT_ID_BYTES,
  messageDownTopic,
  PROTOCOL_VERSION,
  TOPIC_COMMAND_UP,
  TOPIC_MESSAGE_UP,
  UUID_RE,
} from './protocol/wire.js';
export { toWire } from './signing.js';
