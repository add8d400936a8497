import type { Migration } from '../../core/module.js';

/**
 * The audit module's table (README "Audit trail"), PostgreSQL dialect for PGlite and a server.
 * Append-only: a row is written once, read by the listing and deleted by the retention cleanup.
 */
export const migrations: Migration[] = [
  {
    id: '001_audit_log',
    up: `
CREATE TABLE IF NOT EXISTS audit_log (
  id bigserial PRIMARY KEY,
  at timestamptz NOT NULL,
  action text NOT NULL,
  token_id text NOT NULL,
  role text NOT NULL,
  interface text NOT NULL,
  project_id text NULL,
  targets jsonb NOT NULL DEFAULT '{}'::jsonb,
  outcome text NOT NULL
);
CREATE INDEX IF NOT EXISTS audit_log_at ON audit_log (at);
CREATE INDEX IF NOT EXISTS audit_log_project_at ON audit_log (project_id, at);
CREATE INDEX IF NOT EXISTS audit_log_token_at ON audit_log (token_id, at);
`,
  },
];
