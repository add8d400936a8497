import { z } from 'zod';

/**
 * Settings of the `audit` module (the operator-action trail). Every key has a default, so
 * `audit: {}` in config.yml is a working module. Unknown keys are refused.
 */
export const auditConfigSchema = z
  .object({
    /** Name under `databases:` holding the audit table. */
    database: z.string().min(1).default('default'),
    /** Records older than this are deleted. */
    retention_days: z.number().int().min(1).max(36_500).default(365),
    /** How often records past their retention are deleted (every instance may: deletes are idempotent). */
    cleanup_interval_ms: z.number().int().min(1000).default(3_600_000),
  })
  .strict();

export type AuditConfig = z.output<typeof auditConfigSchema>;
