/**
 * The bus contract between the hub's modules (docs/conventions.md#one-catalogue-of-bus-topics): every topic a module publishes
 * or answers, with its payload type. Modules never import one another; they import this file.
 * Project ids in topics are safe: isValidProjectId forbids `/`, `+`, `#` and NUL.
 */
import type { AlertPayload, CommandMessage, DataMessage, ExecResultPayload, MonitorPayload } from './protocol.js';

// ─── mqtt-bridge ───────────────────────────────────────────────────────────────────────────
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

// ─── broker (embedded) ─────────────────────────────────────────────────────────────────────
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
  /** deliveries under way / publishes waiting for a slot */
  inflight: number;
  waiting: number;
  /** agent sessions closed because their login stopped authenticating (disabled, rotated out) */
  revoked?: number;
  /** every denial by kind and reason (BrokerDeniedEvent), reported or not */
  denials?: Array<{ kind: BrokerDeniedEvent['kind']; reason: string; count: number }>;
}

// ─── status ────────────────────────────────────────────────────────────────────────────────
export type PresenceState = 'offline' | 'connecting' | 'verifying' | 'online' | 'disconnecting';

export const STATUS = {
  /** request CreateProjectRequest → CreatedProject (the secret is shown this once) */
  create: 'status/project/create',
  /** request { include_disabled?: boolean, limit?, offset? } → { items: ProjectView[], total } */
  list: 'status/project/list',
  /** request { project_id } → ProjectView (STATUS_ERR_NOT_FOUND) */
  get: 'status/project/get',
  /** request { project_id } → ProjectView */
  disable: 'status/project/disable',
  /** request { project_id } → ProjectView */
  enable: 'status/project/enable',
  /** request { project_id, overlap_s? } → CreatedProject — the old secret keeps working for overlap_s */
  rotate: 'status/project/rotate',
  /** request { project_id } → ProjectCredentials (module-internal: signing and broker auth) */
  credentials: 'status/project/credentials',
  /** request { username, password } → { ok: boolean, project_id?: string } (broker auth) */
  authenticate: 'status/project/authenticate',
  /** request {} → { items: ProjectView[] } (state online) */
  online: 'status/online/list',
  /** event StatusChangedEvent: `status/event/{project_id}` */
  changed: (projectId: string) => `status/event/${projectId}`,
  changedPattern: 'status/event/+',
  /** event { project_id, metrics, at }: `status/monitor/{project_id}` */
  monitor: (projectId: string) => `status/monitor/${projectId}`,
  /** event { project_id, alert, at }: `status/alert/{project_id}` */
  alert: (projectId: string) => `status/alert/${projectId}`,
  /** request {} → status module counters (uplinks, presence, flushes) */
  stats: 'status/stats',
  /**
   * event CredentialsChangedEvent — a project's credentials or enabled flag changed (created,
   * disabled, enabled, rotated, a rotated-out secret's overlap ended): every cache of
   * credentials (the bridge's verifier, the broker's auth cache) drops the project at once.
   */
  credentialsChanged: 'status/project/credentials-changed',
} as const;

export interface CredentialsChangedEvent {
  project_id: string;
  /** what happened: created | disabled | enabled | rotated | overlap_ended */
  change: 'created' | 'disabled' | 'enabled' | 'rotated' | 'overlap_ended';
  at: number;
}

export interface CreateProjectRequest {
  project_id?: string;
  name?: string;
  metadata?: Record<string, unknown>;
}
export interface CreatedProject {
  project_id: string;
  /** Shown once: only its hash-free copy lives in the database for signing; never logged. */
  secret: string;
  mqtt_username: string;
  mqtt_password: string;
}
export interface ProjectView {
  project_id: string;
  name: string | null;
  enabled: boolean;
  state: PresenceState;
  state_since: string | null;
  last_heartbeat_at: string | null;
  instance_id: string | null;
  agent_version: string | null;
  metrics: MonitorPayload['metrics'] | null;
  last_alert: AlertPayload | null;
  created_at: string;
  /** The accepted registration (seed 002 fields; node_version a string or an object, as sent). */
  registration: Record<string, unknown> | null;
  /** Uplinks of this project refused as malformed since the hub started (counted, shown, not only logged). */
  rejected_uplinks: number;
  last_rejected: RejectedUplink | null;
}
/** The last malformed uplink of a project: its type when readable, the parser's code and reason. */
export interface RejectedUplink {
  type: string | null;
  code: string;
  reason: string;
  /** ISO 8601 */
  at: string;
}
export interface ProjectCredentials {
  project_id: string;
  enabled: boolean;
  state: PresenceState;
  /** Current secret first; a rotated-out secret stays while its overlap lasts. */
  secrets: string[];
  /** When the rotated-out secret in `secrets` stops verifying (ms), so caches expire with it. */
  prev_secret_expires_at?: number | null;
  /** The status module's policy for uplinks, applied by the bridge's verification step. */
  require_data_signature?: boolean;
  clock_window_ms?: number;
}
export interface StatusChangedEvent {
  project_id: string;
  state: PresenceState;
  previous: PresenceState;
  reason: string;
  at: number;
}

// ─── command ───────────────────────────────────────────────────────────────────────────────
export type CommandStatus = 'pending' | 'sent' | 'acked' | 'completed' | 'failed' | 'timeout' | 'cancelled';
export type OfflinePolicy = 'fail' | 'queue';

export const COMMAND = {
  /** request SendCommandRequest → SentCommand (at once; the outbox delivers) */
  send: 'command/send',
  /** request { command_id } → CommandDetail (CMD_ERR_NOT_FOUND) */
  get: 'command/get',
  /** request ListCommandsRequest → { items: CommandView[], total, limit, offset } */
  list: 'command/list',
  /** request { command_id } → CommandView (CMD_ERR_NOT_CANCELLABLE once delivered) */
  cancel: 'command/cancel',
  /** request { limit?, offset? } → { items: CommandView[], total } — outbox rows that went dead */
  deadList: 'command/dead/list',
  /** request { command_id } → CommandView — a dead command goes back to the outbox */
  deadReplay: 'command/dead/replay',
  /** event CommandEvent: `command/event/{project_id}/{command_id}` */
  event: (projectId: string, commandId: string) => `command/event/${projectId}/${commandId}`,
  eventPattern: 'command/event/#',
  /** request {} → command module counters (outbox depth, latencies …) */
  stats: 'command/stats',
} as const;

export interface SendCommandRequest {
  project_id: string;
  command_type: string;
  payload?: unknown;
  /** Execution timeout; default from the command module's config. */
  timeout_ms?: number;
  module?: string;
  operator_id?: string;
  offline_policy?: OfflinePolicy;
  /** With offline_policy 'queue': how long the command may wait for the project (default config). */
  queue_ttl_ms?: number;
  /** Callers that wait for the result choose the id first, so their waiter exists before the send. */
  command_id?: string;
  is_sync?: boolean;
  /**
   * A retry key (REST `Idempotency-Key`): the same key and request answer the command the first
   * send made; another request → CMD_ERR_IDEMPOTENCY_MISMATCH. 1-255 printable ASCII characters.
   */
  idempotency_key?: string;
}

/** COMMAND.send's answer: the command, flagged when an idempotency key named one made before. */
export type SentCommand = CommandView & { idempotent_replayed?: true };

export interface CommandTimings {
  /** created → sent (broker acknowledged) */
  queue_ms: number | null;
  /** sent → acked by the agent */
  delivery_ms: number | null;
  /** the agent's start_time → end_time */
  execution_ms: number | null;
  /** created → completed/failed */
  total_ms: number | null;
}

export interface CommandView {
  command_id: string;
  project_id: string;
  command_type: string;
  module: string | null;
  operator_id: string | null;
  status: CommandStatus;
  is_sync: boolean;
  offline_policy: OfflinePolicy;
  attempts: number;
  created_at: string;
  sent_at: string | null;
  acked_at: string | null;
  started_at: string | null;
  completed_at: string | null;
  timeout_at: string;
  /** true when the result arrived after the command had been marked timeout */
  late_result: boolean;
  error: string | null;
}

export interface CommandResultView extends Omit<ExecResultPayload, 'command_id'> {
  received_at: string;
}

export interface CommandDetail extends CommandView {
  payload: unknown;
  result: CommandResultView | null;
  timings: CommandTimings;
}

export interface ListCommandsRequest {
  project_id?: string;
  /**
   * Only commands of projects matching one of these ids or globs (project-scope.ts): the
   * caller's token is limited to them. Absent: every project.
   */
  project_patterns?: string[];
  status?: CommandStatus | CommandStatus[];
  command_type?: string;
  /** ISO time or ms: created_at ≥ since */
  since?: string | number;
  until?: string | number;
  limit?: number;
  offset?: number;
}

/**
 * One event per state change, log chunk or result, in `command/event/{project_id}/{command_id}`.
 * `remote`: made by another hub instance on the same database and announced to this one
 * (command module, cluster-events.ts); counted as this instance's own work nowhere.
 */
export type CommandEvent = (
  | { kind: 'state'; command: CommandView; at: number }
  | { kind: 'log'; command_id: string; project_id: string; seq: number; content: string; at: number }
  | {
      kind: 'result';
      command: CommandView;
      result: CommandResultView;
      /** With `command`, the whole CommandDetail: a sync waiter answers from the event, no read back. */
      payload: unknown;
      timings: CommandTimings;
      at: number;
    }
) & { remote?: true };

// ─── web ───────────────────────────────────────────────────────────────────────────────────
export const WEB = {
  /** request {} → WebInfo: where an instance of the web module listens (useful with `port: 0`) */
  info: (instance: string) => `web/${instance}/info`,
} as const;

export interface WebInfo {
  /** http://host:port of the bound address */
  url: string;
  host: string;
  port: number;
  /** whether callers need a bearer token */
  auth: boolean;
  ws_clients: number;
}

// ─── agent ─────────────────────────────────────────────────────────────────────────────────
export const AGENT = {
  /**
   * request AgentTaskRequest → AgentTaskResult: `agent/handler/{command_type}`. Any module
   * (inner, worker, exe) that subscribes here implements that command type on the agent.
   */
  handler: (commandType: string) => `agent/handler/${commandType}`,
  /** event { command_id, content } — output a handler streams while it runs */
  output: (commandId: string) => `agent/output/${commandId}`,
  /** event { state, at } — the agent's connection/registration state */
  state: 'agent/state',
  /** request {} → agent stats (queue depths, registered, …) */
  stats: 'agent/stats',
} as const;

export interface AgentTaskRequest {
  command_id: string;
  command_type: string;
  payload: unknown;
  /** The handler should finish by then; the agent reports `timeout` after it. */
  deadline: number;
}
export interface AgentTaskResult {
  status?: 'success' | 'failure' | 'timeout';
  exit_code?: number;
  output?: string;
  error?: string;
}
/** `agent/output/{command_id}` */
export interface AgentOutputEvent {
  command_id: string;
  content: string;
}
export type AgentState = 'connecting' | 'registering' | 'registered' | 'refused' | 'disconnected' | 'stopped';
/** `agent/state` */
export interface AgentStateEvent {
  state: AgentState;
  at: number;
  reason?: string;
}
/** The reply to `agent/stats`. */
export interface AgentStats {
  registered: boolean;
  state: AgentState;
  queue_memory: number;
  queue_disk: number;
  sent: number;
  retried: number;
  expired: number;
  dropped: number;
  commands_run: number;
  commands_rejected: number;
  duplicates: number;
}

// ─── grpc ──────────────────────────────────────────────────────────────────────────────────
export const GRPC = {
  /** request {} → GrpcStats */
  stats: 'grpc/stats',
} as const;

/** The reply to `grpc/stats`. */
export interface GrpcStats {
  /** the bound port (useful with `port: 0`) and address */
  port: number;
  host: string;
  /** true when calls need a bearer token */
  auth: boolean;
  /** calls received (every RPC, streams included) */
  calls: number;
  /** refused or failed calls by gRPC status code (numeric, as text) */
  errors: Record<string, number>;
  streams_open: number;
  streams_total: number;
  /** WatchEvents streams ended with RESOURCE_EXHAUSTED for not keeping up */
  streams_slow: number;
  /** SendSyncCommand calls waiting for a result now */
  sync_waiting: number;
  /** the live feed: its epoch and the id of its newest event */
  feed_epoch: string;
  feed_last_id: number;
}
