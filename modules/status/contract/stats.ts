/**
 * The status module's `status/stats` answer (STATUS.stats): its uplink counters, the silence
 * sweep, presence, the PostgreSQL read-model sync and the presence flusher. Dashboards, the
 * benchmarks and tests read it; the module's handler is typed by it, so the two cannot drift.
 */
import type { ListenerStats } from '../../../core/services/pg-listener.js';

export interface UplinkCounters {
  registers: number;
  registers_accepted: number;
  registers_refused: number;
  /** accepted registers whose handshake PostgreSQL refused: a newer one (or the same, redelivered) was there */
  registers_superseded: number;
  /** a second copy of the register whose handshake is going on (or whose session is online), ignored */
  registers_duplicate: number;
  register_completed: number;
  heartbeats: number;
  monitors: number;
  alerts: number;
  disconnects: number;
  stale_wills: number;
  data_unknown_project: number;
  data_disabled_project: number;
  data_ignored: number;
  malformed: number;
  reregisters_sent: number;
  reregisters_throttled: number;
  /** reregister asks left for a later heartbeat by the fleet-wide limit (cfg.reregister_per_s) */
  reregisters_deferred: number;
  downlinks_sent: number;
  downlinks_failed: number;
  lookup_failures: number;
  /** registers the bridge refused (mqtt/rejected), each answered with a reasoned register_ack */
  registers_rejected: number;
  /** answers to refused registers left out by the per-project limit */
  registers_rejected_throttled: number;
  /** refused uplinks of provisioned projects, replays excepted (also on each project's status view) */
  uplinks_rejected: number;
  /** refused uplinks whose project id could not be read or is not provisioned */
  uplinks_rejected_unattributed: number;
}

export interface FlushStats {
  flushes: number;
  rows_written: number;
  history_written: number;
  /** transitions PostgreSQL applied / refused because the row no longer held what they expected */
  transitions_applied: number;
  transitions_lost: number;
  failures: number;
  /** presence rows and transitions the database refused on their own (written without them) */
  bad_rows: number;
}

export interface SyncStats {
  rereads: number;
  checks: number;
  resyncs: number;
  bad_notices: number;
}

export interface StatusStats extends UplinkCounters {
  /** silence sweeps run, and projects they took offline */
  sweeps: number;
  timed_out: number;
  presence: { tracked: number; online: number; pending_writes: number };
  /** presence transitions given up unwritten: more than the pending queue holds waited for the database */
  transitions_dropped: number;
  sync: SyncStats & { listener: (ListenerStats & { channel: string }) | null };
  projects_cached: number;
  flush: FlushStats & { in_flight: boolean };
  /** CredentialsChangedEvents published */
  credential_events: number;
}
