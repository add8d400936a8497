/**
 * Hot statements: the few a command passes through every time (the send's INSERT, the publish
 * outcome, the ack and result writes). On PostgreSQL each is a named prepared statement, so a
 * session parses and plans it once instead of on every call: for the send's multi-CTE INSERT
 * that planning was about 1 ms of server CPU per call, more than the write itself on a small
 * machine (`npm run bench -- statements` measures it).
 *
 * The name is derived from the text, so one name never stands for two texts (node-postgres
 * refuses that on a session). A statement only ever has a fixed text: never build one from
 * values, or each session keeps one plan per value.
 *
 * `databases.<name>.prepared_statements: false` sends them unnamed (for a pooler in transaction
 * mode that cannot keep a session's prepared statements, such as PgBouncer before 1.21). PGlite
 * runs them as any other query. db.ts applies both, recovers a session whose prepared plan
 * went stale (a migration changed a table under it), and has a session prepare a statement again
 * as its runs double, so a plan made while the tables were small does not outlive them.
 *
 * @example
 *   const CLAIM = statement('UPDATE jobs SET owner = ? WHERE id = ? RETURNING id');
 *   const rows = await run<{ id: string }>(db, CLAIM, [owner, id]);
 */
import { createHash } from 'node:crypto';
import type { Knex } from 'knex';
import type { HotQuery } from './db.js';
import { TIMES_AS_TEXT } from './pg-times.js';

export interface Statement {
  /** `gmq_` and a digest of the text: the session-level name of the prepared statement. */
  readonly name: string;
  /** knex `?` placeholders, as in `db.raw`. */
  readonly sql: string;
  /** The same with `$n` placeholders, rewritten once here (knex rewrites on every call). */
  readonly text: string;
  /**
   * What node-postgres gets beside the text, made once: the name, and the statement's own type
   * parsers when it has them (pg only; the PGlite client drops both).
   */
  readonly options: HotQuery['options'];
}

/**
 * A hot statement of fixed text; define it once, at module level. `timesAsText`: its rows'
 * timestamptz values come as PostgreSQL's text on pg (core/services/pg-times.ts), for rows that
 * only ever become ISO text; PGlite still gives Dates.
 */
export function statement(sql: string, opts: { timesAsText?: boolean } = {}): Statement {
  const name = `gmq_${createHash('sha256').update(sql).digest('hex').slice(0, 24)}`;
  // knex's PostgreSQL rule: `\?` stays a question mark, any other `?` is the next placeholder
  let n = 0;
  const text = sql.replace(/(\\*)(\?)/g, (_m, escapes: string) => (escapes.length % 2 ? '?' : `$${++n}`));
  const options = Object.freeze(opts.timesAsText ? { name, types: TIMES_AS_TEXT } : { name });
  return Object.freeze({ name, sql, text, options });
}

/** A client of db.ts that runs hot statements itself (both of its dialects do). */
interface HotClient {
  runHot(obj: HotQuery): Promise<unknown[]>;
}

/**
 * Runs a hot statement; its `rows` on both drivers. Outside a transaction it goes straight to a
 * pooled connection (db.ts runHot); inside one, through knex on the transaction's connection.
 */
export async function run<T>(db: Knex, st: Statement, bindings: readonly unknown[] = []): Promise<T[]> {
  const client = db.client as Partial<HotClient>;
  if (!(db as Knex.Transaction).isTransaction && typeof client.runHot === 'function') {
    return (await client.runHot({ sql: st.text, bindings: [...bindings], options: st.options })) as T[];
  }
  const r = (await db.raw(st.sql, bindings as Knex.RawBinding[]).options(st.options)) as { rows: T[] };
  return r.rows;
}
