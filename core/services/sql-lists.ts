/**
 * A list of values passed to PostgreSQL as ONE jsonb parameter (so a statement keeps a fixed text
 * and one prepared plan whatever the list's length, core/services/statement.ts), matched against
 * an indexed column.
 *
 * Written as `column = ANY(ARRAY(SELECT jsonb_array_elements_text(?)))`, not
 * `column IN (SELECT jsonb_array_elements_text(?))`. The planner takes any set-returning function
 * for 100 rows; for 100 values it judges a whole scan of a table of up to some 30 000 rows cheaper
 * than 100 lookups in the column's index, and hashes the list against every row. A command's ack
 * and result write went through three such scans (the tracker twice, the outbox once), so one
 * command's write cost the server 0.7 ms of CPU with 1 000 commands stored and 2.4 ms with 20 000,
 * and fell back to 0.4 ms past 60 000, where the index won again. An array from a sub-select is
 * taken for 10 values, and `= ANY` of it is an index condition: each value is looked up once the
 * table is past some 1 200 rows. test/modules/{command,jobs,status}/statement-plans.test.ts hold
 * the hot statements to index plans (test/helpers/plans.ts).
 *
 * Below that, 10 lookups still cost the planner more than one pass over the table, so a statement
 * prepared on a table of a few hundred to 1 200 rows reads all of it for every list, one id or
 * ten: a command's ack + result write scanned the tracker and the outbox, 0.42-0.49 ms of server
 * CPU against 0.25-0.31 ms with lookups (a new site's first commands, and every benchmark's). Most
 * lists hold ONE id (a command's own write at 1 in flight), and for those `listStatement` gives a
 * second text, `column = (?::jsonb ->> 0)`: an equality, taken for one row, looked up in the index
 * at any table size, with the same binding.
 */
import { type Statement, statement } from './statement.js';

/**
 * `column` is one of the texts of the JSON array bound at this `?`. A statement that unpacks its
 * list into a CTE anyway (to join its other fields or keep its order) writes the same condition
 * over the CTE instead, `column = ANY(ARRAY(SELECT id FROM the_cte))`, and binds the list once
 * (modules/jobs/store.ts APPLY_STATES_SQL, modules/status/persist.ts LOCK_PRESENCE_SQL).
 */
export const inJsonList = (column: string): string =>
  `${column} = ANY(ARRAY(SELECT jsonb_array_elements_text(?::jsonb)))`;

/** The list of one value: `column` equals the first text of the JSON array bound at this `?`. */
const firstOfJsonList = (column: string): string => `${column} = (?::jsonb ->> 0)`;

/** A hot statement over JSON lists, in the two texts `listStatement` makes. */
export interface ListStatement {
  /** Every list bound holds exactly one value: each list condition is an equality. */
  readonly one: Statement;
  /** Any length: each list condition is `= ANY`. */
  readonly many: Statement;
}

/**
 * A hot statement whose lists are all the same list (one id list, bound once per condition),
 * made twice from `make(inList)`: `inList(column)` is the list condition for that column. Use
 * `forList` to pick the text for a list's length; the bindings are the same for both.
 *
 * @example
 *   const OWNERS = listStatement((inList) => `SELECT id FROM t WHERE ${inList('id')}`);
 *   await run(db, forList(OWNERS, ids.length), [JSON.stringify(ids)]);
 */
export function listStatement(
  make: (inList: (column: string) => string) => string,
  opts: { timesAsText?: boolean } = {},
): ListStatement {
  return Object.freeze({ one: statement(make(firstOfJsonList), opts), many: statement(make(inJsonList), opts) });
}

/** The text of `st` for a list of `length` values. */
export const forList = (st: ListStatement, length: number): Statement => (length === 1 ? st.one : st.many);
