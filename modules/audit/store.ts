/** The audit table: checking and writing a record, the listing, the retention cleanup. */
import type { Knex } from 'knex';
import { z } from 'zod';
import { HubError } from '../../core/errors.js';
import { isoOfMs } from '../../core/iso-time.js';
import { GroupCommit } from '../../core/services/group-commit.js';
import { run, statement } from '../../core/services/statement.js';
import { instant } from '../shared/contract/instant.js';
import { firstIssue, projectId } from '../shared/contract/schemas.js';
import {
  AUDIT_ACTIONS,
  AUDIT_DEFAULT_LIMIT,
  AUDIT_INTERFACES,
  AUDIT_MAX_LIMIT,
  type AuditEntry,
  type AuditPage,
  type AuditRecord,
} from './contract/topics.js';

/** A C0 control character or DEL (surrogates are never in that range, so code units will do). */
// biome-ignore lint/suspicious/noControlCharactersInRegex: matching control characters is the point
const CONTROL_CHAR = /[\u0000-\u001f\u007f]/;

/**
 * An id or label written as it came: bounded, one line, no NUL (PostgreSQL text refuses it).
 * Checked with a regular expression, not by spreading the string into an array of characters:
 * every send is audited, and each record has half a dozen labels.
 */
const label = z
  .string()
  .min(1)
  .max(256)
  .refine((v) => !CONTROL_CHAR.test(v), { message: 'no control characters' });

const recordSchema = z
  .object({
    action: z.enum(AUDIT_ACTIONS),
    token_id: label,
    role: label,
    interface: z.enum(AUDIT_INTERFACES),
    project_id: label.nullable(),
    targets: z.record(z.string().max(64), label),
    outcome: label,
    at: z.number().int().nonnegative(),
  })
  .strict();

const listSchema = z
  .object({
    action: z.enum(AUDIT_ACTIONS).optional(),
    project_id: projectId.optional(),
    token_id: label.optional(),
    since: instant.optional(),
    until: instant.optional(),
    limit: z.number().int().min(1).max(AUDIT_MAX_LIMIT).default(AUDIT_DEFAULT_LIMIT),
    offset: z.number().int().min(0).default(0),
  })
  .strict();

function check<S extends z.ZodType>(schema: S, body: unknown): z.output<S> {
  const r = schema.safeParse(body ?? {});
  if (r.success) return r.data;
  const { field, message } = firstIssue(r.error, 'request');
  throw new HubError('AUDIT_ERR_INVALID', `${field}: ${message}`, { field });
}

interface AuditRow {
  id: string | number;
  at: Date | string;
  action: string;
  token_id: string;
  role: string;
  interface: string;
  project_id: string | null;
  targets: Record<string, string> | string;
  outcome: string;
}

const toEntry = (r: AuditRow): AuditEntry => ({
  audit_id: String(r.id),
  at: new Date(r.at).toISOString(),
  action: r.action as AuditEntry['action'],
  token_id: r.token_id,
  role: r.role,
  interface: r.interface as AuditEntry['interface'],
  project_id: r.project_id,
  targets: typeof r.targets === 'string' ? JSON.parse(r.targets) : r.targets,
  outcome: r.outcome,
});

/**
 * Records of one turn go in one statement (prepared, core/services/statement.ts), in the order
 * given: the serial ids follow the SELECT's ORDER BY, so the ids sorted line up with the items.
 * Every send and sync is an audited action, so this is on the command path: the statement
 * returns the ids alone, and each entry is the checked record with its id (the row holds
 * nothing else the record did not give; parsing it back cost a Date and a jsonb parse a record).
 */
const INSERT_SQL =
  statement(`INSERT INTO audit_log (at, action, token_id, role, interface, project_id, targets, outcome)
  SELECT v.at, v.action, v.token_id, v.role, v.interface, v.project_id, v.targets, v.outcome
    FROM jsonb_to_recordset(?::jsonb) AS v(n int, at timestamptz, action text, token_id text, role text,
      interface text, project_id text, targets jsonb, outcome text)
   ORDER BY v.n
  RETURNING id`);

export class AuditStore {
  private readonly group: GroupCommit<AuditRecord, AuditEntry>;

  constructor(private readonly db: () => Knex) {
    this.group = new GroupCommit(async (recs) => {
      const items = recs.map((rec, n) => ({ n, ...rec, at: isoOfMs(rec.at) }));
      const rows = await run<{ id: string | number }>(this.db(), INSERT_SQL, [JSON.stringify(items)]);
      if (rows.length !== items.length)
        throw new Error(`audit: ${rows.length} rows written for ${items.length} records`);
      const ids = rows.map((r) => BigInt(r.id)).sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
      return items.map(({ n, ...rec }) => ({ ...rec, audit_id: String(ids[n]) }));
    });
  }

  /** Statements written (each one commit of one or more records). */
  get statements(): number {
    return this.group.statements;
  }

  /**
   * Checks one record and writes it with the others of the same turn; resolves with it once
   * committed. One record the database refuses fails alone (group-commit.ts).
   */
  async write(body: unknown): Promise<AuditEntry> {
    return this.group.add(check(recordSchema, body));
  }

  /** Newest first, filtered by action, project, token and time. */
  async list(body: unknown): Promise<AuditPage> {
    const req = check(listSchema, body);
    const scope = (q: Knex.QueryBuilder) => {
      if (req.action) q.where('action', req.action);
      if (req.project_id) q.where('project_id', req.project_id);
      if (req.token_id) q.where('token_id', req.token_id);
      if (req.since) q.where('at', '>=', req.since.toISOString());
      if (req.until) q.where('at', '<=', req.until.toISOString());
      return q;
    };
    const [rows, count] = await Promise.all([
      scope(this.db()('audit_log'))
        .select('*')
        .orderBy([
          { column: 'at', order: 'desc' },
          { column: 'id', order: 'desc' },
        ])
        .limit(req.limit)
        .offset(req.offset),
      scope(this.db()('audit_log')).count<{ n: string | number }[]>({ n: '*' }),
    ]);
    return {
      items: (rows as AuditRow[]).map(toEntry),
      total: Number(count[0]?.n ?? 0),
      limit: req.limit,
      offset: req.offset,
    };
  }

  /** Deletes records older than the retention, in short batches; returns how many went. */
  async cleanup(now: number, retentionMs: number): Promise<number> {
    const cutoff = new Date(now - retentionMs).toISOString();
    let total = 0;
    for (;;) {
      const res = (await this.db().raw(
        `WITH d AS (DELETE FROM audit_log WHERE id IN (
           SELECT id FROM audit_log WHERE at < ?::timestamptz ORDER BY at LIMIT 5000) RETURNING 1)
         SELECT count(*) AS n FROM d`,
        [cutoff],
      )) as { rows: Array<{ n: string | number }> };
      const n = Number(res.rows[0]?.n ?? 0);
      total += n;
      if (n < 5000) return total;
    }
  }
}
