/**
 * The embedded broker's bus contract
 * (docs/conventions.md#each-domain-owns-its-bus-topics): every topic the broker module publishes or
 * answers, with its payload type. Other modules import this file, never the module itself.
 */
export const BROKER = {
  /** request {} → BrokerHubCredential — the hub's own MQTT credential on the embedded broker */
  hubCredential: 'broker/hub-credential',
  /** request {} → BrokerStats */
  stats: 'broker/stats',
  /** event BrokerDeniedEvent */
  denied: 'broker/denied',
  /**
   * request BrokerWsConnection → { ok: true } — an MQTT-over-WebSocket connection the web module
   * accepted on its port (`/mqtt`), handed to the embedded broker as a byte stream (in-process only)
   */
  wsConnection: 'broker/ws-connection',
} as const;

export interface BrokerWsConnection {
  /** The WebSocket as a byte stream (`ws` createWebSocketStream): aedes handles it like a TCP socket. */
  stream: import('node:stream').Duplex;
  remote_address: string;
}

export interface BrokerHubCredential {
  username: string;
  password: string;
}
export interface BrokerDeniedEvent {
  client_id: string;
  project_id?: string;
  /** what was refused: the connection, a publish (the will included) or a subscription */
  kind: 'auth' | 'publish' | 'subscribe';
  /**
   * auth: anonymous, bad_credentials, auth_unavailable:<code>, max_clients, client_id_in_use,
   * will_<publish reason>, revoked_<credentials change> (a connected agent whose login stopped
   * authenticating: revoked_disabled, revoked_rotated, revoked_overlap_ended); publish: topic,
   * project_id, not_json, too_large, rate_limit_disconnect, packet_too_large, sys_topic;
   * subscribe: topic
   */
  reason: string;
  topic?: string;
  at: number;
}
export interface BrokerStats {
  /** the listening port (useful with `port: 0`) */
  port: number;
  /** connected clients now */
  clients: number;
  /** CONNECTs accepted since start */
  connections_total: number;
  denied_auth: number;
  denied_publish: number;
  denied_subscribe: number;
  /** messages dropped to protect the broker: shed_rate + shed_overload */
  shed: number;
  /** over an agent's rate limit (QoS 0 dropped; QoS 1/2 dropped unacknowledged with the connection) */
  shed_rate: number;
  /** QoS 0 dropped while max_waiting messages already waited for a delivery slot */
  shed_overload: number;
  /** client publishes admitted (after rate limit and ACL) */
  messages_in: number;
  /** deliveries to subscribers */
  messages_out: number;
  /** connections closed for a packet over max_packet_bytes */
  oversized: number;
  /** clients ended for silence past 1.5× their keepalive (their wills published) */
  keepalive_timeouts: number;
  /** deliveries under way / publishes waiting for a slot */
  inflight: number;
  waiting: number;
  /** agent sessions closed because their login stopped authenticating (disabled, rotated out) */
  revoked?: number;
  /** every denial by kind and reason (BrokerDeniedEvent), reported or not */
  denials?: Array<{ kind: BrokerDeniedEvent['kind']; reason: string; count: number }>;
}
