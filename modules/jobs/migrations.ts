import type { Migration } from '../../core/module.js';

/**
 * Tables of the jobs module (README "Jobs: one command to many projects"). `job` is one row per job with its rollout settings
 * and the driver's lease (lease_owner, lease_until: one rollout driver per job at a time across
 * hub instances on one database). `job_target` is one row per target project, with the command
 * id the job sends it under, chosen when the target is stored (so a driver taking over after a
 * crash sends the same id and the command module answers the command already made: never a
 * second send), and the target's state, which mirrors its command's status once sent.
 */
export const migrations: Migration[] = [
  {
    id: '001_job_tables',
    up: `
CREATE TABLE IF NOT EXISTS job (
  job_id text PRIMARY KEY,
  status text NOT NULL CHECK (status IN ('scheduled', 'running', 'completed', 'aborted', 'cancelled')),
  targets jsonb NOT NULL,
  command_type text NOT NULL,
  payload jsonb NOT NULL,
  timeout_ms integer,
  offline_policy text,
  max_in_flight integer NOT NULL,
  max_per_minute integer,
  failure_ratio double precision,
  min_done integer,
  schedule_at timestamptz,
  reason text,
  idempotency_key text UNIQUE,
  request_hash text,
  lease_owner text,
  lease_until timestamptz,
  created_at timestamptz NOT NULL,
  started_at timestamptz,
  finished_at timestamptz,
  updated_at timestamptz NOT NULL
);
CREATE INDEX IF NOT EXISTS job_created_idx ON job (created_at DESC, job_id);
-- the drivers only look at jobs still to run
CREATE INDEX IF NOT EXISTS job_active_idx ON job (status, schedule_at) WHERE status IN ('scheduled', 'running');

CREATE TABLE IF NOT EXISTS job_target (
  job_id text NOT NULL REFERENCES job (job_id) ON DELETE CASCADE,
  seq integer NOT NULL,
  project_id text NOT NULL,
  command_id text NOT NULL UNIQUE,
  state text NOT NULL CHECK (state IN ('pending', 'in_flight', 'completed', 'failed', 'timeout', 'cancelled')),
  error text,
  sent_at timestamptz,
  updated_at timestamptz NOT NULL,
  PRIMARY KEY (job_id, seq)
);
CREATE INDEX IF NOT EXISTS job_target_state_idx ON job_target (job_id, state, seq);
`,
  },
];
