/**
 * The suites' stand-in for autovacuum's ANALYZE (bench/env.ts autoAnalyze): a session's generic
 * plan made while its table held a few rows scans the whole table; the analyzer analyzes a table
 * once it has doubled, and the session then plans an index lookup. Against the machine's PostgreSQL, in a fresh schema (docs/benchmarks.md "Plans made on empty tables").
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

  test('a generic plan made on 5 rows scans; the analyzer analyzes the grown table, and it is planned for its size', async () => {
    // the session's generic plan, as a prepared statement gets after its first executions
    await client.query("SET plan_cache_mode = 'force_generic_plan'");
    await client.query(`PREPARE ${LOOKUP.name}(text[]) AS ${LOOKUP.text.replace('$1::text[]', '$1')}`);
    assert.match(await planOf(), /Seq Scan on item/, 'the plan made on 5 rows');

    const analyses = async () => {
      const r = await client.query<{ n: string }>(
        "SELECT analyze_count AS n FROM pg_stat_user_tables WHERE schemaname = $1 AND relname = 'item'",
        [schema],
      );
      return Number(r.rows[0]?.n ?? 0);
    };
    const before = await analyses(); // the ANALYZE of the 5 rows
    const analyzer = autoAnalyze([db], 100);
    let note = '';
    try {
      await client.query("INSERT INTO item SELECT 'j' || g, repeat('x', 200) FROM generate_series(1, 20000) AS g");
      // Nothing else runs ANALYZE on this schema's table (autovacuum may, on a server that has it;
      // its nap is a minute). The plan can be made again before that for other reasons (a busy
      // server's invalidation queue overflowing resets every session's plans), so what is
      // required is the analysis and the plan after it. The server's statistics reach
      // pg_stat_user_tables within its flush interval (up to 10 s idle).
      await until(async () => (await analyses()) > before, 30_000, 'the grown table to be analyzed');
      assert.match(await planOf(), /Index/, 'planned for 20 005 rows once analyzed');
    } finally {
      note = await analyzer.stop();
    }
    assert.match(note, new RegExp(`ANALYZEs ${schema} [1-9]`), note);
  });

  test('with vacuum: a table with more dead rows than autovacuum allows is vacuumed, and the note says so', async () => {
    await client.query('CREATE TABLE churn (id int PRIMARY KEY, body text NOT NULL)');
    await client.query("INSERT INTO churn SELECT g, repeat('x', 100) FROM generate_series(1, 1000) AS g");
    await client.query('ANALYZE churn');
    const vacuums = async () => {
      const r = await client.query<{ n: string }>(
        "SELECT vacuum_count AS n FROM pg_stat_user_tables WHERE schemaname = $1 AND relname = 'churn'",
        [schema],
      );
      return Number(r.rows[0]?.n ?? 0);
    };
    const before = await vacuums();
    // 600 dead rows: past autovacuum's 50 + a fifth of the table's 1 000
    await client.query('DELETE FROM churn WHERE id <= 600');
    const analyzer = autoAnalyze([db], 100, { vacuum: true });
    let note = '';
    try {
      await until(async () => (await vacuums()) > before, 30_000, 'the table with dead rows to be vacuumed');
    } finally {
      note = await analyzer.stop();
    }
    assert.match(note, new RegExp(`VACUUMs ${schema} [1-9]`), note);
  });

  test('stop() is once: a second call says the same and the analyzer no longer runs', async () => {
    const analyzer = autoAnalyze([db], 50);
    const first = await analyzer.stop();
    assert.equal(await analyzer.stop(), first);
    assert.match(first, /tables analyzed as autovacuum would/);
  });
});
