/**
 * The downlink data types (hub → agent on `wdd/RDMC/message/down/{project_id}`): `register_ack`
 * answers every register, `reregister` asks for one. Commands go down as any `command_type`
 * with any JSON payload; the agent's handlers check those.
 */
import { z } from 'zod';
import type { SentText } from '../signing.js';
import type { CommandMessage, DataMessage } from './envelope.js';
import { int, orEmpty } from './fields.js';

export interface RegisterAckPayload {
  accepted: boolean;
  reason?: string;
  heartbeat_interval_s: number;
}
export interface ReregisterPayload {
  reason?: string;
}

export const RegisterAckPayloadSchema: z.ZodType<RegisterAckPayload> = z.looseObject({
  accepted: z.boolean(),
  reason: z.string().optional(),
  heartbeat_interval_s: int().positive(),
});
export const ReregisterPayloadSchema: z.ZodType<ReregisterPayload> = orEmpty(
  z.looseObject({ reason: z.string().optional() }),
);

export interface DownlinkDataPayloads {
  register_ack: RegisterAckPayload;
  reregister: ReregisterPayload;
}
export type DownlinkDataType = keyof DownlinkDataPayloads;

export const DOWNLINK_DATA_PAYLOAD_SCHEMAS: { readonly [K in DownlinkDataType]: z.ZodType<DownlinkDataPayloads[K]> } = {
  register_ack: RegisterAckPayloadSchema,
  reregister: ReregisterPayloadSchema,
};
export const DOWNLINK_DATA_TYPES = Object.keys(DOWNLINK_DATA_PAYLOAD_SCHEMAS) as readonly DownlinkDataType[];

/** Discriminated on `data_type`: switching on it narrows `payload`. */
export type DownlinkDataMessage = {
  [K in DownlinkDataType]: DataMessage<K, DownlinkDataPayloads[K]>;
}[DownlinkDataType];
/** What arrives on `.../command/down/{project_id}` (any command) or `.../message/down/{project_id}`. */
/** A parsed downlink; `sent`: its text, when the signature can be checked against it as sent (signing.ts sentText). */
export type Downlink =
  | { kind: 'command'; msg: CommandMessage; sent?: SentText }
  | { kind: 'data'; msg: DownlinkDataMessage; sent?: SentText };
