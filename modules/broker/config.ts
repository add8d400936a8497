import { z } from 'zod';

const int = (min: number) => z.number().int().min(min);

/**
 * Settings of the `broker` module (the embedded MQTT broker, aedes). Every key has a default, so
 * `broker: {}` in config.yml is a working, authenticated broker on 1883. Unknown keys are refused.
 */
export const brokerConfigSchema = z
  .object({
    /** Listen port; 0 takes any free port (tests). The default config.yml reads HUB_MQTT_PORT. */
    port: int(0).max(65535).default(1883),
    host: z.string().min(1).default('0.0.0.0'),
    /** The variable named in the "port in use" error, so the operator knows what to change. */
    port_env: z.string().min(1).default('HUB_MQTT_PORT'),
    /**
     * Deny by default: only the hub's own credential and provisioned projects connect, and agents
     * are held to their own topics. `false` lets anyone connect and publish anywhere (a warning is
     * logged at start); for local experiments only.
     */
    auth: z.boolean().default(true),
    /** The hub's own client (the mqtt-bridge): may publish and subscribe anywhere. */
    hub_username: z.string().min(1).default('gmq-hub'),
    /** Empty or absent: a random password is made once per process and handed out on BROKER.hubCredential. */
    hub_password: z.string().optional(),
    /** How long STATUS.authenticate may take before the connection is refused (fail closed). */
    auth_timeout_ms: int(1).default(2_000),
    /** How long a positive STATUS.authenticate answer is reused for the same username + password. */
    auth_cache_ms: int(0).default(5_000),
    auth_cache_max: int(1).default(10_000),
    /** Connected clients at most; beyond it CONNACK 3 (server unavailable). */
    max_clients: int(1).default(10_000),
    /** Agent publishes with a larger payload are denied (wire messages are small JSON: docs/wire-protocol.md#message-types). */
    max_payload_bytes: int(1).default(262_144),
    /**
     * Any client's MQTT packet larger than this closes its connection while it is still arriving,
     * so one connection buffers at most this much (mqtt-packet itself would accept 256 MB).
     */
    max_packet_bytes: int(1024).default(1_048_576),
    /** Per agent connection: a token bucket, `msgs_per_s` refill, `burst` capacity. The hub's own client is exempt. */
    rate_limit: z
      .object({ msgs_per_s: int(1).default(2_000), burst: int(1).default(4_000) })
      .strict()
      .prefault({}),
    /**
     * Messages being delivered at once across the broker; more wait their turn, which slows only
     * their own publisher (its socket is not read meanwhile: TCP backpressure).
     */
    max_inflight: int(1).default(1_000),
    /** Messages waiting for a delivery slot; past it QoS 0 publishes are shed (counted). QoS 1/2 always wait. */
    max_waiting: int(0).default(20_000),
    /** aedes `queueLimit`: packets a client may send before its CONNECT is fully handled. */
    queue_limit: int(1).default(42),
    /** aedes `maxClientsIdLength` (MQTT 3.1 only; 3.1.1 ids are not limited by aedes). */
    max_client_id_length: int(1).default(64),
    /** aedes `maxTopicLevels`: our topics have five levels; deeper ones are refused before routing. */
    max_topic_levels: int(1).max(100).default(16),
    /** aedes `maxInflightInbound`: QoS 2 publishes a client may leave waiting for PUBREL. */
    max_inflight_inbound: int(1).default(100),
    /** aedes `heartbeatInterval` ($SYS heartbeat). */
    heartbeat_interval_ms: int(1_000).default(60_000),
    /** aedes `connectTimeout`: a socket that sends no CONNECT in time is closed. */
    connect_timeout_ms: int(100).default(10_000),
    /** aedes `drainTimeout`: a subscriber whose socket stays full this long is disconnected. */
    drain_timeout_ms: int(100).default(30_000),
    /** aedes `keepaliveLimit` in seconds; 0 = no limit. */
    keepalive_limit_s: int(0).default(0),
    /** Denials are logged and published on the bus at most this often per second (all are counted). */
    denial_reports_per_s: int(1).default(50),
    /** Interval of the summary line for shed messages and unreported denials (only when non-zero). */
    report_interval_ms: int(100).default(10_000),
  })
  .strict();

export type BrokerConfig = z.infer<typeof brokerConfigSchema>;
