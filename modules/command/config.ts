import { z } from 'zod';

const ms = (def: number) => z.number().int().positive().default(def);

/**
 * Settings of the `command` module (config.yml `modules.command`). Every key has a default, so
 * `command: {}` is a working block; unknown keys are rejected (a typo must not pass silently).
 */
export const commandConfigSchema = z
  .object({
    /** Which entry under `databases:` holds the command tables. */
    database: z.string().min(1).default('default'),
    /** Execution timeout when the caller gives none. */
    default_timeout_ms: ms(30_000),
    /** Largest timeout a caller may ask for. */
    max_timeout_ms: ms(3_600_000),
    /** Largest command payload, as canonical JSON bytes. */
    max_payload_bytes: ms(65_536),
    /** How long an `offline_policy: queue` command waits for its project when the caller gives no queue_ttl_ms. */
    default_queue_ttl_ms: ms(600_000),
    /** Re-publish backoff without an agent ack: base, 2·base, 4·base … capped at retry_max_ms (docs/architecture.md#the-transactional-outbox-and-its-relay). */
    retry_base_ms: ms(1_000),
    retry_max_ms: ms(32_000),
    /** Publishes without an agent ack before the outbox row goes dead and the command fails `undeliverable`. */
    max_attempts: z.number().int().min(1).max(1000).default(8),
    /** Relay poll period (a send also wakes it at once). */
    relay_interval_ms: ms(200),
    /**
     * How long the outcome of a send's first publish (PUBACK: `sent`, attempts) waits before it is
     * written; one whose agent acked meanwhile is not written at all (outcome-window.ts). As long
     * as the first re-publish backoff (retry_base_ms): an agent that has not acked by then is
     * published again, and that attempt's outcome is written at once anyway.
     */
    publish_outcome_delay_ms: ms(1_000),
    /** Outbox rows claimed per relay pass. */
    relay_batch: z.number().int().min(1).max(5000).default(100),
    /** How long one BRIDGE.publish may take before it counts as a failed attempt. */
    publish_timeout_ms: ms(10_000),
    /**
     * How far ahead a send's `schedule_at` may be (README "Scheduled sends"); later is refused
     * with CMD_ERR_INVALID. Scheduled commands start on the sweep (sweep_interval_ms).
     */
    max_schedule_ahead_ms: ms(30 * 24 * 3600 * 1000),
    /** Timeout / queue-expiry sweep period (also when scheduled commands are looked for). */
    sweep_interval_ms: ms(500),
    /** How long a STATUS.credentials answer is reused. */
    credentials_cache_ms: z.number().int().nonnegative().default(1_000),
    /**
     * Acks and results are written in groups (docs/architecture.md#performance-decisions). 0, the default, is group commit: the
     * group goes on the next turn of the event loop with whatever arrived in this one, and under
     * load it is what arrived while the previous group was written (one flush at a time). No
     * timer sits on a sync caller's path (20 ms had been the largest share of a round trip).
     * More than 0: at most this long after the first item waits.
     */
    flush_interval_ms: z.number().int().nonnegative().default(0),
    /** …or as soon as this many are queued. */
    flush_max: z.number().int().min(1).max(10_000).default(200),
    /**
     * An acked command whose result has not come this long after the ack is asked for again
     * (reask.ts: the same message_id re-signed; agents answer a duplicate from memory, never
     * run it twice). 0 turns re-asking off.
     */
    reask_after_ms: z.number().int().nonnegative().default(5_000),
    /** Between two re-asks of one command. */
    reask_interval_ms: ms(10_000),
    /** Re-ask only this long after the command was created: under the agents' ±300 s replay memory. */
    reask_horizon_ms: z.number().int().positive().max(290_000).default(240_000),
    /**
     * How long an idempotency key names its command (README "Idempotent sends"). The contract
     * is at least 24 h, the default; a shorter value is for tests and breaks that promise.
     */
    idempotency_retention_ms: ms(86_400_000),
    /** How often keys older than the retention are deleted (their commands stay). */
    idempotency_sweep_interval_ms: ms(60_000),
    /**
     * Hear the command events of other hub instances on the same PostgreSQL schema (LISTEN/NOTIFY,
     * cluster-events.ts) and republish them here, so every instance's watchers and sync waiters
     * see every command. Driver pg only (PGlite has no other instance).
     */
    cluster_events: z.boolean().default(true),
  })
  .strict()
  .refine((c) => c.retry_base_ms <= c.retry_max_ms, {
    message: 'retry_base_ms must not exceed retry_max_ms',
    path: ['retry_base_ms'],
  })
  .refine((c) => c.default_timeout_ms <= c.max_timeout_ms, {
    message: 'default_timeout_ms must not exceed max_timeout_ms',
    path: ['default_timeout_ms'],
  });

export type CommandConfig = z.infer<typeof commandConfigSchema>;
