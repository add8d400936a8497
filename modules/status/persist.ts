import type { Knex } from 'knex';
import type { Logger } from '../../core/log.js';
import type { ModuleOutbox } from '../../core/services/outbox/service.js';
import { inJsonList } from '../../core/services/sql-lists.js';
import type { FlushStats } from './contract/stats.js';
import type { PresenceState } from './contract/topics.js';
import { presenceEvents } from './domain-events.js';
import type { Batch, Handshake, Presence, PresenceEntry, Transition } from './presence.js';

/**
 * Rows per statement. Each statement takes its rows as ONE json or jsonb parameter
 * (json_to_recordset, jsonb_to_recordset): the client builds no 13-placeholders-per-row SQL and
 * binds no per-row dates, which at tens of thousands of heartbeats a second was most of a flush's
 * time (bench `heartbeat`).
 */
const CHUNK = 5000;
const STATES: ReadonlySet<string> = new Set(['offline', 'connecting', 'verifying', 'online', 'disconnecting']);

function toMs(v: unknown): number | null {
  if (v === null || v === undefined) return null;
  const t = v instanceof Date ? v.getTime() : new Date(v as string).getTime();
  return Number.isNaN(t) ? null : t;
}

const asState = (v: unknown): PresenceState => (STATES.has(v as string) ? v : 'offline') as PresenceState;

function fromRow(r: Record<string, unknown>): PresenceEntry {
  const hsTs = r.handshake_ts === null || r.handshake_ts === undefined ? null : Number(r.handshake_ts);
  const handshake: Handshake | null =
    hsTs === null ? null : { before: asState(r.handshake_before), registered_ts: hsTs };
  const version = Number(r.version ?? 0);
  return {
    project_id: r.project_id as string,
    state: asState(r.state),
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
    handshake,
    version,
    announced: version,
    pending: 0,
  };
}

/** Every presence row, as entries (restart safety: a restarted module continues from here). */
export async function loadPresence(db: Knex): Promise<PresenceEntry[]> {
  const rows: Record<string, unknown>[] = await db('project_status').select('*');
  return rows.map(fromRow);
}

/** The rows of these projects, in one query (a re-read after news or a lost race; a check). */
export async function readPresence(db: Knex, ids: readonly string[]): Promise<PresenceEntry[]> {
  if (ids.length === 0) return [];
  const rows: Record<string, unknown>[] = await db('project_status').whereRaw(inJsonList('project_id'), [
    JSON.stringify(ids),
  ]);
  return rows.map(fromRow);
}

/**
 * One row of what heartbeats, metrics and alerts change, for json_to_recordset (times in ms). Its
 * keys are one or two letters (UPSERT_ATTRIBUTES names them back): the batch is one JSON text of up
 * to 5 000 rows that the hub writes, measures and encodes for the wire and PostgreSQL reads again,
 * each at some 3 ns a byte on these machines, and the long names were about a third of its bytes.
 */
function attributeRow(e: PresenceEntry): Record<string, unknown> {
  return {
    p: e.project_id,
    s: e.state_since,
    h: e.last_heartbeat_at,
    m: e.metrics,
    ma: e.metrics_at,
    a: e.last_alert,
    aa: e.last_alert_at,
    u: e.updated_at,
  };
}

const ts = (col: string) => `to_timestamp(v.${col} / 1000.0)`;

/**
 * Heartbeats, metrics and alerts: a multi-row UPSERT that only moves them forward, so of two
 * instances writing the same project the later heartbeat wins whichever flushes last. It never
 * touches the state: that changes only through a transition (TRANSITION_SQL). A project without
 * a row gets one, offline. Rows are taken in the order given (WITH ORDINALITY): the caller gives
 * them in lock order (writeBatch).
 *
 * The rows come as json, not jsonb, and the metrics go into a json column (migration 006): as
 * jsonb, PostgreSQL parsed the whole batch into its binary form and every row's metrics again,
 * half of its CPU a heartbeat. json_to_recordset reads the text once, numbers as float8, and hands
 * each row's metrics over as the text it was given. The rows' keys are short (attributeRow); the
 * alias list after WITH ORDINALITY names the columns.
 */
const UPSERT_ATTRIBUTES = `
INSERT INTO project_status (project_id, state, state_since, last_heartbeat_at, metrics, metrics_at, last_alert,
  last_alert_at, updated_at)
SELECT v.project_id, 'offline', ${ts('state_since')}, ${ts('last_heartbeat_at')}, v.metrics, ${ts('metrics_at')},
  v.last_alert, ${ts('last_alert_at')}, ${ts('updated_at')}
  FROM ROWS FROM (json_to_recordset(?::json) AS (p text, s float8, h float8, m json, ma float8, a jsonb, aa float8,
    u float8))
    WITH ORDINALITY AS v(project_id, state_since, last_heartbeat_at, metrics, metrics_at, last_alert, last_alert_at,
      updated_at, n)
 ORDER BY v.n
ON CONFLICT (project_id) DO UPDATE SET
  last_heartbeat_at = GREATEST(project_status.last_heartbeat_at, EXCLUDED.last_heartbeat_at),
  metrics = CASE WHEN EXCLUDED.metrics_at >= project_status.metrics_at OR project_status.metrics_at IS NULL
    THEN COALESCE(EXCLUDED.metrics, project_status.metrics) ELSE project_status.metrics END,
  metrics_at = GREATEST(project_status.metrics_at, EXCLUDED.metrics_at),
  last_alert = CASE WHEN EXCLUDED.last_alert_at >= project_status.last_alert_at OR project_status.last_alert_at IS NULL
    THEN COALESCE(EXCLUDED.last_alert, project_status.last_alert) ELSE project_status.last_alert END,
  last_alert_at = GREATEST(project_status.last_alert_at, EXCLUDED.last_alert_at),
  updated_at = GREATEST(project_status.updated_at, EXCLUDED.updated_at)`;

/**
 * Transitions, one per project and statement: each row changes only when it holds what the
 * transition expects (Expect in presence.ts), takes the next version, writes its history rows and,
 * on a server, is announced with pg_notify in the same transaction (only committed changes are
 * heard; the payload, the id, version and steps, stays far below NOTIFY's 8000 bytes).
 */
function transitionSql(notify: boolean): string {
  return `
WITH v AS (
  SELECT * FROM jsonb_to_recordset(?::jsonb) AS v(n int, project_id text, to_state text, at float8, steps jsonb,
    x_states jsonb, x_handshake_ts bigint, x_check_session boolean, x_session float8, x_register_ts bigint,
    x_heartbeat_before float8, x_since_before float8, hs_ts bigint, hs_before text, set_session float8,
    set_heartbeat float8, set_reg boolean, instance_id text, agent_version text, registration jsonb)
), a AS (
  UPDATE project_status s SET
    state = v.to_state,
    state_since = CASE WHEN jsonb_array_length(v.steps) > 0 THEN ${ts('at')} ELSE s.state_since END,
    version = nextval('project_status_version'),
    handshake_ts = v.hs_ts,
    handshake_before = v.hs_before,
    session_started_at = COALESCE(${ts('set_session')}, s.session_started_at),
    last_heartbeat_at = GREATEST(s.last_heartbeat_at, ${ts('set_heartbeat')}),
    instance_id = CASE WHEN v.set_reg THEN v.instance_id ELSE s.instance_id END,
    agent_version = CASE WHEN v.set_reg THEN v.agent_version ELSE s.agent_version END,
    registration = CASE WHEN v.set_reg THEN v.registration ELSE s.registration END,
    updated_at = GREATEST(s.updated_at, ${ts('at')})
  FROM v
  WHERE s.project_id = v.project_id
    AND (v.x_states IS NULL OR s.state IN (SELECT jsonb_array_elements_text(v.x_states)))
    AND (v.x_handshake_ts IS NULL OR s.handshake_ts = v.x_handshake_ts)
    AND (v.x_check_session IS NOT TRUE OR s.session_started_at IS NOT DISTINCT FROM ${ts('x_session')})
    AND (v.x_register_ts IS NULL OR NOT (
          (s.state IN ('connecting', 'verifying') AND s.handshake_ts > v.x_register_ts)
       OR (s.state = 'online' AND s.session_started_at >= to_timestamp(v.x_register_ts / 1000.0))))
    AND (v.x_heartbeat_before IS NULL OR COALESCE(s.last_heartbeat_at, s.state_since) < ${ts('x_heartbeat_before')})
    AND (v.x_since_before IS NULL OR s.state_since < ${ts('x_since_before')})
  RETURNING s.project_id, s.version, v.n, v.steps
), h AS (
  INSERT INTO project_status_history (project_id, from_state, to_state, reason, at)
  SELECT a.project_id, st.f, st.t, st.r, to_timestamp(st.a / 1000.0)
    FROM a, ROWS FROM (jsonb_to_recordset(a.steps) AS (f text, t text, r text, a float8)) WITH ORDINALITY AS st(f, t, r, a, i)
   ORDER BY a.n, st.i
)
SELECT a.n, a.version${notify ? `, pg_notify(?, json_build_object('p', a.project_id, 'v', a.version, 's', a.steps)::text)` : ''}
  FROM a`;
}

/** A transition as one jsonb_to_recordset row; `n` finds it again in the answer. */
function transitionRow(op: Transition, n: number): Record<string, unknown> {
  const x = op.expect;
  const reg = op.set.registration;
  return {
    n,
    project_id: op.project_id,
    to_state: op.to,
    at: op.at,
    steps: op.steps.map((h) => ({ f: h.from_state, t: h.to_state, r: h.reason, a: h.at })),
    x_states: x.states ?? null,
    x_handshake_ts: x.handshake_ts ?? null,
    x_check_session: x.session_started_at !== undefined,
    x_session: x.session_started_at ?? null,
    x_register_ts: x.register_ts ?? null,
    x_heartbeat_before: x.heartbeat_before ?? null,
    x_since_before: x.since_before ?? null,
    hs_ts: op.set.handshake?.registered_ts ?? null,
    hs_before: op.set.handshake?.before ?? null,
    set_session: op.set.session_started_at ?? null,
    set_heartbeat: op.set.last_heartbeat_at ?? null,
    set_reg: reg !== undefined,
    instance_id: reg?.instance_id ?? null,
    agent_version: reg?.agent_version ?? null,
    registration: reg?.registration ?? null,
  };
}

/** The steps of an announcement as HistoryRows (the compact form TRANSITION_SQL sends). */
export function stepsFromNotice(
  projectId: string,
  steps: unknown,
): Array<{ project_id: string; from_state: PresenceState; to_state: PresenceState; reason: string; at: number }> {
  if (!Array.isArray(steps)) return [];
  return steps.map((s: { f?: unknown; t?: unknown; r?: unknown; a?: unknown }) => ({
    project_id: projectId,
    from_state: asState(s.f),
    to_state: asState(s.t),
    reason: String(s.r ?? ''),
    at: Number(s.a ?? 0),
  }));
}

/** Transitions applied by a write, with the version each row got. */
export interface WriteResult {
  applied: Map<Transition, number>;
}

/**
 * Transitions in rounds: the k-th transition of every project goes in round k, one statement per
 * round, so a project's transitions apply in order (and the later ones, decided on the earlier,
 * fail with them).
 */
function rounds(ops: readonly Transition[]): Transition[][] {
  const out: Transition[][] = [];
  const seen = new Map<string, number>();
  for (const op of ops) {
    const k = seen.get(op.project_id) ?? 0;
    seen.set(op.project_id, k + 1);
    if (!out[k]) out[k] = [];
    out[k].push(op);
  }
  return out;
}

/**
 * Row locks are taken in one order everywhere: project_id in JavaScript's code-unit order (the
 * order `sortById` gives). The UPSERT locks rows in the order of its input and the transitions'
 * UPDATE in the order the planner joins, so two instances flushing overlapping projects locked
 * the same rows in opposite orders and one of them died in a deadlock (40P01: its batch waited for
 * the next flush, and under load its heartbeats went stale enough for the silence sweep).
 *
 * A batch of heartbeat rows alone takes its locks through the UPSERT itself, its rows sorted and
 * its statements in that order. A batch with transitions first locks every project it touches
 * (lockInOrder, the same order), because the transitions' UPDATE cannot be ordered. The order is
 * JavaScript's, not PostgreSQL's collation, so both kinds agree whatever the database's locale.
 */
const byCodeUnits = (a: string, b: string) => (a < b ? -1 : a > b ? 1 : 0);
const sortById = (a: { project_id: string }, b: { project_id: string }) => byCodeUnits(a.project_id, b.project_id);

async function lockInOrder(
  trx: Knex.Transaction,
  rows: readonly PresenceEntry[],
  ops: readonly Transition[],
): Promise<void> {
  const ids = new Set<string>();
  for (const e of rows) ids.add(e.project_id);
  for (const op of ops) ids.add(op.project_id);
  if (ids.size === 0) return;
  const sorted = [...ids].sort(byCodeUnits);
  await trx.raw(LOCK_PRESENCE_SQL, [JSON.stringify(sorted)]);
}

/**
 * The presence rows of a batch, locked in the order given (the ids as jsonb, as every statement
 * here takes its rows, the same on pg and PGlite; the row locks are taken after the sort: LockRows
 * sits above it). The rows are found through the primary key (`= ANY`, core/services/sql-lists.ts):
 * joined to the unpacked ids alone, which the planner takes for 100 rows, a project_status of a
 * few thousand rows was scanned whole for every flush with a transition. One binding: the list,
 * thousands of ids in a busy flush, is unpacked once and serves both the lookup and the order.
 * Exported for test/modules/status/statement-plans.test.ts.
 */
export const LOCK_PRESENCE_SQL = `WITH i AS MATERIALIZED (
    SELECT * FROM jsonb_array_elements_text(?::jsonb) WITH ORDINALITY AS i(id, n)
  )
  SELECT 1 FROM project_status s JOIN i ON s.project_id = i.id
   WHERE s.project_id = ANY(ARRAY(SELECT id FROM i)) ORDER BY i.n FOR UPDATE OF s`;

/**
 * One transaction: a multi-row UPSERT of heartbeats, metrics and alerts, then the transitions (one
 * statement per round). `channel` names the NOTIFY channel (null: no announcement, one process).
 * With an outbox, the domain events of the transitions PostgreSQL applied (domain-events.ts) are
 * written in the same transaction: an event exists exactly when its history row does.
 */
export async function writeBatch(
  db: Knex,
  batch: Batch,
  channel: string | null = null,
  outbox?: ModuleOutbox,
): Promise<WriteResult> {
  const applied = new Map<Transition, number>();
  // the lock order (sortById): every statement below takes its rows in it
  const rows = [...batch.rows].sort(sortById);
  await db.transaction(async (trx) => {
    if (batch.ops.length > 0) await lockInOrder(trx, rows, batch.ops);
    for (let i = 0; i < rows.length; i += CHUNK) {
      await trx.raw(UPSERT_ATTRIBUTES, [JSON.stringify(rows.slice(i, i + CHUNK).map(attributeRow))]);
    }
    const sql = transitionSql(channel !== null);
    for (const round of rounds(batch.ops)) {
      for (let i = 0; i < round.length; i += CHUNK) {
        const part = round.slice(i, i + CHUNK);
        const bindings: string[] = [JSON.stringify(part.map(transitionRow))];
        if (channel !== null) bindings.push(channel);
        const res = (await trx.raw(sql, bindings)) as { rows: Array<{ n: number; version: string | number }> };
        for (const r of res.rows) applied.set(part[Number(r.n)], Number(r.version));
      }
    }
    if (outbox && applied.size > 0) {
      const events = presenceEvents([...applied.keys()].flatMap((op) => op.steps));
      if (events.length > 0) await outbox.addMany(trx, events);
    }
  });
  return { applied };
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

const sizeOf = (b: Batch): number => b.rows.length + b.ops.length;

/** The first and second half of a batch's rows and transitions (at least one item each: size >= 2). */
function halves(b: Batch): [Batch, Batch] {
  const n = Math.floor(sizeOf(b) / 2);
  const r = Math.min(n, b.rows.length);
  const o = n - r;
  return [
    { rows: b.rows.slice(0, r), ops: b.ops.slice(0, o) },
    { rows: b.rows.slice(r), ops: b.ops.slice(o) },
  ];
}

/** Writes a batch; a writer without an answer (a test's) has applied no transition. */
export type Write = (db: Knex, batch: Batch, channel: string | null) => Promise<unknown>;

/**
 * Writes presence changes in batches, one flush at a time. A failed write gives the batch back
 * to Presence, so the next flush retries it; nothing accepted is lost while the module runs.
 * One bad row never blocks a batch: when the database refuses a batch for its data, the batch is
 * split in halves and written again (bisection), so the good rows land in a few statements and
 * each bad one is found alone, counted, logged once (ids and the error, never the row) and
 * dropped instead of being retried forever with everything after it.
 *
 * Heartbeats wait for the flush interval; a transition asks for a flush at once (`soon`): one
 * runs at a time and what queued meanwhile goes in the next, so a burst of registrations still
 * shares statements (group commit) while a lone one is not held back by the interval.
 */
export class Flusher {
  readonly stats: FlushStats = {
    flushes: 0,
    rows_written: 0,
    history_written: 0,
    transitions_applied: 0,
    transitions_lost: 0,
    failures: 0,
    bad_rows: 0,
  };
  /** The NOTIFY channel transitions are announced on (null: one process, nobody to tell). */
  channel: string | null = null;
  /** Told the projects whose transitions PostgreSQL refused: their rows are to be read again. */
  onLost: (projectIds: string[]) => void = () => undefined;
  private running: Promise<void> | null = null;
  private again = false;
  private soonScheduled = false;
  private stopped = false;
  /** Told when a flush that started after they asked has written everything (see `written`). */
  private waiters: Array<() => void> = [];

  constructor(
    private readonly db: () => Knex,
    private readonly presence: Presence,
    private readonly log: Logger,
    private readonly write: Write = writeBatch,
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
      if (this.again && !this.stopped) {
        this.again = false;
        void this.flush();
      }
    });
    return this.running;
  }

  /**
   * A flush at the next turn of the event loop, or right after the one running (transitions: see
   * the class comment). The next turn, not now: the handler that queued the transition still
   * registers its `written()` waiter, and the rest of the mailbox's burst joins the same batch.
   */
  soon(): void {
    if (this.soonScheduled || this.stopped) return;
    this.soonScheduled = true;
    setImmediate(() => {
      this.soonScheduled = false;
      if (this.stopped) return;
      if (this.running) this.again = true;
      else void this.flush();
    });
  }

  /** Waits for a running flush, then writes what is left (called on stop). */
  async final(): Promise<void> {
    this.stopped = true;
    this.again = false;
    if (this.running) await this.running;
    await this.flush();
    this.again = false;
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
    const lost = new Set<string>();
    let written = false;
    while (todo.length > 0) {
      const piece = todo.pop()!;
      try {
        const result = await this.write(this.db(), piece, this.channel);
        written = true;
        this.stats.rows_written += piece.rows.length;
        const applied = (result as WriteResult | undefined)?.applied ?? new Map<Transition, number>();
        for (const op of piece.ops) {
          const version = applied.get(op) ?? null;
          if (version === null) {
            this.stats.transitions_lost++;
            lost.add(op.project_id);
          } else {
            this.stats.transitions_applied++;
            this.stats.history_written += op.steps.length;
          }
          this.presence.settle(op, version);
        }
      } catch (err) {
        if (!isRowError(err)) {
          this.stats.failures++;
          this.waiters.unshift(...waiting);
          for (const p of [piece, ...todo]) this.presence.restore(p);
          this.log.warn(
            { err: brief(err), rows: batch.rows.length, transitions: batch.ops.length },
            'presence flush failed; retrying at the next flush',
          );
          this.reportLost(lost);
          return;
        }
        if (sizeOf(piece) > 1) {
          const [a, b] = halves(piece);
          todo.push(b, a); // a first: rows keep their order
          continue;
        }
        this.stats.bad_rows++;
        const row = piece.rows[0];
        const op = piece.ops[0];
        if (op) {
          this.presence.settle(op, null);
          lost.add(op.project_id);
        }
        this.log.warn(
          { project_id: row?.project_id ?? op?.project_id, what: row ? 'presence row' : 'transition', err: brief(err) },
          'presence row refused by the database; written the batch without it',
        );
      }
    }
    if (written) this.stats.flushes++;
    this.reportLost(lost);
    // a row dropped as bad will never be written: waiting for it would hold its uplink forever
    for (const w of waiting) w();
  }

  private reportLost(lost: Set<string>): void {
    if (lost.size > 0) this.onLost([...lost]);
  }
}
