/**
 * The MQTT bridge's bus contract
 * (docs/conventions.md#each-domain-owns-its-bus-topics): every topic the mqtt-bridge module publishes or
 * answers, with its payload type. Other modules import this file, never the module itself.
 * Project ids in topics are safe: isValidProjectId forbids `/`, `+`, `#` and NUL.
 */
import type { CommandMessage, DataMessage } from '../../shared/protocol.js';

export const BRIDGE = {
  /** event UplinkEvent — a valid uplink from an agent: `hub/uplink/{project_id}/{kind}/{type}` */
  uplink: (projectId: string, kind: 'command' | 'data', type: string) => `hub/uplink/${projectId}/${kind}/${type}`,
  uplinkPattern: (kind: 'command' | 'data', type: string) => `hub/uplink/+/${kind}/${type}`,
  /** request MqttPublishRequest → MqttPublishReply, answered after the broker's PUBACK (QoS 1) */
  publish: 'mqtt/publish',
  /** event BridgeStateEvent */
  state: 'mqtt/state',
  /** event BridgeRejectedEvent — an uplink refused by the parser (counted by the bridge) */
  rejected: 'mqtt/rejected',
  /** request {} → BridgeStats */
  stats: 'mqtt/stats',
} as const;

export interface UplinkEvent<M = CommandMessage | DataMessage> {
  msg: M;
  /** MQTT topic it arrived on. */
  topic: string;
  received_at: number;
}

/**
 * What the owner of a durable uplink (register, register_complete, disconnect, command_ack,
 * exec_result: the bridge sends them as requests) may answer: the request settles when the
 * handler returns, and the bridge acknowledges the uplink to the broker once `written` resolves
 * too. A handler that returns a promise instead holds its mailbox until it settles.
 */
export interface DurableReply {
  written: Promise<void>;
}

export interface MqttPublishRequest {
  topic: string;
  /** Serialised once by the publisher (JSON text), so the bridge never copies objects. */
  payload: string;
  qos?: 0 | 1;
  retain?: boolean;
}
export interface MqttPublishReply {
  ok: true;
}
export interface BridgeStateEvent {
  state: 'connected' | 'disconnected' | 'reconnecting' | 'offline';
  error?: string;
  at: number;
}
/** `mqtt/rejected`: an uplink the parser refused (the payload itself is never repeated). */
export interface BridgeRejectedEvent {
  topic: string;
  code: string;
  reason: string;
  at: number;
  /** The sender's project and the message type, when they could be read (status answers a refused register). */
  project_id?: string;
  type?: string;
}
/** `mqtt/stats` reply. Times are ms since the epoch. */
export interface BridgeStats {
  state: BridgeStateEvent['state'];
  connected_since: number | null;
  /** scheme://host:port, never credentials */
  broker: string;
  client_id: string;
  /** valid uplinks handed to the bus */
  received: number;
  rejected_by_code: Record<string, number>;
  /** valid uplinks a full mailbox refused */
  dropped_by_bus: number;
  /** state-carrying uplinks acknowledged after their write, left unacknowledged, waiting now, too slow */
  durable_acked?: number;
  durable_withheld?: number;
  durable_waiting?: number;
  durable_timeouts?: number;
  /** write attempts after a failed one (owner restarting, database down, credentials unreadable) */
  durable_retried?: number;
  /** valid signatures that matched the text as sent, and those that matched a canonical text built again */
  signatures_as_sent?: number;
  signatures_canonical?: number;
  /** projects in the verification step's credential read model */
  credentials_cached?: number;
  published: number;
  publish_failures: number;
  publish_in_flight: number;
  publish_ms_avg: number;
  publish_ms_max: number;
  /** reconnect attempts (after a lost connection or a failed attempt) */
  reconnects: number;
  /** successful CONNACKs, the first one included */
  connects: number;
}
