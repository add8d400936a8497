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
export async function planOf(
  db: Knex,
  text: string,
  bindings: readonly unknown[],
  mode: 'custom' | 'generic',
): Promise<string> {
  return db.transaction(async (trx) => {
    await trx.raw(`SET LOCAL plan_cache_mode = force_${mode}_plan`);
    await trx.raw(`PREPARE plan_check AS ${text}`);
    const r = await trx.raw(`EXPLAIN EXECUTE plan_check(${bindings.map(literal).join(', ')})`);
    await trx.raw('DEALLOCATE plan_check');
    return (r.rows as Array<Record<string, string>>).map((x) => x['QUERY PLAN']).join('\n');
  });
}
