import type { Migration } from '../../core/module.js';
import { eventOutboxMigration } from './domain-events.js';

/**
 * Tables of the status module (docs/architecture.md#tables), PostgreSQL dialect for both PGlite and a server.
 * No foreign keys from presence to `project`: presence writes are batched, and one row that a
 * manual delete orphaned must not fail the whole batch.
 */
export const migrations: Migration[] = [
  {
    id: '001_project',
    up: `
CREATE TABLE IF NOT EXISTS project (
  project_id text PRIMARY KEY,
  name text NULL,
  secret text NOT NULL,
  prev_secret text NULL,
  prev_secret_expires_at timestamptz NULL,
  enabled boolean NOT NULL DEFAULT true,
  metadata jsonb NOT NULL DEFAULT '{}'::jsonb,
  created_at timestamptz NOT NULL DEFAULT now(),
  updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE IF NOT EXISTS project_status (
  project_id text PRIMARY KEY,
  state text NOT NULL,
  state_since timestamptz NULL,
  last_heartbeat_at timestamptz NULL,
  instance_id text NULL,
  agent_version text NULL,
  registration jsonb NULL,
  session_started_at timestamptz NULL,
  metrics jsonb NULL,
  metrics_at timestamptz NULL,
  last_alert jsonb NULL,
  last_alert_at timestamptz NULL,
  updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE IF NOT EXISTS project_status_history (
  id bigserial PRIMARY KEY,
  project_id text NOT NULL,
  from_state text NOT NULL,
  to_state text NOT NULL,
  reason text NOT NULL,
  at timestamptz NOT NULL
);
CREATE INDEX IF NOT EXISTS project_status_history_project_at ON project_status_history (project_id, at);
`,
  },
  {
    // Several hub instances share presence (README "Several instances: presence"): PostgreSQL is
    // its truth. `version` is taken from one sequence at every state transition, so it orders a
    // row's transitions and tells a read model whether it is behind; the handshake, memory-only
    // before, is in the row, so a register_complete may land on another instance than its register.
    id: '002_shared_presence',
    up: `
CREATE SEQUENCE IF NOT EXISTS project_status_version;
ALTER TABLE project_status ADD COLUMN IF NOT EXISTS version bigint NOT NULL DEFAULT 0;
ALTER TABLE project_status ADD COLUMN IF NOT EXISTS handshake_ts bigint NULL;
ALTER TABLE project_status ADD COLUMN IF NOT EXISTS handshake_before text NULL;
`,
  },
  // the domain events of the outbox service (domain-events.ts): this module's own table
  eventOutboxMigration,
  {
    // the retention cleanup (history.ts) deletes by time across projects
    id: '004_history_retention',
    up: 'CREATE INDEX IF NOT EXISTS project_status_history_at ON project_status_history (at);',
  },
  {
    // Every heartbeat rewrites its project's row (presence flush). With full pages the new version
    // never fits beside the old one: measured with 20 000 rows updated 24 times each, 1 % of the
    // updates were HOT, each of the others inserted into the primary key index too, and the table
    // grew to 165 MB of dead versions. With room left on each page the new version stays on its
    // page and the old one is pruned: 93 % HOT, 22 MB, a fifth less PostgreSQL CPU per row. Pages
    // written before this keep their fill until their rows move (an update that does not fit).
    id: '005_project_status_fillfactor',
    up: 'ALTER TABLE project_status SET (fillfactor = 70);',
  },
  {
    // Every heartbeat rewrites its project's metrics, and as jsonb PostgreSQL parsed them into its
    // binary form on every write: every number through numeric's input, every object's keys
    // sorted. That parse was most of a presence flush's server CPU (PostgreSQL 26-27 µs a heartbeat
    // in bench `heartbeat`, 13 with json; a flush's rows alone: 24 against 13 µs a row with the
    // reference agent's six metrics). json keeps the text as the hub wrote it (JSON.stringify of
    // the parsed payload: no duplicate keys) after checking its syntax; nothing in SQL reads
    // inside it, and a reader gets the same object back. last_alert, written once an alert,
    // stays jsonb.
    id: '006_project_status_metrics_json',
    up: 'ALTER TABLE project_status ALTER COLUMN metrics TYPE json USING metrics::json;',
  },
];
