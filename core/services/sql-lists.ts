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
 * taken for 10 values, and `= ANY` of it is an index condition: each value is looked up, at any
 * table size. test/modules/{command,jobs,status}/statement-plans.test.ts hold the hot statements to
 * index plans (test/helpers/plans.ts).
 */

/**
 * `column` is one of the texts of the JSON array bound at this `?`. A statement that unpacks its
 * list into a CTE anyway (to join its other fields or keep its order) writes the same condition
 * over the CTE instead, `column = ANY(ARRAY(SELECT id FROM the_cte))`, and binds the list once
 * (modules/jobs/store.ts APPLY_STATES_SQL, modules/status/persist.ts LOCK_PRESENCE_SQL).
 */
export const inJsonList = (column: string): string =>
  `${column} = ANY(ARRAY(SELECT jsonb_array_elements_text(?::jsonb)))`;
