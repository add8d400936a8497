import { z } from 'zod';

const ms = (min: number) => z.number().int().min(min);

/**
 * Settings of the `status` module (project provisioning and presence). Every key has a default,
 * so `status: {}` in config.yml is a working module. Unknown keys are refused.
 */
export const statusConfigSchema = z
  .object({
    /** Name under `databases:` holding the project tables. */
    database: z.string().min(1).default('default'),
    /** Told to agents in `register_ack` (docs/wire-protocol.md#registration-and-presence: heartbeat every 5 s). */
    heartbeat_interval_s: z.number().int().min(1).max(3600).default(5),
    /** Silence after which an online project goes offline (docs/wire-protocol.md#registration-and-presence: 30 s; HUB_HEARTBEAT_TIMEOUT_MS). */
    heartbeat_timeout_ms: ms(1).default(30_000),
    /** How often presence is checked for silent projects. */
    sweep_interval_ms: ms(1).default(1_000),
    /**
     * Presence changes are coalesced in memory and written in one batch at this pace (docs/architecture.md#tables,
     * docs/architecture.md#performance-decisions). A change is durable within this plus one flush's time, which must stay under 1 s
     * (bench `heartbeat`); a busy flush (one at a time) makes the next batch larger, not later.
     */
    flush_interval_ms: ms(1).default(250),
    /** Accepted clock difference for signed uplinks (docs/wire-protocol.md#timestamps-and-the-clock-window: ±300 s). */
    clock_window_ms: ms(0).default(300_000),
    /** How long a rotated-out secret keeps working unless the rotate request says otherwise. */
    rotation_overlap_s: z.number().int().min(0).default(300),
    /** Refuse unsigned data messages (a DataMessage need not be signed, docs/wire-protocol.md#signing; the broker ACL binds a connection to its project). */
    require_data_signature: z.boolean().default(false),
    /**
     * A `disconnect` (often the MQTT last will, composed when the agent connected, before it
     * registered) is ignored as stale when its timestamp is older than the current session's
     * `register` timestamp minus this grace: a will from an earlier connection then cannot knock a
     * fresh session offline, while the will of the current connection still counts.
     */
    will_grace_ms: ms(0).default(10_000),
    /**
     * `reregister` asks per second at most, fleet-wide (besides once per heartbeat interval per
     * project). A fleet heard while offline (back from a broker outage) is asked at the pace the
     * hub registers, the rest at a later heartbeat; asks beyond it are counted, not queued.
     */
    reregister_per_s: z.number().int().min(1).default(500),
    /** Project rows (secrets, enabled) are cached this long; other hub instances' changes show after it. */
    cache_ttl_ms: ms(0).default(30_000),
    /** Presence history (GET /project/:project_id/history) older than this is deleted. */
    history_retention_days: z.number().int().min(1).max(36_500).default(30),
    /** How often the history past its retention is deleted (every instance may: deletes are idempotent). */
    history_cleanup_interval_ms: ms(1000).default(3_600_000),
  })
  .strict();

export type StatusConfig = z.output<typeof statusConfigSchema>;
