import type { Migration } from '../../core/module.js';
import { eventOutboxMigration } from './domain-events.js';

/**
 * The announce triggers' condition (migration 010, cluster-events.ts ANNOUNCE_TRIGGERS): once this
 * transaction knows nobody else listens, a row costs one lookup of a setting, not a function call.
 * Fixed once landed: migration 010's text holds it.
 */
export const ANNOUNCE_WHEN = `pg_catalog.current_setting('gmq.peers_listen', true) IS DISTINCT FROM 'off' AND command_events_heard()`;

/**
 * Tables of the command module (docs/architecture.md#a-command-end-to-end, docs/architecture.md#tables). Columns are at least those of the seed's
 * CommandTracker and CommandResult (seeds/000); the outbox follows seeds/003 (pending →
 * published | dead, next_attempt_at for the backoff). `IF NOT EXISTS` everywhere: the
 * bookkeeping is per module instance name, so a renamed instance must find the tables in place.
 *
 * Times the agent reports (start_time, end_time, duration) are its own milliseconds, kept as
 * bigint exactly as sent; hub times are timestamptz.
 */
export const migrations: Migration[] = [
  {
    id: '001_command_tables',
    up: `
CREATE TABLE IF NOT EXISTS command_tracker (
  id bigserial PRIMARY KEY,
  command_id text NOT NULL UNIQUE,
  project_id text NOT NULL,
  command_type text NOT NULL,
  module text,
  operator_id text,
  status text NOT NULL
    CHECK (status IN ('pending', 'sent', 'acked', 'completed', 'failed', 'timeout', 'cancelled')),
  payload jsonb NOT NULL,
  offline_policy text NOT NULL DEFAULT 'fail' CHECK (offline_policy IN ('fail', 'queue')),
  timeout_ms integer NOT NULL,
  queue_expires_at timestamptz,
  attempts integer NOT NULL DEFAULT 0,
  late_result boolean NOT NULL DEFAULT false,
  error text,
  is_sync boolean NOT NULL DEFAULT false,
  sent_at timestamptz,
  acked_at timestamptz,
  started_at timestamptz,
  completed_at timestamptz,
  timeout_at timestamptz NOT NULL,
  created_at timestamptz NOT NULL DEFAULT now(),
  updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS command_tracker_created_idx ON command_tracker (created_at DESC, id DESC);
CREATE INDEX IF NOT EXISTS command_tracker_project_idx ON command_tracker (project_id, created_at DESC);
CREATE INDEX IF NOT EXISTS command_tracker_status_idx ON command_tracker (status, created_at DESC);
CREATE INDEX IF NOT EXISTS command_tracker_type_idx ON command_tracker (command_type, created_at DESC);
-- the timeout sweeper only looks at live commands
CREATE INDEX IF NOT EXISTS command_tracker_live_timeout_idx ON command_tracker (timeout_at)
  WHERE status IN ('pending', 'sent', 'acked');

CREATE TABLE IF NOT EXISTS command_result (
  id bigserial PRIMARY KEY,
  command_id text NOT NULL UNIQUE,
  status text NOT NULL,
  exit_code bigint NOT NULL,
  output text NOT NULL DEFAULT '',
  error text NOT NULL DEFAULT '',
  start_time bigint NOT NULL,
  end_time bigint NOT NULL,
  duration bigint NOT NULL,
  received_at timestamptz NOT NULL,
  created_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS command_outbox (
  id bigserial PRIMARY KEY,
  command_id text NOT NULL UNIQUE,
  project_id text NOT NULL,
  topic text NOT NULL,
  payload text NOT NULL,
  status text NOT NULL CHECK (status IN ('pending', 'waiting', 'published', 'dead')),
  attempts integer NOT NULL DEFAULT 0,
  next_attempt_at timestamptz NOT NULL,
  last_error text,
  created_at timestamptz NOT NULL DEFAULT now(),
  updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS command_outbox_due_idx ON command_outbox (status, next_attempt_at);
-- a project coming online releases its queued (waiting) rows
CREATE INDEX IF NOT EXISTS command_outbox_waiting_idx ON command_outbox (project_id) WHERE status = 'waiting';
`,
  },
  {
    // reask.ts: acked commands whose result has not come are asked for again; the partial index
    // holds only those (a result sets completed_at), so the pass stays cheap at any table size
    id: '002_result_reask',
    up: `
ALTER TABLE command_tracker ADD COLUMN IF NOT EXISTS reasked_at timestamptz;
CREATE INDEX IF NOT EXISTS command_tracker_awaiting_result_idx ON command_tracker (created_at)
  WHERE status IN ('acked', 'timeout') AND acked_at IS NOT NULL AND completed_at IS NULL;
`,
  },
  {
    // Idempotent sends (README "Idempotent sends"): one row per caller key, written in the same
    // statement as the command's tracker and outbox rows (insert-batch.ts), so a key never exists
    // without its command nor the command without its key. The primary key is what makes two
    // concurrent sends with one key create one command: the second insert waits for the first
    // and then does nothing. The request hash tells a retry from a different request.
    id: '003_command_idempotency',
    up: `
CREATE TABLE IF NOT EXISTS command_idempotency (
  idempotency_key text PRIMARY KEY,
  request_hash text NOT NULL,
  command_id text NOT NULL UNIQUE REFERENCES command_tracker (command_id) ON DELETE CASCADE,
  created_at timestamptz NOT NULL DEFAULT now()
);
-- the retention sweep deletes the oldest keys first
CREATE INDEX IF NOT EXISTS command_idempotency_created_idx ON command_idempotency (created_at);
`,
  },
  // the domain events of the outbox service (domain-events.ts): this module's own table
  eventOutboxMigration,
  {
    // Several hub instances as one (cluster-events.ts). Every tracker row gets a version that
    // each change raises by one, so an event can be ordered against another of the same command
    // wherever the two were made (sent on A, acked on B, result on C): a watcher never sees a
    // state go backwards and drops what it has seen. The announce triggers NOTIFY the other
    // instances in the committing transaction: only committed changes are announced, none is
    // lost between the commit and the announcement, and PostgreSQL delivers them in commit order.
    // The version and announce functions are attached by cluster-events.ts when an instance on
    // driver pg starts (ANNOUNCE_TRIGGERS): an embedded PGlite has no one to tell, and its writes
    // would pay for them (~30 % on a 20-row tracker UPDATE, measured). The channel is per schema (instances on one schema are one hub). A state notification
    // carries the row without its payload when it fits under NOTIFY's 8000-byte limit, else only
    // the id and version; a result notification is always a reference (the listener reads the row).
    id: '005_command_cluster_events',
    up: `
ALTER TABLE command_tracker ADD COLUMN IF NOT EXISTS version bigint NOT NULL DEFAULT 0;

CREATE OR REPLACE FUNCTION command_tracker_next_version() RETURNS trigger LANGUAGE plpgsql AS $fn$
BEGIN
  NEW.version := OLD.version + 1;
  RETURN NEW;
END
$fn$;

-- the changes the command module itself announces as state events (events.ts): a new command,
-- a new status, or a failure that got another reason (undeliverable, then the agent's result)
CREATE OR REPLACE FUNCTION command_tracker_announce() RETURNS trigger LANGUAGE plpgsql AS $fn$
DECLARE
  body text;
BEGIN
  IF TG_OP = 'UPDATE' AND OLD.status = NEW.status
     AND NOT (NEW.status = 'failed' AND OLD.error IS DISTINCT FROM NEW.error) THEN
    RETURN NULL;
  END IF;
  body := json_build_object('k', 's', 'id', NEW.command_id, 'v', NEW.version, 'row', to_jsonb(NEW) - 'payload')::text;
  IF octet_length(body) > 7900 THEN
    body := json_build_object('k', 's', 'id', NEW.command_id, 'v', NEW.version)::text;
  END IF;
  PERFORM pg_notify(left('gmq_cmd_events:' || TG_TABLE_SCHEMA, 63), body);
  RETURN NULL;
END
$fn$;

CREATE OR REPLACE FUNCTION command_result_announce() RETURNS trigger LANGUAGE plpgsql AS $fn$
BEGIN
  PERFORM pg_notify(left('gmq_cmd_events:' || TG_TABLE_SCHEMA, 63),
                    json_build_object('k', 'r', 'id', NEW.command_id)::text);
  RETURN NULL;
END
$fn$;
`,
  },
  {
    // Scheduled sends (README "Scheduled sends"): a command with a future schedule_at is stored at
    // once as tracker status `scheduled` with an outbox row `scheduled` (neither the relay nor the
    // queue sweep looks at those). At its time the sweeper's scheduler (scheduler.ts) claims it
    // with FOR UPDATE SKIP LOCKED under a `status = 'scheduled'` guard, so of several instances
    // exactly one starts it: signed again, then pending/waiting per offline_policy, its timeout
    // from then. queue_ttl_ms is kept because a queued wait can only start then too.
    // The CHECKs are dropped and written again (their default names) to admit the new status.
    id: '006_command_schedule_at',
    up: `
ALTER TABLE command_tracker ADD COLUMN IF NOT EXISTS schedule_at timestamptz;
ALTER TABLE command_tracker ADD COLUMN IF NOT EXISTS queue_ttl_ms bigint;
ALTER TABLE command_tracker DROP CONSTRAINT IF EXISTS command_tracker_status_check;
ALTER TABLE command_tracker ADD CONSTRAINT command_tracker_status_check
  CHECK (status IN ('scheduled', 'pending', 'sent', 'acked', 'completed', 'failed', 'timeout', 'cancelled'));
ALTER TABLE command_outbox DROP CONSTRAINT IF EXISTS command_outbox_status_check;
ALTER TABLE command_outbox ADD CONSTRAINT command_outbox_status_check
  CHECK (status IN ('scheduled', 'pending', 'waiting', 'published', 'dead'));
-- the scheduler looks only at commands still waiting for their time
CREATE INDEX IF NOT EXISTS command_tracker_scheduled_idx ON command_tracker (schedule_at) WHERE status = 'scheduled';
`,
  },
  {
    // Jobs (modules/jobs): every command a job sends carries its job id, so a job's commands are
    // one filtered read (`GET /commands?job_id=`) and a job's counts can be recomputed from here.
    // Partial index: most commands belong to no job.
    id: '007_command_job_id',
    up: `
ALTER TABLE command_tracker ADD COLUMN IF NOT EXISTS job_id text;
CREATE INDEX IF NOT EXISTS command_tracker_job_idx ON command_tracker (job_id, created_at DESC) WHERE job_id IS NOT NULL;
`,
  },
  {
    // Announcements say which hub instance made the change ('o': the writing session's
    // gmq.origin, set per connection pool by core/services/db.ts), so an instance drops its own
    // when they come back (cluster-events.ts) instead of racing them against its local events:
    // when the notification was read before the commit's reply, the instance showed its own
    // change as another instance's, and its counters and lifecycle log line missed it (a
    // two-instance test counted 205 of 300 local starts). Sessions without the setting announce
    // 'o': null, which nobody drops.
    id: '008_command_announce_origin',
    up: `
CREATE OR REPLACE FUNCTION command_tracker_announce() RETURNS trigger LANGUAGE plpgsql AS $fn$
DECLARE
  body text;
  origin text := current_setting('gmq.origin', true);
BEGIN
  IF TG_OP = 'UPDATE' AND OLD.status = NEW.status
     AND NOT (NEW.status = 'failed' AND OLD.error IS DISTINCT FROM NEW.error) THEN
    RETURN NULL;
  END IF;
  body := json_build_object('k', 's', 'id', NEW.command_id, 'v', NEW.version, 'o', origin,
                            'row', to_jsonb(NEW) - 'payload')::text;
  IF octet_length(body) > 7900 THEN
    body := json_build_object('k', 's', 'id', NEW.command_id, 'v', NEW.version, 'o', origin)::text;
  END IF;
  PERFORM pg_notify(left('gmq_cmd_events:' || TG_TABLE_SCHEMA, 63), body);
  RETURN NULL;
END
$fn$;

CREATE OR REPLACE FUNCTION command_result_announce() RETURNS trigger LANGUAGE plpgsql AS $fn$
BEGIN
  PERFORM pg_notify(left('gmq_cmd_events:' || TG_TABLE_SCHEMA, 63),
                    json_build_object('k', 'r', 'id', NEW.command_id, 'o', current_setting('gmq.origin', true))::text);
  RETURN NULL;
END
$fn$;
`,
  },
  {
    // Every change of a tracker row raises its version on every backend, not only where other
    // instances listen (migration 005 attached the trigger with driver pg only): the command
    // module's own events go out in version order everywhere (events.ts), so a watcher never
    // sees a `sent` published after the command's `completed` (a fast agent's result can be
    // written before the relay's reply comes back; seen on PGlite beside another suite). The
    // announce triggers stay pg-only: they are the costly part.
    id: '009_command_version_everywhere',
    up: `
DO $do$
BEGIN
  IF NOT EXISTS (SELECT 1 FROM pg_trigger WHERE tgname = 'command_tracker_next_version'
                    AND tgrelid = 'command_tracker'::regclass) THEN
    CREATE TRIGGER command_tracker_next_version BEFORE UPDATE ON command_tracker
      FOR EACH ROW EXECUTE FUNCTION command_tracker_next_version();
  END IF;
END
$do$;
`,
  },
  {
    // Announce only while another instance listens. A lone instance on a PostgreSQL server paid
    // for every announcement: a JSON text of the row, a queued notification, a commit that takes
    // the notify queue's lock, its own listener woken and the text read back and dropped (0.13-0.21
    // ms of PostgreSQL's CPU a command, insert + result one row each: bench/announce.ts). Each listening
    // instance keeps a row here under its sessions' gmq.origin (cluster-events.ts: written on
    // its listening connection after LISTEN, renewed while it listens, deleted when it stops; a
    // killed instance's row lapses). command_events_heard() asks once per transaction whether a
    // live row other than the writer's own exists (the answer kept in the transaction-local
    // setting gmq.peers_listen), and the announce triggers fire only WHEN it says yes: a row
    // nobody else hears queues no trigger event. A session without an origin (another tool
    // writing the tables) counts every instance. The function names the table with this schema
    // (it runs under the writer's search_path). Where an earlier version had attached the
    // triggers, its instances may still run and do not register: announcements stay on for 15
    // minutes (a row of their own) while they are replaced.
    id: '010_command_announce_when_heard',
    up: `
CREATE TABLE IF NOT EXISTS command_listeners (
  origin text PRIMARY KEY,
  alive_until timestamptz NOT NULL
);

DO $do$
BEGIN
  EXECUTE format($f$
CREATE OR REPLACE FUNCTION command_events_heard() RETURNS boolean LANGUAGE plpgsql AS $fn$
DECLARE
  heard text := pg_catalog.current_setting('gmq.peers_listen', true);
BEGIN
  IF heard IS NULL OR heard = '' THEN
    heard := CASE WHEN EXISTS (
        SELECT 1 FROM %I.command_listeners l
         WHERE l.alive_until > pg_catalog.now()
           AND l.origin IS DISTINCT FROM pg_catalog.current_setting('gmq.origin', true))
      THEN 'on' ELSE 'off' END;
    PERFORM pg_catalog.set_config('gmq.peers_listen', heard, true);
  END IF;
  RETURN heard = 'on';
END
$fn$$f$, current_schema());

  -- announce triggers attached by an earlier version get the condition; attached later, they
  -- are made with it (cluster-events.ts ANNOUNCE_TRIGGERS)
  IF EXISTS (SELECT 1 FROM pg_trigger WHERE tgname = 'command_tracker_announce'
                AND tgrelid = 'command_tracker'::regclass) THEN
    INSERT INTO command_listeners (origin, alive_until) VALUES ('(instances before 010)', now() + interval '15 minutes')
      ON CONFLICT (origin) DO UPDATE SET alive_until = EXCLUDED.alive_until;
    DROP TRIGGER command_tracker_announce ON command_tracker;
    CREATE TRIGGER command_tracker_announce AFTER INSERT OR UPDATE ON command_tracker
      FOR EACH ROW WHEN (${ANNOUNCE_WHEN}) EXECUTE FUNCTION command_tracker_announce();
  END IF;
  IF EXISTS (SELECT 1 FROM pg_trigger WHERE tgname = 'command_result_announce'
                AND tgrelid = 'command_result'::regclass) THEN
    DROP TRIGGER command_result_announce ON command_result;
    CREATE TRIGGER command_result_announce AFTER INSERT ON command_result
      FOR EACH ROW WHEN (${ANNOUNCE_WHEN}) EXECUTE FUNCTION command_result_announce();
  END IF;
END
$do$;
`,
  },
  {
    // The relay's claims and polls, the sweeps and the outbox listings only ever look for rows
    // not yet published (pending, waiting, dead), and published rows are nearly all of the table
    // after a while: the index over (status, next_attempt_at) held an entry for every command
    // ever sent, and every ack's write added one more (the status changes, so the update is
    // not HOT). Partial, it holds the live and dead rows only, and a row going `published`
    // adds no entry (docs/benchmarks.md "The outbox's index holds only unpublished rows").
    id: '011_outbox_index_unpublished',
    up: `
CREATE INDEX IF NOT EXISTS command_outbox_unpublished_idx ON command_outbox (status, next_attempt_at)
  WHERE status <> 'published';
DROP INDEX IF EXISTS command_outbox_due_idx;
`,
  },
];
