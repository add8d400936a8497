/**
 * The jobs module's requests: create (with its Idempotency-Key), get, list, cancel. The rollout
 * itself is the driver's (driver.ts); this file writes what a request decides and wakes it.
 *
 * Targets are resolved when the job starts: at creation for an immediate job (so the 201 answer
 * holds the real total), at `schedule_at` for a scheduled one (the fleet as it is then).
 */
import { createHash, randomUUID } from 'node:crypto';
import type { Knex } from 'knex';
import type { ModuleBus } from '../../core/bus.js';
import { HubError } from '../../core/errors.js';
import type { Logger } from '../../core/log.js';
import type { Clock } from '../../core/module.js';
import { COMMAND } from '../command/contract/topics.js';
import { parseOr } from '../shared/contract/schemas.js';
import { canonicalJson } from '../shared/signing.js';
import type { JobsConfig } from './config.js';
import {
  type CheckedCreateJob,
  createJobRequestSchema,
  DEFAULT_JOB_LIST_LIMIT,
  listJobsRequestSchema,
} from './contract/schemas.js';
import type { CreatedJob, JobStatus, JobView } from './contract/topics.js';
import { countsOf, getRow, isoAt, type JobRow, query, toView, viewOf } from './store.js';
import { type TargetResolver, targetCommandId } from './targets.js';

/** Target rows written per statement. */
const TARGET_BATCH = 1000;

export function invalid(field: string, reason: string): HubError {
  return new HubError('JOB_ERR_INVALID', `${field}: ${reason}`, { field });
}

function checkJobId(req: unknown): string {
  const id = (req as { job_id?: unknown } | null)?.job_id;
  if (typeof id !== 'string' || !/^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i.test(id)) {
    throw invalid('job_id', `expected a UUID, got ${JSON.stringify(id) ?? 'nothing'}`);
  }
  return id.toLowerCase();
}

/** SHA-256 of what a retry must repeat for its key to name the same job (the key itself left out). */
function requestHash(r: CheckedCreateJob): string {
  const { idempotency_key: _, ...rest } = r;
  return createHash('sha256')
    .update(canonicalJson({ v: 1, ...rest }), 'utf8')
    .digest('hex');
}

export interface ServiceDeps {
  db: Knex;
  bus: ModuleBus;
  cfg: JobsConfig;
  log: Logger;
  clock: Clock;
  resolver: TargetResolver;
  /** Asks the driver for a pass now (a new job, a cancel). */
  wake(): void;
  /** Tells watchers a job changed (JOBS.event). */
  progress(view: JobView): void;
  counters: { created: number; rejected: number; replayed: number; cancelled: number };
}

export class JobService {
  constructor(private readonly d: ServiceDeps) {}

  async create(req: unknown): Promise<CreatedJob> {
    let r: CheckedCreateJob;
    try {
      r = parseOr(createJobRequestSchema, req, invalid);
    } catch (err) {
      this.d.counters.rejected++;
      throw err;
    }
    const hash = r.idempotency_key ? requestHash(r) : null;
    if (r.idempotency_key) {
      const prior = await this.replayed(r.idempotency_key, hash!);
      if (prior) return prior;
    }
    const now = this.d.clock.now();
    const scheduleAt = r.schedule_at === undefined ? null : Date.parse(r.schedule_at);
    const scheduled = scheduleAt !== null && scheduleAt > now;
    let projects: string[] = [];
    if (!scheduled) {
      try {
        projects = await this.d.resolver.resolve(r.targets, true);
      } catch (err) {
        this.d.counters.rejected++;
        throw err;
      }
      if (projects.length === 0) {
        this.d.counters.rejected++;
        throw new HubError('JOB_ERR_NO_TARGETS', 'targets: no project matches them now', { field: 'targets' });
      }
    }
    const jobId = randomUUID();
    const row = await this.d.db.transaction(async (trx) => {
      const [inserted] = await query<JobRow>(
        trx,
        `INSERT INTO job (job_id, status, targets, command_type, payload, timeout_ms, offline_policy, max_in_flight,
                          max_per_minute, failure_ratio, min_done, schedule_at, idempotency_key, request_hash,
                          created_at, started_at, updated_at)
         VALUES (?, ?, ?::jsonb, ?, ?::jsonb, ?, ?, ?, ?, ?, ?, ?::timestamptz, ?, ?, ?::timestamptz, ?::timestamptz,
                 ?::timestamptz)
         ON CONFLICT (idempotency_key) DO NOTHING
         RETURNING *`,
        [
          jobId,
          scheduled ? 'scheduled' : 'running',
          JSON.stringify(r.targets),
          r.command_type,
          canonicalJson(r.payload === undefined ? {} : r.payload),
          r.timeout_ms ?? null,
          r.offline_policy ?? null,
          r.rollout?.max_in_flight ?? this.d.cfg.default_max_in_flight,
          r.rollout?.max_per_minute ?? null,
          r.abort?.failure_ratio ?? null,
          r.abort ? (r.abort.min_done ?? 1) : null,
          scheduleAt === null ? null : isoAt(scheduleAt),
          r.idempotency_key ?? null,
          hash,
          isoAt(now),
          scheduled ? null : isoAt(now),
          isoAt(now),
        ],
      );
      if (!inserted) return null;
      await insertTargets(trx, jobId, projects, now);
      return inserted;
    });
    if (!row) {
      // another request with this key committed first: answer its job
      const prior = await this.replayed(r.idempotency_key!, hash!);
      if (prior) return prior;
      throw new HubError('JOB_ERR_INVALID', 'idempotency_key: could not be stored', { field: 'idempotency_key' });
    }
    this.d.counters.created++;
    this.d.log.info(
      { job_id: jobId, status: row.status, targets: projects.length, command_type: r.command_type },
      'job created',
    );
    const view = await viewOf(this.d.db, row);
    this.d.progress(view);
    this.d.wake();
    return view;
  }

  private async replayed(key: string, hash: string): Promise<CreatedJob | null> {
    const [row] = await query<JobRow>(this.d.db, 'SELECT * FROM job WHERE idempotency_key = ?', [key]);
    if (!row) return null;
    if (row.request_hash !== hash) {
      this.d.counters.rejected++;
      this.d.log.warn({ job_id: row.job_id }, 'idempotency key reused with a different job request: refused');
      throw new HubError(
        'CMD_ERR_IDEMPOTENCY_MISMATCH',
        `idempotency_key: already used by job ${row.job_id} with a different request; use a new key for a new job`,
        { field: 'idempotency_key', job_id: row.job_id },
      );
    }
    this.d.counters.replayed++;
    return { ...(await viewOf(this.d.db, row)), idempotent_replayed: true };
  }

  async get(req: unknown): Promise<JobView> {
    const jobId = checkJobId(req);
    const row = await getRow(this.d.db, jobId);
    if (!row) throw new HubError('JOB_ERR_NOT_FOUND', `no job ${jobId}`, { job_id: jobId });
    return viewOf(this.d.db, row);
  }

  /** Newest first; filter by status (one or several). */
  async list(req: unknown): Promise<{ items: JobView[]; total: number; limit: number; offset: number }> {
    const r = parseOr(listJobsRequestSchema, req ?? {}, invalid);
    const statuses: JobStatus[] | null =
      r.status === undefined ? null : Array.isArray(r.status) ? [...new Set(r.status)] : [r.status];
    const limit = r.limit ?? DEFAULT_JOB_LIST_LIMIT;
    const offset = r.offset ?? 0;
    const where = statuses ? `WHERE status IN (${statuses.map(() => '?').join(', ')})` : '';
    const args = statuses ?? [];
    const [count] = await query<{ n: number | string }>(this.d.db, `SELECT count(*) AS n FROM job ${where}`, args);
    const rows = await query<JobRow>(
      this.d.db,
      `SELECT * FROM job ${where} ORDER BY created_at DESC, job_id DESC LIMIT ? OFFSET ?`,
      [...args, limit, offset],
    );
    const counts = await countsOf(
      this.d.db,
      rows.map((x) => x.job_id),
    );
    return {
      items: rows.map((x) => toView(x, counts.get(x.job_id)!)),
      total: Number(count.n),
      limit,
      offset,
    };
  }

  /**
   * A scheduled or running job becomes `cancelled`: its targets not sent yet are never sent
   * (state cancelled); those in flight are offered to the command module's cancel, which takes
   * only commands not yet delivered; the others run to their end and are counted as they land.
   */
  async cancel(req: unknown): Promise<JobView> {
    const jobId = checkJobId(req);
    const now = this.d.clock.now();
    const [row] = await query<JobRow>(
      this.d.db,
      `UPDATE job SET status = 'cancelled', reason = 'cancelled by request', finished_at = ?::timestamptz,
              updated_at = ?::timestamptz, lease_owner = NULL, lease_until = NULL
        WHERE job_id = ? AND status IN ('scheduled', 'running')
       RETURNING *`,
      [isoAt(now), isoAt(now), jobId],
    );
    if (!row) {
      const cur = await getRow(this.d.db, jobId);
      if (!cur) throw new HubError('JOB_ERR_NOT_FOUND', `no job ${jobId}`, { job_id: jobId });
      throw new HubError('JOB_ERR_NOT_CANCELLABLE', `job ${jobId} is ${cur.status}: it has finished`, {
        job_id: jobId,
        status: cur.status,
      });
    }
    this.d.counters.cancelled++;
    const stopped = await stopRemaining(this.d, jobId, now);
    this.d.log.info({ job_id: jobId, ...stopped }, 'job cancelled');
    const view = await viewOf(this.d.db, row);
    this.d.progress(view);
    return view;
  }
}

/** Writes a job's target rows (in groups of TARGET_BATCH per statement). */
export async function insertTargets(db: Knex, jobId: string, projects: string[], now: number): Promise<void> {
  for (let i = 0; i < projects.length; i += TARGET_BATCH) {
    const rows = projects.slice(i, i + TARGET_BATCH).map((project_id, j) => ({
      seq: i + j,
      project_id,
      command_id: targetCommandId(jobId, project_id),
    }));
    await query(
      db,
      `INSERT INTO job_target (job_id, seq, project_id, command_id, state, updated_at)
       SELECT ?, v.seq, v.project_id, v.command_id, 'pending', ?::timestamptz
         FROM jsonb_to_recordset(?::jsonb) AS v(seq integer, project_id text, command_id text)
       ON CONFLICT DO NOTHING`,
      [jobId, isoAt(now), JSON.stringify(rows)],
    );
  }
}

/**
 * A job that ended early (cancelled, aborted): pending targets become cancelled, never sent;
 * in-flight ones are offered to COMMAND.cancel (only an undelivered command can be cancelled;
 * the rest finish and are counted). Returns how many of each.
 */
export async function stopRemaining(
  d: Pick<ServiceDeps, 'db' | 'bus' | 'cfg'>,
  jobId: string,
  now: number,
): Promise<{ never_sent: number; cancelled_in_flight: number; left_running: number }> {
  const skipped = await query<{ seq: number }>(
    d.db,
    `UPDATE job_target SET state = 'cancelled', error = 'job ended before it was sent', updated_at = ?::timestamptz
      WHERE job_id = ? AND state = 'pending' RETURNING seq`,
    [isoAt(now), jobId],
  );
  const inFlight = await query<{ command_id: string }>(
    d.db,
    `SELECT command_id FROM job_target WHERE job_id = ? AND state = 'in_flight'`,
    [jobId],
  );
  let cancelled = 0;
  for (let i = 0; i < inFlight.length; i += 32) {
    const out = await Promise.all(
      inFlight.slice(i, i + 32).map((t) =>
        d.bus.request(COMMAND.cancel, { command_id: t.command_id }, { timeoutMs: d.cfg.request_timeout_ms }).then(
          () => true,
          () => false,
        ),
      ),
    );
    cancelled += out.filter(Boolean).length;
  }
  return { never_sent: skipped.length, cancelled_in_flight: cancelled, left_running: inFlight.length - cancelled };
}
