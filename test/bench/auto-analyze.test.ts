/**
 * The suites' stand-in for autovacuum's ANALYZE (bench/env.ts autoAnalyze): a session's generic
 * plan made while its table held a few rows scans the whole table, and stays until the table is
 * analyzed; the analyzer analyzes a table once it has doubled, and the session then plans an index
 * lookup. Against the machine's PostgreSQL, in a fresh schema (README "Plans made on empty tables").
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import pg from 'pg';
import { AUTO_ANALYZE, autoAnalyze, type BenchDb, PG_URL, pgDatabase } from '../../bench/env.js';
import { until } from '../helpers/wait.js';

describe('bench autoAnalyze: plans made on empty tables', { skip: AUTO_ANALYZE ? false : 'BENCH_ANALYZE=0' }, () => {
  let db: BenchDb;
  let client: pg.Client;
  let schema: string;

  before(async () => {
    db = await pgDatabase();
    schema = db.config.schema!;
    client = new pg.Client({ connectionString: PG_URL });
    await client.connect();
    await client.query(`SET search_path TO "${schema}"`);
    await client.query('CREATE TABLE item (id text PRIMARY KEY, body text NOT NULL)');
    await client.query("INSERT INTO item SELECT 'i' || g, repeat('x', 200) FROM generate_series(1, 5) AS g");
    // known to be 5 rows (a never-analyzed table is taken for 10 pages, which an index lookup wins)
    await client.query('ANALYZE item');
  });

  after(async () => {
    await client?.end();
    await db?.drop();
  });

  const LOOKUP = { name: 'item_by_ids', text: 'SELECT id FROM item WHERE id = ANY($1::text[])' };
  const planOf = async () => {
    const r = await client.query<{ 'QUERY PLAN': string }>("EXPLAIN (COSTS OFF) EXECUTE item_by_ids('{i1,i2}')");
    return r.rows.map((x) => x['QUERY PLAN']).join('\n');
  };

  test('a generic plan made on 5 rows scans; once the table has grown and been analyzed, it looks ids up', async () => {
    // the session's generic plan, as a prepared statement gets after its first executions
    await client.query("SET plan_cache_mode = 'force_generic_plan'");
    await client.query(`PREPARE ${LOOKUP.name}(text[]) AS ${LOOKUP.text.replace('$1::text[]', '$1')}`);
    assert.match(await planOf(), /Seq Scan on item/, 'the plan made on 5 rows');

    const analyzer = autoAnalyze([db], 100);
    let note = '';
    try {
      await client.query("INSERT INTO item SELECT 'j' || g, repeat('x', 200) FROM generate_series(1, 20000) AS g");
      assert.match(await planOf(), /Seq Scan on item/, 'kept while the table grew, before any ANALYZE');
      // the server's statistics reach pg_stat_user_tables within its flush interval (up to 10 s idle)
      await until(async () => /Index/.test(await planOf()), 30_000, 'the analyzed table to be planned again');
    } finally {
      note = await analyzer.stop();
    }
    // on a server without autovacuum (this machine kind's) nothing else can have analyzed it
    const av = (await client.query<{ autovacuum: string }>('SHOW autovacuum')).rows[0].autovacuum;
    if (av === 'off') assert.match(note, new RegExp(`ANALYZEs ${schema} [1-9]`), note);
    else assert.match(note, new RegExp(`ANALYZEs ${schema} \\d`), note);
  });

  test('stop() is once: a second call says the same and the analyzer no longer runs', async () => {
    const analyzer = autoAnalyze([db], 50);
    const first = await analyzer.stop();
    assert.equal(await analyzer.stop(), first);
    assert.match(first, /tables analyzed as autovacuum would/);
  });
});
