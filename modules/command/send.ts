/**
 * Accepting commands (docs/architecture.md#a-command-end-to-end): validate, ask status for the project's secret and presence,
 * sign, and write the tracker row and its outbox row in ONE statement (a single statement is a
 * transaction of its own; sends of the same moment share it, insert-batch.ts), then answer at
 * once and publish the first attempt straight after the commit; the relay re-publishes until
 * the agent acks. Also the two ways a row
 * re-enters the outbox: a queued command whose project came online, and a dead one replayed.
 * Both are signed again with a fresh timestamp (receivers refuse timestamps older than 300 s,
 * docs/wire-protocol.md#mqtt-wire-protocol) but keep their message_id, which is the command_id.
 */
import type { Knex } from 'knex';
import { errorCode, HubError } from '../../core/errors.js';
import { commandDownTopic, signedCommandJson } from '../shared/protocol.js';
import { canonicalJson } from '../shared/signing.js';
import type { CommandView, SentCommand } from './contract/topics.js';
import { type Deps, isoAt, lockInOrder, query, retrying } from './deps.js';
import { IdempotencyKeys, mismatch } from './idempotency.js';
import { InsertBatch } from './insert-batch.js';
import type { Claimed } from './relay.js';
import { TRACKER_COLUMNS, type TrackerRow, toView } from './rows.js';
import { type CheckedSend, checkSend, invalid } from './validate.js';

/** For the end-to-end crash test only (see maybeCrash). */
export const CRASH_AFTER_COMMIT = 'command.after_commit';

/**
 * Test hook: with HUB_CRASH_POINT=command.after_commit the process kills itself with SIGKILL
 * right after a send's transaction commits and before the relay can publish, which is the
 * moment the transactional outbox exists for. The end-to-end suite restarts the hub on the same
 * database and checks the command is delivered anyway. Never set it in production.
 */
function maybeCrash(): void {
  if (process.env.HUB_CRASH_POINT === CRASH_AFTER_COMMIT) process.kill(process.pid, 'SIGKILL');
}

const T_COLS = TRACKER_COLUMNS.split(', ')
  .map((c) => `t.${c}`)
  .join(', ');

export class Sender {
  private readonly inserts: InsertBatch;
  private readonly keys: IdempotencyKeys;

  constructor(
    private readonly d: Deps,
    /** The send path's fast lane: publishes a row whose first attempt it claimed (relay.ts deliverSoon). */
    private readonly deliver: (row: Claimed) => void,
  ) {
    this.inserts = new InsertBatch(() => d.db);
    this.keys = new IdempotencyKeys(d);
  }

  /** Statements the group commit wrote (COMMAND.stats). */
  get insertStatements(): number {
    return this.inserts.statements;
  }

  async send(req: unknown): Promise<SentCommand> {
    let c: CheckedSend;
    try {
      c = checkSend(req, this.d.cfg, this.d.clock.now());
    } catch (err) {
      this.d.counters.rejected++;
      throw err;
    }
    // A retry with a known key gets its command whatever has changed since (project offline,
    // disabled, deleted): the key is looked up before anything else is checked.
    if (c.idempotency) {
      const prior = await this.replayed(c);
      if (prior) return prior;
    }
    const creds = await this.d.creds.get(c.project_id).catch(async (err: unknown) => {
      if (errorCode(err) === 'CMD_ERR_UNKNOWN_PROJECT') this.d.counters.rejected++;
      throw err;
    });
    if (!creds.enabled) return this.refuse(c, invalid('project_id', `project ${c.project_id} is disabled`));
    const secret = creds.secrets[0];
    if (!secret) throw invalid('project_id', `project ${c.project_id} has no signing secret`);
    const online = creds.state === 'online';
    // A scheduled send meets offline_policy at its time (scheduler.ts), not now.
    const scheduled = c.schedule_at !== null;
    if (!scheduled && !online && c.offline_policy === 'fail') {
      return this.refuse(
        c,
        new HubError(
          'CMD_ERR_PROJECT_OFFLINE',
          `project ${c.project_id} is ${creds.state}; send with offline_policy "queue" to wait for it`,
          { project_id: c.project_id, state: creds.state },
        ),
      );
    }
    const now = this.d.clock.now();
    let signed: { message_id: string; json: string };
    try {
      // signed over the payload's canonical text from validation: the payload is not walked again
      signed = signedCommandJson(c.project_id, c.command_type, c.payload_json, secret, {
        ...(c.command_id ? { messageId: c.command_id } : {}),
        now,
      });
    } catch (err) {
      // e.g. a `register` payload that does not match its wire schema
      this.d.counters.rejected++;
      const field = String((err as HubError).details?.field ?? 'payload');
      throw invalid(field, (err as Error).message.replace(/^[a-z_]+: /, ''));
    }
    const commandId = signed.message_id;
    const queued = !scheduled && !online;
    const queueExpires = queued ? now + c.queue_ttl_ms : null;
    // A queued command's execution clock starts when it is released; until then only the queue
    // expiry applies. A scheduled one's starts at its time (the scheduler sets it again then).
    const timeoutAt = (c.schedule_at ?? queueExpires ?? now) + c.timeout_ms;
    const message = signed.json;
    const topic = commandDownTopic(c.project_id);
    // Online: this send publishes the first attempt itself, right after the commit (the fast
    // lane), so the row is written already claimed for it: attempts 1, due again after the first
    // backoff step. Should this process die before the publish, the relay sends it then.
    const row = await this.inserts
      .add({
        command_id: commandId,
        project_id: c.project_id,
        command_type: c.command_type,
        module: c.module,
        operator_id: c.operator_id,
        payload_json: c.payload_json,
        offline_policy: c.offline_policy,
        timeout_ms: c.timeout_ms,
        queue_expires_at: queueExpires === null ? null : isoAt(queueExpires),
        is_sync: c.is_sync,
        timeout_at: isoAt(timeoutAt),
        created_at: isoAt(now),
        topic,
        message,
        status: scheduled ? 'scheduled' : 'pending',
        schedule_at: c.schedule_at === null ? null : isoAt(c.schedule_at),
        queue_ttl_ms: c.queue_ttl_ms,
        // the message signed now checks the payload against its wire schema; a scheduled one is
        // signed again at its time (scheduler.ts)
        outbox_status: scheduled ? 'scheduled' : queued ? 'waiting' : 'pending',
        attempts: queued || scheduled ? 0 : 1,
        next_attempt_at: isoAt(c.schedule_at ?? (queued ? (queueExpires ?? now) : now + this.d.cfg.retry_base_ms)),
        idempotency_key: c.idempotency?.key ?? null,
        request_hash: c.idempotency?.hash ?? null,
        job_id: c.job_id,
      })
      .catch(async (err: unknown) => {
        // a keyed send whose caller-chosen command_id another command took (insert-batch.ts)
        if (!c.idempotency || (err as { code?: unknown }).code !== '23505') throw err;
        return null;
      });
    if (!row && c.idempotency) {
      // Another send holds the key (it committed first, or both came at once): answer its command.
      const prior = await this.replayed(c);
      if (prior) return prior;
      this.d.counters.rejected++;
      throw invalid('command_id', `${commandId} is already used by another command`);
    }
    if (!row) {
      // Idempotent by the caller's command_id: a retried send answers the command it made first.
      const existing = await this.existing({ ...c, command_id: commandId });
      if (existing) return existing;
      throw new HubError('CMD_ERR_INVALID', `command_id: ${commandId} could not be stored`, { field: 'command_id' });
    }
    maybeCrash();
    this.d.counters.accepted++;
    this.d.log.debug(
      { project_id: c.project_id, command_id: commandId, command_type: c.command_type, queued, scheduled },
      'command accepted',
    );
    this.d.events.state(row);
    if (!queued && !scheduled) {
      this.deliver({
        id: row.outbox_id,
        command_id: commandId,
        project_id: c.project_id,
        topic,
        payload: message,
        attempts: 1,
        had_error: false,
        fast: true,
      });
    }
    return toView(row);
  }

  /**
   * The command an idempotency key names, flagged as a replay; null when the key is unknown.
   * CMD_ERR_IDEMPOTENCY_MISMATCH when the key was used for a different request.
   */
  private async replayed(c: CheckedSend): Promise<SentCommand | null> {
    const idem = c.idempotency!;
    const found = await this.keys.find(idem.key);
    if (!found) return null;
    if (found.hash !== idem.hash) {
      this.d.counters.rejected++;
      this.d.counters.idempotency_mismatches++;
      this.d.log.warn(
        { project_id: c.project_id, command_id: found.row.command_id },
        'idempotency key reused with a different request: refused',
      );
      throw mismatch(found.row.command_id);
    }
    this.d.counters.idempotent_replays++;
    this.d.log.debug(
      { project_id: found.row.project_id, command_id: found.row.command_id, status: found.row.status },
      'idempotent retry: answered with the command the key names',
    );
    return { ...toView(found.row), idempotent_replayed: true };
  }

  /**
   * A send refused (project offline or disabled): a retry of a command stored before still gets
   * that command (idempotent by command_id), anything else the refusal.
   */
  private async refuse(c: CheckedSend, err: HubError): Promise<CommandView> {
    if (c.command_id) {
      const existing = await this.existing(c);
      if (existing) return existing;
    }
    this.d.counters.rejected++;
    throw err;
  }

  /** `fn` in a transaction that first locks the commands' rows in the global order (deps.ts). */
  private locked<T>(ids: string[], fn: (trx: Knex) => Promise<T>): Promise<T> {
    return retrying(() =>
      this.d.db.transaction(async (trx) => {
        await lockInOrder(trx, ids);
        return fn(trx);
      }),
    );
  }

  private async existing(c: CheckedSend): Promise<CommandView | null> {
    const [row] = await query<TrackerRow>(
      this.d.db,
      `SELECT ${TRACKER_COLUMNS} FROM command_tracker WHERE command_id = ?`,
      [c.command_id],
    );
    if (!row) return null;
    if (row.project_id !== c.project_id || row.command_type !== c.command_type) {
      this.d.counters.rejected++;
      throw invalid('command_id', `${c.command_id} is already used by another command`);
    }
    this.d.counters.duplicates_sent++;
    return toView(row);
  }

  /**
   * The project came online: its queued rows become due now, signed again, and their execution
   * timeout starts now. Safe to run twice or on several instances (guarded by status='waiting').
   */
  async release(projectId: string): Promise<number> {
    let released = 0;
    for (;;) {
      const waiting = await query<{ command_id: string; command_type: string; payload: unknown }>(
        this.d.db,
        `SELECT o.command_id, t.command_type, t.payload FROM command_outbox o
           JOIN command_tracker t ON t.command_id = o.command_id
          WHERE o.status = 'waiting' AND o.project_id = ? ORDER BY o.id LIMIT 500`,
        [projectId],
      );
      if (waiting.length === 0) break;
      const creds = await this.d.creds.get(projectId, true);
      const secret = creds.secrets[0];
      if (!creds.enabled || !secret || creds.state !== 'online') break;
      const now = this.d.clock.now();
      const signed = waiting.map((w) => ({
        command_id: w.command_id,
        payload: signedCommandJson(projectId, w.command_type, canonicalJson(w.payload), secret, {
          messageId: w.command_id,
          now,
        }).json,
      }));
      const rows = await this.locked(
        signed.map((x) => x.command_id),
        (trx) =>
          query<{ command_id: string }>(
            trx,
            `WITH v AS (SELECT * FROM jsonb_to_recordset(?::jsonb) AS v(command_id text, payload text)),
         o AS (
           UPDATE command_outbox o SET payload = v.payload, status = 'pending', attempts = 0,
                  next_attempt_at = ?::timestamptz, last_error = NULL, updated_at = ?::timestamptz
             FROM v WHERE o.command_id = v.command_id AND o.status = 'waiting'
           RETURNING o.command_id
         )
         UPDATE command_tracker t SET timeout_at = ?::timestamptz + t.timeout_ms * interval '1 millisecond',
                updated_at = ?::timestamptz
           FROM o WHERE t.command_id = o.command_id
         RETURNING t.command_id`,
            [JSON.stringify(signed), isoAt(now), isoAt(now), isoAt(now), isoAt(now)],
          ),
      );
      released += rows.length;
      if (waiting.length < 500) break;
    }
    if (released > 0) {
      this.d.log.info({ project_id: projectId, released }, 'project online: queued commands released');
      this.d.wakeRelay();
    }
    return released;
  }

  /** COMMAND.deadReplay: a dead outbox row goes back to pending with attempts 0; the tracker restarts at pending. */
  async replay(commandId: string): Promise<CommandView> {
    const [cur] = await query<TrackerRow & { outbox_status: string | null }>(
      this.d.db,
      `SELECT ${T_COLS}, t.payload, o.status AS outbox_status FROM command_tracker t
         LEFT JOIN command_outbox o ON o.command_id = t.command_id WHERE t.command_id = ?`,
      [commandId],
    );
    if (!cur) throw new HubError('CMD_ERR_NOT_FOUND', `no command ${commandId}`, { command_id: commandId });
    if (cur.outbox_status !== 'dead') {
      throw invalid('command_id', `command ${commandId} is not dead (outbox ${cur.outbox_status ?? 'gone'})`);
    }
    const creds = await this.d.creds.get(cur.project_id);
    const secret = creds.secrets[0];
    if (!creds.enabled || !secret) throw invalid('project_id', `project ${cur.project_id} is disabled`);
    const now = this.d.clock.now();
    const message = signedCommandJson(cur.project_id, cur.command_type, canonicalJson(cur.payload), secret, {
      messageId: commandId,
      now,
    }).json;
    const rows = await this.locked([commandId], (trx) =>
      query<TrackerRow>(
        trx,
        `WITH o AS (
         UPDATE command_outbox SET status = 'pending', attempts = 0, payload = ?, next_attempt_at = ?::timestamptz,
                last_error = NULL, updated_at = ?::timestamptz
          WHERE command_id = ? AND status = 'dead'
         RETURNING command_id
       )
       UPDATE command_tracker t SET status = 'pending', attempts = 0, error = NULL, sent_at = NULL, acked_at = NULL,
              started_at = NULL, completed_at = NULL, late_result = false,
              timeout_at = ?::timestamptz + t.timeout_ms * interval '1 millisecond', updated_at = ?::timestamptz
         FROM o WHERE t.command_id = o.command_id
       RETURNING ${T_COLS}`,
        [message, isoAt(now), isoAt(now), commandId, isoAt(now), isoAt(now)],
      ),
    );
    if (rows.length === 0) throw invalid('command_id', `command ${commandId} is not dead any more`);
    this.d.counters.replayed++;
    this.d.log.info({ project_id: cur.project_id, command_id: commandId }, 'dead command replayed');
    this.d.events.state(rows[0]);
    this.d.wakeRelay();
    return toView(rows[0]);
  }
}
