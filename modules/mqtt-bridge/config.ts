import os from 'node:os';
import { z } from 'zod';
import { DEFAULT_MAX_MESSAGE_BYTES } from '../shared/protocol.js';

const int = (min: number) => z.number().int().min(min);

/** URL schemes the bridge opens its own socket for (TCP_NODELAY on every one, docs/architecture.md#performance-decisions). */
export const SUPPORTED_SCHEMES = ['mqtt:', 'tcp:', 'mqtts:', 'tls:', 'ssl:'] as const;

/**
 * Settings of the `mqtt-bridge` module: the hub's one MQTT client.
 *
 * @example
 *   mqtt-bridge:
 *     url: ${HUB_MQTT_URL:-mqtt://127.0.0.1:1883}
 *     shared_group: hubs        # several hub instances split the uplink (docs/architecture.md#several-instances)
 */
export const BridgeConfigSchema = z
  .object({
    /** Broker URL, `mqtt://host:port` (or mqtts://). Credentials in it are used but never logged. */
    url: z
      .string()
      .min(1)
      .refine(
        (u) => {
          try {
            return (SUPPORTED_SCHEMES as readonly string[]).includes(new URL(u).protocol);
          } catch {
            return false;
          }
        },
        `must be a URL with one of the schemes ${SUPPORTED_SCHEMES.map((s) => `${s}//`).join(', ')}`,
      ),
    /** Fixed, so the broker keeps the persistent session (and QoS 1 uplinks) across restarts. */
    client_id: z
      .string()
      .min(1)
      .max(256)
      .default(() => `gmq-hub-${os.hostname()}`),
    /** With username and password both empty, the embedded broker's hub credential is asked for. */
    username: z.string().optional(),
    password: z.string().optional(),
    /**
     * false: persistent session — uplinks published while the hub was down arrive when it
     * reconnects. Default: false alone, true with `shared_group`: a persistent session in a shared
     * subscription keeps getting its share of the uplinks while its instance is dead, where no
     * other instance can take them (README "Several instances: events and takeover").
     */
    clean_session: z.boolean().optional(),
    /** MQTT protocol level: 4 (3.1.1) or 5. */
    protocol_version: z.union([z.literal(4), z.literal(5)]).default(4),
    /** MQTT 5 only: how long the broker keeps the session after a disconnect (clean_session false). */
    session_expiry_s: int(0).default(86_400),
    /** Subscribe `$share/<group>/<topic>` so several hub instances split the uplink (docs/architecture.md#several-instances). */
    shared_group: z
      .string()
      .min(1)
      .refine((g) => !/[/+#]/.test(g) && !g.includes('\0'), 'must be one topic level without /, +, # or NUL')
      .optional(),
    keepalive_s: int(0).max(65_535).default(30),
    /** Reconnect backoff: doubles from min to max, with jitter. */
    reconnect_min_ms: int(1).default(500),
    reconnect_max_ms: int(1).default(10_000),
    /** Uplinks larger than this are refused before decoding. */
    max_message_bytes: int(1).default(DEFAULT_MAX_MESSAGE_BYTES),
    /**
     * A publish waits for a connection until it has been down this long (MQTT_ERR_OFFLINE: a short
     * blip is ridden out, a long outage fails fast), and for its PUBACK within this long of the
     * request (MQTT_ERR_PUBLISH).
     */
    publish_timeout_ms: int(1).default(10_000),
    /** No CONNACK this long after opening the socket: the attempt failed, the next one is scheduled. */
    connect_timeout_ms: int(1).default(10_000),
    /**
     * How long start() waits for the first connection attempt's outcome before the bridge goes on
     * connecting in the background (the hub may start before its broker). 0: do not wait.
     */
    start_wait_ms: int(0).default(3_000),
    /** On stop: how long in-flight publishes may take to finish before the client is ended. */
    stop_drain_ms: int(0).default(2_000),
    /** How long to wait for the embedded broker's hub credential at start. */
    credential_timeout_ms: int(1).default(2_000),
    /**
     * Project credentials used to verify uplinks are kept this long in the bridge's read model
     * (changes made through this hub drop them at once; another instance's show after this).
     */
    credentials_ttl_ms: int(0).default(30_000),
    /**
     * A state-carrying uplink (register, register_complete, disconnect, command_ack, exec_result)
     * is acknowledged to the broker only once written; one that waits longer than this (the
     * database is down) makes the bridge reconnect, so the broker delivers it again.
     */
    durable_wait_ms: int(1).default(120_000),
  })
  .strict()
  .refine((c) => c.reconnect_max_ms >= c.reconnect_min_ms, {
    message: 'reconnect_max_ms must be >= reconnect_min_ms',
    path: ['reconnect_max_ms'],
  })
  .transform((c) => ({ ...c, clean_session: c.clean_session ?? c.shared_group !== undefined }));

export type BridgeConfig = z.output<typeof BridgeConfigSchema>;
