/**
 * REST schemas of the presence history (`GET /project/:project_id/history`) and the audit trail
 * (`GET /audit`): the routes validate with these and /openapi.json is generated from them.
 */
import { z } from 'zod';
import { AUDIT_ACTIONS, AUDIT_INTERFACES, AUDIT_MAX_LIMIT, type AuditEntry } from '../audit/contract/topics.js';
import { projectId } from '../shared/contract/schemas.js';
import { HISTORY_MAX_LIMIT, type PresenceChange } from '../status/contract/history-topics.js';

const PRESENCE = ['offline', 'connecting', 'verifying', 'online', 'disconnecting'] as const;
const limit = (max: number) => z.coerce.number().int().min(1).max(max);
const offset = z.coerce.number().int().min(0);
const since = z.string().optional().meta({ description: 'at or after: ISO time or ms since the epoch' });
const until = z.string().optional().meta({ description: 'at or before: ISO time or ms since the epoch' });

export const historyQuery = z
  .object({ since, until, limit: limit(HISTORY_MAX_LIMIT).optional(), offset: offset.optional() })
  .strict();

export const presenceChangeSchema = z
  .object({
    project_id: z.string(),
    from_state: z.enum(PRESENCE),
    to_state: z.enum(PRESENCE),
    reason: z.string().meta({
      description:
        'Why, as the status module decided it: `register received`, `registration complete`, `heartbeat timeout`, ' +
        '`disconnect`, `project disabled`, …',
    }),
    at: z.string().meta({ description: 'ISO 8601 time (hub clock)' }),
  })
  .meta({ id: 'PresenceChange' });

export const auditQuery = z
  .object({
    action: z.enum(AUDIT_ACTIONS).optional(),
    project_id: projectId.optional(),
    token_id: z
      .string()
      .min(1)
      .max(256)
      .optional()
      .meta({ description: 'The token id (tokens[0], token, loopback …)' }),
    since,
    until,
    limit: limit(AUDIT_MAX_LIMIT).optional(),
    offset: offset.optional(),
  })
  .strict();

export const auditEntrySchema = z
  .object({
    audit_id: z.string(),
    at: z.string().meta({ description: 'ISO 8601 time the action was answered' }),
    action: z.enum(AUDIT_ACTIONS),
    token_id: z.string().meta({ description: 'Which configured token (its place in the settings), never the token' }),
    role: z.string(),
    interface: z.enum(AUDIT_INTERFACES),
    project_id: z.string().nullable(),
    targets: z.record(z.string(), z.string()).meta({ description: 'The ids the action was about' }),
    outcome: z.string().meta({ description: '`ok`, or the error code the caller was answered with' }),
  })
  .meta({ id: 'AuditEntry' });

// compile-time checks: the documented shapes are the bus contract's
type Same<A, B> = [A] extends [B] ? ([B] extends [A] ? true : false) : false;
const same = <T extends true>(_: T) => undefined;
same<Same<z.output<typeof presenceChangeSchema>, PresenceChange>>(true);
same<Same<z.output<typeof auditEntrySchema>, AuditEntry>>(true);
