/**
 * The plan PostgreSQL runs a statement with, for tests that hold hot statements to index lookups
 * (core/services/sql-lists.ts). A prepared statement is planned with its values for its first
 * executions (`custom`) and may then reuse one plan for any values (`generic`); both are asked for.
 *
 * @example
 *   const text = await planOf(db, 'SELECT 1 FROM t WHERE id = ANY(ARRAY(SELECT jsonb_array_elements_text($1::jsonb)))', ['["a"]'], 'generic');
 *   assert.doesNotMatch(text, /Seq Scan on t\b/);
 */
import type { Knex } from 'knex';

const literal = (v: unknown) => (v === null ? 'NULL' : `'${String(v).replace(/'/g, "''")}'`);

/** `text` with `$n` placeholders; `bindings` in their order. */
export function planOf(
  db: Knex,
  text: string,
  bindings: readonly unknown[],
  mode: 'custom' | 'generic',
): Promise<string> {
  return explained(db, 'EXPLAIN', text, bindings, mode);
}

/**
 * The plan a statement ran with, executed (`EXPLAIN ANALYZE`: actual rows and loops of each
 * step) and then rolled back, so the rows it wrote are as they were for the next one.
 */
export function executedPlanOf(
  db: Knex,
  text: string,
  bindings: readonly unknown[],
  mode: 'custom' | 'generic',
): Promise<string> {
  return explained(db, 'EXPLAIN (ANALYZE, COSTS off)', text, bindings, mode);
}

let runs = 0;

/** `explain` of the prepared statement in a transaction that is always rolled back. */
async function explained(
  db: Knex,
  explain: string,
  text: string,
  bindings: readonly unknown[],
  mode: 'custom' | 'generic',
): Promise<string> {
  let plan = '';
  const undo = new Error('rolled back on purpose');
  // a prepared statement outlives a rollback: a name of its own each time, deallocated
  const name = `plan_check_${++runs}`;
  try {
    await db.transaction(async (trx) => {
      await trx.raw(`SET LOCAL plan_cache_mode = force_${mode}_plan`);
      await trx.raw(`PREPARE ${name} AS ${text}`);
      const r = await trx.raw(`${explain} EXECUTE ${name}(${bindings.map(literal).join(', ')})`);
      await trx.raw(`DEALLOCATE ${name}`);
      plan = (r.rows as Array<Record<string, string>>).map((x) => x['QUERY PLAN']).join('\n');
      throw undo;
    });
  } catch (err) {
    if (err !== undo) throw err;
  }
  return plan;
}
