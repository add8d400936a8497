/**
 * Scheduled sends (issue 14 item 2, README "Scheduled sends"). A send with a future
 * `schedule_at` is stored at once as tracker status `scheduled` with an outbox row `scheduled`,
 * which neither the relay nor the queue sweep reads. On every sweep (sweeper.ts) this pass starts
 * the ones whose time has come, as a send made then would:
 *  - project online → tracker `pending`, outbox `pending` due now: the relay publishes it;
 *  - not online, offline_policy `queue` → `pending` with its outbox row `waiting` until the project
 *    comes online or queue_ttl_ms (counted from now) passes;
 *  - not online, offline_policy `fail`, or the project disabled or deleted → `failed` with the
 *    reason, its outbox row dead (COMMAND.deadReplay can send it again).
 * Its execution timeout counts from the start (timeout_at = start + timeout_ms, or queue
 * expiry + timeout_ms), never from the acceptance. The message is signed again at the start:
 * agents refuse timestamps older than 300 s (docs/wire-protocol.md#mqtt-wire-protocol).
 *
 * Exactly once with several hub instances on one database: the state change claims tracker rows
 * with FOR UPDATE SKIP LOCKED under `status = 'scheduled'`, which PostgreSQL checks again on the
 * row's latest version once locked; a row another instance started (or a cancel took) is no
 * longer `scheduled` and is left alone. The claim, the outbox change and the failures' domain
 * events commit together; a crash before the commit leaves the row `scheduled` for the next pass.
 */
import { errorCode } from '../../core/errors.js';
import { signedCommandJson } from '../shared/protocol.js';
import { canonicalJson } from '../shared/signing.js';
import type { OfflinePolicy } from './contract/topics.js';
import { type Deps, ID_IN, isoAt, lockInOrder, query, retrying } from './deps.js';
import { terminalEvent } from './domain-events.js';
import { num, TRACKER_COLUMNS, type TrackerRow } from './rows.js';

/** Scheduled commands started per statement. */
const BATCH = 500;
const T_COLS = TRACKER_COLUMNS.split(', ')
  .map((c) => `t.${c}`)
  .join(', ');

interface DueRow {
  command_id: string;
  project_id: string;
  command_type: string;
  payload: unknown;
  offline_policy: OfflinePolicy;
  timeout_ms: number | string;
  queue_ttl_ms: number | string | null;
}

/** What one due command becomes, decided from its project's state at its time. */
interface Start {
  command_id: string;
  status: 'pending' | 'failed';
  error: string | null;
  queue_expires_at: string | null;
  timeout_at: string;
  outbox_status: 'pending' | 'waiting' | 'dead';
  /** The message signed now; null for a failure (the stored one stays, replay signs again). */
  payload: string | null;
  next_attempt_at: string;
  last_error: string | null;
}

export class Scheduler {
  constructor(private readonly d: Deps) {}

  /** One pass; true when the batch was full (more may be due at once). */
  async pass(): Promise<boolean> {
    const { db, cfg } = this.d;
    const now = this.d.clock.now();
    const due = await query<DueRow>(
      db,
      `SELECT command_id, project_id, command_type, payload, offline_policy, timeout_ms, queue_ttl_ms
         FROM command_tracker WHERE status = 'scheduled' AND schedule_at <= ?::timestamptz
        ORDER BY schedule_at, id LIMIT ${BATCH}`,
      [isoAt(now)],
    );
    if (due.length === 0) return false;

    const starts: Start[] = [];
    for (const [projectId, rows] of byProject(due)) {
      const decided = await this.decide(projectId, rows, now, cfg.default_queue_ttl_ms);
      if (decided) starts.push(...decided);
    }
    if (starts.length === 0) return false;

    const at = isoAt(now);
    const rows = await retrying(() =>
      db.transaction(async (trx) => {
        const claimed = await query<TrackerRow>(
          trx,
          `UPDATE command_tracker t
              SET status = v.status, error = v.error, queue_expires_at = v.queue_expires_at, timeout_at = v.timeout_at,
                  completed_at = CASE WHEN v.status = 'failed' THEN ?::timestamptz ELSE NULL END,
                  updated_at = ?::timestamptz
             FROM jsonb_to_recordset(?::jsonb) AS v(command_id text, status text, error text,
                                                   queue_expires_at timestamptz, timeout_at timestamptz)
            WHERE t.command_id = v.command_id AND t.status = 'scheduled'
              AND t.id IN (SELECT id FROM command_tracker WHERE ${ID_IN} AND status = 'scheduled'
                            ORDER BY command_id FOR UPDATE SKIP LOCKED)
           RETURNING ${T_COLS}`,
          [at, at, JSON.stringify(starts), JSON.stringify(starts.map((s) => s.command_id))],
        );
        if (claimed.length === 0) return claimed;
        const ids = new Set(claimed.map((r) => r.command_id));
        await lockInOrder(trx, [...ids]);
        await query(
          trx,
          `UPDATE command_outbox o
              SET status = v.outbox_status, payload = COALESCE(v.payload, o.payload), attempts = 0,
                  next_attempt_at = v.next_attempt_at, last_error = v.last_error, updated_at = ?::timestamptz
             FROM jsonb_to_recordset(?::jsonb) AS v(command_id text, outbox_status text, payload text,
                                                   next_attempt_at timestamptz, last_error text)
            WHERE o.command_id = v.command_id AND o.status = 'scheduled'`,
          [at, JSON.stringify(starts.filter((s) => ids.has(s.command_id)))],
        );
        const events = claimed
          .filter((r) => r.status === 'failed')
          .map((r) => terminalEvent(r, null))
          .filter((e) => e !== null);
        if (events.length > 0) await this.d.outbox.addMany(trx, events);
        return claimed;
      }),
    );

    let toRelay = 0;
    for (const row of rows) {
      const ids = { project_id: row.project_id, command_id: row.command_id };
      if (row.status === 'failed') {
        this.d.counters.scheduled_failed++;
        // the lifecycle line ('command failed', events.ts) says why at info
        this.d.log.debug({ ...ids, error: row.error }, 'scheduled command failed at its time');
      } else {
        this.d.counters.scheduled_started++;
        if (row.queue_expires_at === null) toRelay++;
        this.d.log.debug({ ...ids, queued: row.queue_expires_at !== null }, 'scheduled command started');
      }
      this.d.events.state(row);
    }
    if (toRelay > 0) this.d.wakeRelay();
    return due.length === BATCH;
  }

  /**
   * What a project's due commands become now; null when its state cannot be learned (the status
   * module not answering): they stay scheduled and the next pass tries again.
   */
  private async decide(projectId: string, rows: DueRow[], now: number, defaultTtl: number): Promise<Start[] | null> {
    let reason: string | null = null;
    let creds: Awaited<ReturnType<Deps['creds']['get']>> | null = null;
    try {
      creds = await this.d.creds.get(projectId, true);
    } catch (err) {
      if (errorCode(err) !== 'CMD_ERR_UNKNOWN_PROJECT') {
        this.d.log.warn({ err, project_id: projectId }, 'scheduled commands wait: project state unknown');
        return null;
      }
      reason = `project ${projectId} no longer exists`;
    }
    const secret = creds?.secrets[0];
    if (creds && !creds.enabled) reason = `project ${projectId} was disabled at the scheduled time`;
    else if (creds && !secret) reason = `project ${projectId} had no signing secret at the scheduled time`;
    const online = creds?.state === 'online';
    return rows.map((r) => {
      const fail = (why: string): Start => ({
        command_id: r.command_id,
        status: 'failed',
        error: why,
        queue_expires_at: null,
        timeout_at: isoAt(now),
        outbox_status: 'dead',
        payload: null,
        next_attempt_at: isoAt(now),
        last_error: why,
      });
      if (reason !== null || !creds || !secret) return fail(reason ?? `project ${projectId} is unknown`);
      if (!online && r.offline_policy === 'fail') {
        return fail(`project ${projectId} was ${creds.state} at the scheduled time (offline_policy fail)`);
      }
      const payload = signedCommandJson(projectId, r.command_type, canonicalJson(r.payload), secret, {
        messageId: r.command_id,
        now,
      }).json;
      // bigint: pg answers a string (rows.ts num)
      const queueExpires = online ? null : now + (r.queue_ttl_ms === null ? defaultTtl : num(r.queue_ttl_ms));
      return {
        command_id: r.command_id,
        status: 'pending',
        error: null,
        queue_expires_at: queueExpires === null ? null : isoAt(queueExpires),
        timeout_at: isoAt((queueExpires ?? now) + num(r.timeout_ms)),
        outbox_status: online ? 'pending' : 'waiting',
        payload,
        next_attempt_at: isoAt(queueExpires ?? now),
        last_error: null,
      };
    });
  }
}

function byProject(rows: DueRow[]): Map<string, DueRow[]> {
  const out = new Map<string, DueRow[]>();
  for (const r of rows) {
    const list = out.get(r.project_id);
    if (list) list.push(r);
    else out.set(r.project_id, [r]);
  }
  return out;
}
