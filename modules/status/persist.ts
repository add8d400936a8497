import type { Knex } from 'knex';
import type { Logger } from '../../core/log.js';
import type { ModuleOutbox } from '../../core/services/outbox/service.js';
import type { PresenceState } from '../shared/topics.js';
import { presenceEvents } from './domain-events.js';
import type { Batch, Presence, PresenceEntry } from './presence.js';

/**
 * Rows per statement. Each statement takes its rows as ONE jsonb parameter (jsonb_to_recordset):
 * the client builds no 13-placeholders-per-row SQL and binds no per-row dates, which at tens of
 * thousands of heartbeats a second was most of a flush's time (bench `heartbeat`).
 */
const CHUNK = 5000;
const STATES: ReadonlySet<string> = new Set(['offline', 'connecting', 'verifying', 'online', 'disconnecting']);

function toMs(v: unknown): number | null {
  if (v === null || v === undefined) return null;
  const t = v instanceof Date ? v.getTime() : new Date(v as string).getTime();
  return Number.isNaN(t) ? null : t;
}

/** Every presence row, as entries (restart safety: a restarted module continues from here). */
export async function loadPresence(db: Knex): Promise<PresenceEntry[]> {
  const rows: Record<string, unknown>[] = await db('project_status').select('*');
  return rows.map((r) => ({
    project_id: r.project_id as string,
    state: (STATES.has(r.state as string) ? r.state : 'offline') as PresenceState,
    state_since: toMs(r.state_since) ?? toMs(r.updated_at) ?? 0,
    last_heartbeat_at: toMs(r.last_heartbeat_at),
    instance_id: (r.instance_id as string | null) ?? null,
    agent_version: (r.agent_version as string | null) ?? null,
    registration: (r.registration as Record<string, unknown> | null) ?? null,
    session_started_at: toMs(r.session_started_at),
    metrics: (r.metrics as Record<string, unknown> | null) ?? null,
    metrics_at: toMs(r.metrics_at),
    last_alert: (r.last_alert as PresenceEntry['last_alert']) ?? null,
    last_alert_at: toMs(r.last_alert_at),
    updated_at: toMs(r.updated_at) ?? 0,
    handshake: null,
  }));
}

/** One presence row for jsonb_to_recordset: times stay ms since the epoch (to_timestamp in SQL). */
function statusRow(e: PresenceEntry): Record<string, unknown> {
  return {
    project_id: e.project_id,
    state: e.state,
    state_since: e.state_since,
    last_heartbeat_at: e.last_heartbeat_at,
    instance_id: e.instance_id,
    agent_version: e.agent_version,
    registration: e.registration,
    session_started_at: e.session_started_at,
    metrics: e.metrics,
    metrics_at: e.metrics_at,
    last_alert: e.last_alert,
    last_alert_at: e.last_alert_at,
    updated_at: e.updated_at,
  };
}

const ts = (col: string) => `to_timestamp(v.${col} / 1000.0)`;

/** A multi-row UPSERT of presence rows (unique project ids: a batch holds each entry once). */
const UPSERT_STATUS = `
INSERT INTO project_status (project_id, state, state_since, last_heartbeat_at, instance_id, agent_version,
  registration, session_started_at, metrics, metrics_at, last_alert, last_alert_at, updated_at)
SELECT v.project_id, v.state, ${ts('state_since')}, ${ts('last_heartbeat_at')}, v.instance_id, v.agent_version,
  v.registration, ${ts('session_started_at')}, v.metrics, ${ts('metrics_at')}, v.last_alert, ${ts('last_alert_at')},
  ${ts('updated_at')}
  FROM jsonb_to_recordset(?::jsonb) AS v(project_id text, state text, state_since float8, last_heartbeat_at float8,
    instance_id text, agent_version text, registration jsonb, session_started_at float8, metrics jsonb,
    metrics_at float8, last_alert jsonb, last_alert_at float8, updated_at float8)
ON CONFLICT (project_id) DO UPDATE SET state = EXCLUDED.state, state_since = EXCLUDED.state_since,
  last_heartbeat_at = EXCLUDED.last_heartbeat_at, instance_id = EXCLUDED.instance_id,
  agent_version = EXCLUDED.agent_version, registration = EXCLUDED.registration,
  session_started_at = EXCLUDED.session_started_at, metrics = EXCLUDED.metrics, metrics_at = EXCLUDED.metrics_at,
  last_alert = EXCLUDED.last_alert, last_alert_at = EXCLUDED.last_alert_at, updated_at = EXCLUDED.updated_at`;

const INSERT_HISTORY = `
INSERT INTO project_status_history (project_id, from_state, to_state, reason, at)
SELECT v.project_id, v.from_state, v.to_state, v.reason, ${ts('at')}
  FROM jsonb_to_recordset(?::jsonb) AS v(project_id text, from_state text, to_state text, reason text, at float8)`;

/**
 * One transaction: a multi-row UPSERT of the changed presence rows and a multi-row INSERT of
 * history, with the domain events of those history rows (domain-events.ts) when given an outbox.
 */
export async function writeBatch(db: Knex, batch: Batch, outbox?: ModuleOutbox): Promise<void> {
  await db.transaction(async (trx) => {
    for (let i = 0; i < batch.rows.length; i += CHUNK) {
      await trx.raw(UPSERT_STATUS, [JSON.stringify(batch.rows.slice(i, i + CHUNK).map(statusRow))]);
    }
    for (let i = 0; i < batch.history.length; i += CHUNK) {
      await trx.raw(INSERT_HISTORY, [JSON.stringify(batch.history.slice(i, i + CHUNK))]);
    }
    if (outbox && batch.history.length > 0) await outbox.addMany(trx, presenceEvents(batch.history));
  });
}

export interface FlushStats {
  flushes: number;
  rows_written: number;
  history_written: number;
  failures: number;
  /** presence rows and history rows the database refused on their own (written without them) */
  bad_rows: number;
}

/**
 * Errors that belong to the data of one row rather than to the database: PostgreSQL data
 * exceptions (class 22: NUL in text, an unencodable character, a value out of range) and
 * program limits (class 54: a jsonb nested too deep), and what JSON.stringify throws before
 * anything is sent (RangeError: too deep; TypeError: a cycle or a BigInt). Anything else (the
 * connection, the server) would fail any row alike: the batch is kept for the next flush.
 */
export function isRowError(err: unknown): boolean {
  if (err instanceof RangeError || err instanceof TypeError) return true;
  const code = (err as { code?: unknown } | null)?.code;
  return typeof code === 'string' && (code.startsWith('22') || code.startsWith('54'));
}

/** A short, log-safe message of a write error (pg messages may quote the bad value). */
function brief(err: unknown): { code?: string; message: string } {
  const e = err as { code?: unknown; message?: unknown } | null;
  const message = String(e?.message ?? err);
  return {
    ...(typeof e?.code === 'string' ? { code: e.code } : {}),
    message: message.length > 200 ? `${message.slice(0, 197)}...` : message,
  };
}

const sizeOf = (b: Batch): number => b.rows.length + b.history.length;

/** The first and second half of a batch's rows and history (at least one item each: size >= 2). */
function halves(b: Batch): [Batch, Batch] {
  const n = Math.floor(sizeOf(b) / 2);
  const r = Math.min(n, b.rows.length);
  const h = n - r;
  return [
    { rows: b.rows.slice(0, r), history: b.history.slice(0, h) },
    { rows: b.rows.slice(r), history: b.history.slice(h) },
  ];
}

/**
 * Writes presence changes in batches, one flush at a time. A failed write gives the batch back
 * to Presence, so the next flush retries it; nothing accepted is lost while the module runs.
 * One bad row never blocks a batch: when the database refuses a batch for its data, the batch is
 * split in halves and written again (bisection), so the good rows land in a few statements and
 * each bad one is found alone, counted, logged once (ids and the error, never the row) and
 * dropped instead of being retried forever with everything after it.
 */
export class Flusher {
  readonly stats: FlushStats = { flushes: 0, rows_written: 0, history_written: 0, failures: 0, bad_rows: 0 };
  private running: Promise<void> | null = null;
  /** Told when a flush that started after they asked has written everything (see `written`). */
  private waiters: Array<() => void> = [];

  constructor(
    private readonly db: () => Knex,
    private readonly presence: Presence,
    private readonly log: Logger,
    private readonly write: (db: Knex, batch: Batch) => Promise<void> = writeBatch,
  ) {}

  /**
   * Resolves once every change made before this call is in the database: after the next flush
   * that starts from now on succeeds (one already running may have taken its batch before the
   * change). Never rejects: while the database is down it waits, and the bridge, which awaits
   * it before acknowledging a registration or a disconnect, leaves that uplink to the broker.
   */
  written(): Promise<void> {
    return new Promise<void>((resolve) => this.waiters.push(resolve));
  }

  get inFlight(): boolean {
    return this.running !== null;
  }

  /** Starts a flush unless one runs; resolves when the current one is done. */
  flush(): Promise<void> {
    this.running ??= this.run().finally(() => {
      this.running = null;
    });
    return this.running;
  }

  /** Waits for a running flush, then writes what is left (called on stop). */
  async final(): Promise<void> {
    if (this.running) await this.running;
    await this.flush();
  }

  private async run(): Promise<void> {
    const waiting = this.waiters.splice(0);
    if (this.presence.pendingWrites === 0) {
      for (const w of waiting) w();
      return;
    }
    const batch = this.presence.takeBatch();
    // pieces still to write; on an error that is not about a row, all of them go back
    const todo: Batch[] = [batch];
    let written = false;
    while (todo.length > 0) {
      const piece = todo.pop()!;
      try {
        await this.write(this.db(), piece);
        written = true;
        this.stats.rows_written += piece.rows.length;
        this.stats.history_written += piece.history.length;
      } catch (err) {
        if (!isRowError(err)) {
          this.stats.failures++;
          this.waiters.unshift(...waiting);
          for (const p of [piece, ...todo]) this.presence.restore(p);
          this.log.warn(
            { err: brief(err), rows: batch.rows.length, history: batch.history.length },
            'presence flush failed; retrying at the next flush',
          );
          return;
        }
        if (sizeOf(piece) > 1) {
          const [a, b] = halves(piece);
          todo.push(b, a); // a first: rows keep their order
          continue;
        }
        this.stats.bad_rows++;
        const row = piece.rows[0];
        const hist = piece.history[0];
        this.log.warn(
          {
            project_id: row?.project_id ?? hist?.project_id,
            what: row ? 'presence row' : 'history row',
            err: brief(err),
          },
          'presence row refused by the database; written the batch without it',
        );
      }
    }
    if (written) this.stats.flushes++;
    // a row dropped as bad will never be written: waiting for it would hold its uplink forever
    for (const w of waiting) w();
  }
}
