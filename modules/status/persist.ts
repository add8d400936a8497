import type { Knex } from 'knex';
import type { Logger } from '../../core/log.js';
import type { PresenceState } from '../shared/topics.js';
import type { Batch, Presence, PresenceEntry } from './presence.js';

/** Rows per statement: 14 columns × 500 stays far below PostgreSQL's 65 535 parameters. */
const CHUNK = 500;
const STATES: ReadonlySet<string> = new Set(['offline', 'connecting', 'verifying', 'online', 'disconnecting']);

function toMs(v: unknown): number | null {
  if (v === null || v === undefined) return null;
  const t = v instanceof Date ? v.getTime() : new Date(v as string).getTime();
  return Number.isNaN(t) ? null : t;
}

const date = (ms: number | null): Date | null => (ms === null ? null : new Date(ms));
const json = (v: unknown): string | null => (v === null || v === undefined ? null : JSON.stringify(v));

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

function statusRow(e: PresenceEntry): Record<string, unknown> {
  return {
    project_id: e.project_id,
    state: e.state,
    state_since: date(e.state_since),
    last_heartbeat_at: date(e.last_heartbeat_at),
    instance_id: e.instance_id,
    agent_version: e.agent_version,
    registration: json(e.registration),
    session_started_at: date(e.session_started_at),
    metrics: json(e.metrics),
    metrics_at: date(e.metrics_at),
    last_alert: json(e.last_alert),
    last_alert_at: date(e.last_alert_at),
    updated_at: date(e.updated_at),
  };
}

/** One transaction: a multi-row UPSERT of the changed presence rows and a multi-row INSERT of history. */
export async function writeBatch(db: Knex, batch: Batch): Promise<void> {
  await db.transaction(async (trx) => {
    for (let i = 0; i < batch.rows.length; i += CHUNK) {
      await trx('project_status')
        .insert(batch.rows.slice(i, i + CHUNK).map(statusRow))
        .onConflict('project_id')
        .merge();
    }
    for (let i = 0; i < batch.history.length; i += CHUNK) {
      await trx('project_status_history').insert(
        batch.history.slice(i, i + CHUNK).map((h) => ({ ...h, at: new Date(h.at) })),
      );
    }
  });
}

export interface FlushStats {
  flushes: number;
  rows_written: number;
  history_written: number;
  failures: number;
}

/**
 * Writes presence changes in batches, one flush at a time. A failed write gives the batch back
 * to Presence, so the next flush retries it; nothing accepted is lost while the module runs.
 */
export class Flusher {
  readonly stats: FlushStats = { flushes: 0, rows_written: 0, history_written: 0, failures: 0 };
  private running: Promise<void> | null = null;

  constructor(
    private readonly db: () => Knex,
    private readonly presence: Presence,
    private readonly log: Logger,
  ) {}

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
    if (this.presence.pendingWrites === 0) return;
    const batch = this.presence.takeBatch();
    try {
      await writeBatch(this.db(), batch);
      this.stats.flushes++;
      this.stats.rows_written += batch.rows.length;
      this.stats.history_written += batch.history.length;
    } catch (err) {
      this.stats.failures++;
      this.presence.restore(batch);
      this.log.warn(
        { err, rows: batch.rows.length, history: batch.history.length },
        'presence flush failed; retrying at the next flush',
      );
    }
  }
}
