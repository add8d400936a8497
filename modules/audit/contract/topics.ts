/**
 * The audit module's bus contract: the record the interface modules (web, grpc) write for every
 * operator action they answered, and the listing (REST `GET /audit`, gRPC ListAudit).
 */

export const AUDIT = {
  /** request AuditRecord → AuditEntry, answered once the row is committed (AUDIT_ERR_INVALID) */
  record: 'audit/record',
  /** request ListAuditRequest → AuditPage (AUDIT_ERR_INVALID) */
  list: 'audit/list',
} as const;

/**
 * The operator actions that are audited: one line here and one `audit:` on the REST route and the
 * gRPC method that do it (modules/web/routes.ts, modules/grpc/service.ts).
 */
export const AUDIT_ACTIONS = [
  'command.sent',
  'command.cancelled',
  'command.replayed',
  'project.created',
  'project.disabled',
  'project.enabled',
  'project.rotated',
  'outbox.event_replayed',
  'module.restarted',
  'job.created',
  'job.cancelled',
] as const;
export type AuditAction = (typeof AUDIT_ACTIONS)[number];

/** Where the caller came from; `cli` is what gmq-hub's CLI declares on its REST calls. */
export const AUDIT_INTERFACES = ['rest', 'ws', 'grpc', 'cli'] as const;
export type AuditInterface = (typeof AUDIT_INTERFACES)[number];

/** Ids an action was about (command_id, project_id, event_id, module …): ids only, never payloads or secrets. */
export type AuditTargets = Record<string, string>;

export interface AuditRecord {
  action: AuditAction;
  /** the principal's token id (its place in the settings, never the token) */
  token_id: string;
  role: string;
  interface: AuditInterface;
  /** the project the action concerned, when one (also among targets): the listing filters on it */
  project_id: string | null;
  targets: AuditTargets;
  /** `ok`, or the error code the caller was answered with (a sync send: `ok` once accepted, README "Audit trail") */
  outcome: string;
  /** when the action was answered, or a sync send accepted (ms, the interface's clock) */
  at: number;
}

export interface AuditEntry extends Omit<AuditRecord, 'at'> {
  audit_id: string;
  /** ISO 8601 */
  at: string;
}

export interface ListAuditRequest {
  action?: string;
  project_id?: string;
  token_id?: string;
  since?: string | number;
  until?: string | number;
  limit?: number;
  offset?: number;
}

/** Newest first. */
export interface AuditPage {
  items: AuditEntry[];
  total: number;
  limit: number;
  offset: number;
}

export const AUDIT_MAX_LIMIT = 500;
export const AUDIT_DEFAULT_LIMIT = 100;
