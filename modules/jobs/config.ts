import { z } from 'zod';

const ms = (def: number) => z.number().int().positive().default(def);

/** The jobs module's settings (README "Jobs: one command to many projects"). */
export const jobsConfigSchema = z
  .object({
    /** Which entry under `databases:` holds the job tables. */
    database: z.string().min(1).default('default'),
    /** How often the rollout driver looks at its jobs (it is also woken by their commands' events). */
    tick_ms: ms(250),
    /** A driver's lease on a job: renewed every tick; another instance takes the job over after it lapses. */
    lease_ms: ms(15_000),
    /** How often a driver re-reads its jobs' commands from the command module (events can be missed). */
    reconcile_ms: ms(5_000),
    /** Commands in flight at once when a job's rollout does not say. */
    default_max_in_flight: z.number().int().min(1).max(10_000).default(100),
    /** How long an Idempotency-Key names its job (at least 24 h, issue 14 item 3). */
    idempotency_retention_ms: z
      .number()
      .int()
      .min(24 * 3600 * 1000)
      .default(24 * 3600 * 1000),
    /** Timeout of each bus request to the command and status modules. */
    request_timeout_ms: ms(10_000),
  })
  .strict();

export type JobsConfig = z.infer<typeof jobsConfigSchema>;
