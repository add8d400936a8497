/**
 * The command path's statements find their rows through the command_id index: a list of one id at
 * any table size, a longer list once the tables are past some 1 200 rows.
 *
 * Each statement takes its ids as one jsonb parameter, and the planner takes a list unpacked from
 * it for 100 rows. Written as `command_id IN (SELECT jsonb_array_elements_text(?))` (or joined to
 * jsonb_to_recordset), that made it hash the list against a whole scan of the tracker and the
 * outbox whenever those held fewer than some 30 000 rows: an agent's ack and result write for ONE
 * command scanned the tracker twice and the outbox once, 0.7 ms of server CPU with 1 000 commands
 * stored, 2.4 ms with 20 000 (core/services/sql-lists.ts). A table of 5 000 rows is in that range.
 * `= ANY` of an array is taken for 10 values, which still loses to a scan below some 1 200 rows; a
 * list of one id is written as an equality (sql-lists.ts `listStatement`), checked on a table of
 * 600 rows.
 *
 * Both plans a prepared statement can run are checked: the first executions are planned with
 * their values (custom), later ones may reuse one plan for any values (generic).
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import type { Knex } from 'knex';
import { newRow, resultArgs } from '../../../bench/statements.js';
import { silentLogger } from '../../../core/log.js';
import { DbPool } from '../../../core/services/db.js';
import type { ListStatement } from '../../../core/services/sql-lists.js';
import { run, type Statement, statement } from '../../../core/services/statement.js';
import { ID_IN } from '../../../modules/command/deps.js';
import { INSERT_PLAIN_SQL, INSERT_SQL } from '../../../modules/command/insert-batch.js';
import { migrations } from '../../../modules/command/migrations.js';
import { OWNERS_SQL } from '../../../modules/command/owners.js';
import { OUTBOX_COUNTS_SQL } from '../../../modules/command/queries.js';
import { CLAIM_SQL, OUTBOX_ERROR_SQL, OUTCOME_SQL } from '../../../modules/command/relay.js';
import { ACK_SQL, RESULT_SQL } from '../../../modules/command/uplink.js';
import { withPgSchema } from '../../helpers/db.js';
import { executedPlanOf, planOf } from '../../helpers/plans.js';

const STORED = 5_000;
const PROJECT = 'plan-p';
const BIG_TABLES = /Seq Scan on (command_tracker|command_outbox|command_result)\b/;

/** A schema of the command tables holding `count` pending commands, analyzed. */
async function storedCommands(count: number): Promise<{ db: Knex; ids: string[]; close(): Promise<void> }> {
  const schema = await withPgSchema();
  const pool = new DbPool({ default: schema.config }, silentLogger());
  await pool.migrate('command', migrations);
  const db = pool.get();
  const ids: string[] = [];
  for (let n = 0; n < count; n += 1_000) {
    const rows = Array.from({ length: Math.min(1_000, count - n) }, () => newRow(PROJECT));
    await run(db, INSERT_SQL, [JSON.stringify(rows)]);
    ids.push(...rows.map((r) => r.command_id));
  }
  await db.raw('ANALYZE command_tracker, command_outbox, command_result');
  return {
    db,
    ids,
    close: async () => {
      await pool.close();
      await schema.drop();
    },
  };
}

const now = () => new Date().toISOString();

/** Bindings of the statements over id lists, for a list of one id or a group. */
const listArgs = {
  ack: (ids: readonly string[]) => [
    JSON.stringify(ids),
    JSON.stringify(ids),
    JSON.stringify(ids.map((id) => ({ command_id: id, project_id: PROJECT, ack_at: now(), sent: null }))),
    now(),
    now(),
  ],
  result: (ids: readonly string[]) => resultArgs(ids, PROJECT),
  owners: (ids: readonly string[]) => [JSON.stringify(ids)],
  outcome: (ids: readonly string[]) => [
    JSON.stringify(ids),
    now(),
    JSON.stringify(ids.map((id) => ({ command_id: id, attempts: 1, ok: true, sent: now() }))),
  ],
  error: (ids: readonly string[]) => [
    JSON.stringify(ids),
    now(),
    JSON.stringify(ids.map((id) => ({ command_id: id, err: 'x' }))),
  ],
};

describe('command statements: index lookups, not table scans (PostgreSQL)', () => {
  let stored: Awaited<ReturnType<typeof storedCommands>>;
  let db: Knex;
  let ids: string[];

  before(async () => {
    stored = await storedCommands(STORED);
    ({ db, ids } = stored);
  });

  after(async () => {
    await stored?.close();
  });

  const one = () => JSON.stringify([ids[17]]);
  // the statements over id lists, in both their texts (sql-lists.ts listStatement)
  const listCases: Array<[string, ListStatement, (ids: readonly string[]) => unknown[]]> = [
    ['ack write', ACK_SQL, listArgs.ack],
    ['ack + result write', RESULT_SQL, listArgs.result],
    ['owner lookup', OWNERS_SQL, listArgs.owners],
    ['publish outcome', OUTCOME_SQL, listArgs.outcome],
    ['publish error', OUTBOX_ERROR_SQL, listArgs.error],
  ];
  const cases: Array<[string, Statement, () => unknown[]]> = [
    ...listCases.flatMap(
      ([name, st, bindings]): Array<[string, Statement, () => unknown[]]> => [
        [`${name} (one id)`, st.one, () => bindings([ids[17]])],
        [`${name} (any number of ids)`, st.many, () => bindings([ids[17]])],
      ],
    ),
    [
      'lock in order (tracker)',
      statement(`SELECT 1 FROM command_tracker WHERE ${ID_IN} ORDER BY command_id FOR UPDATE`),
      () => [one()],
    ],
  ];

  for (const [name, st, bindings] of cases) {
    for (const mode of ['custom', 'generic'] as const) {
      test(`${name}: ${mode} plan`, async () => {
        const text = await planOf(db, st.text, bindings(), mode);
        assert.doesNotMatch(text, BIG_TABLES, text);
        assert.match(text, /Index Cond: \(command_id = /, text);
      });
    }
  }

  // A site's first commands: on 600 rows, analyzed, `= ANY` of a list taken for 10 ids plans a
  // whole scan of the tracker and the outbox; the one-id texts look their id up.
  describe('a list of one id on a young table', () => {
    let young: Awaited<ReturnType<typeof storedCommands>>;

    before(async () => {
      young = await storedCommands(600);
    });

    after(async () => {
      await young?.close();
    });

    for (const [name, st, bindings] of listCases) {
      for (const mode of ['custom', 'generic'] as const) {
        test(`${name} (one id): ${mode} plan`, async () => {
          const text = await planOf(young.db, st.one.text, bindings([young.ids[17]]), mode);
          assert.doesNotMatch(text, BIG_TABLES, text);
          assert.match(text, /Index Cond: \(command_id = /, text);
        });
      }
    }
  });

  // Migration 011: what looks for outbox rows by status looks for unpublished ones, and published
  // rows (nearly all of a table after a while) have no entry in the index it uses.
  test('the outbox index holds the unpublished rows only; the relay claims and the counts use it', async () => {
    await db.raw(`UPDATE command_outbox SET status = 'published' WHERE command_id <> ALL(?::text[])`, [
      ids.slice(0, 20),
    ]);
    await db.raw('VACUUM ANALYZE command_outbox');
    const size = async (index: string) =>
      Number((await db.raw('SELECT pg_relation_size(?::regclass) AS n', [index])).rows[0].n);
    const unpublished = await size('command_outbox_unpublished_idx');
    const pkey = await size('command_outbox_pkey');
    // 20 entries against 5 000: a metapage and a leaf, against the primary key's dozen pages
    assert.ok(unpublished * 4 < pkey, `unpublished index ${unpublished} bytes, primary key ${pkey}`);
    const at = now();
    for (const mode of ['custom', 'generic'] as const) {
      const claim = await planOf(db, CLAIM_SQL.text, [at, at, 1000, 32000, at, 8, 100], mode);
      assert.match(claim, /command_outbox_unpublished_idx/, claim);
      assert.doesNotMatch(claim, BIG_TABLES, claim);
    }
    // the outbox stats (queries.ts): no parameters, one plan
    const explained = await db.raw(`EXPLAIN ${OUTBOX_COUNTS_SQL}`);
    const counts = (explained.rows as Array<Record<string, string>>).map((x) => x['QUERY PLAN']).join('\n');
    assert.match(counts, /command_outbox_unpublished_idx/, counts);
  });
});

/**
 * A group's statement reads each of its steps once. The planner estimates one row for each step
 * of a group's statement, and had joined two steps in a nested loop that read one again for each
 * row of the other (the ack + result write: 40 000 comparisons for 200 results), or read the
 * steps again for each outbox row still unpublished when the statistics were older than those
 * rows (92 ms for 200 acks with 2 600 unpublished). Run here with 200 ids, after 2 000 commands
 * completed and were analyzed and 2 800 more (the 200 among them) came in unpublished; each
 * statement executed and rolled back.
 */
describe('command statements: a group of 200 reads each step once (PostgreSQL)', () => {
  const GROUP = 200;
  let stored: Awaited<ReturnType<typeof storedCommands>>;
  let group: string[];

  before(async () => {
    stored = await storedCommands(2_000);
    const { db, ids } = stored;
    for (let n = 0; n < ids.length; n += 500) await run(db, RESULT_SQL.many, listArgs.result(ids.slice(n, n + 500)));
    await db.raw('ANALYZE command_tracker, command_outbox, command_result');
    // unpublished rows the statistics do not know of: commands in flight, queued, dead
    for (let n = 0; n < 2_600 + GROUP; n += 700) {
      const rows = Array.from({ length: Math.min(700, 2_600 + GROUP - n) }, () => newRow(PROJECT));
      await run(stored.db, INSERT_PLAIN_SQL, [JSON.stringify(rows)]);
      if (n === 0) group = rows.slice(0, GROUP).map((r) => r.command_id);
    }
  });

  after(async () => {
    await stored?.close();
  });

  const keyedRows = () =>
    Array.from({ length: GROUP }, (_, i) => {
      const row = newRow(PROJECT);
      return i % 3 === 0 ? { ...row, idempotency_key: `key-${row.command_id}`, request_hash: 'h' } : row;
    });
  const cases: Array<[string, Statement, () => unknown[]]> = [
    [
      'send INSERT, no keys',
      INSERT_PLAIN_SQL,
      () => [JSON.stringify(Array.from({ length: GROUP }, () => newRow(PROJECT)))],
    ],
    ['send INSERT, a third keyed', INSERT_SQL, () => [JSON.stringify(keyedRows())]],
    ['ack write', ACK_SQL.many, () => listArgs.ack(group)],
    ['ack + result write', RESULT_SQL.many, () => listArgs.result(group)],
    ['publish outcome', OUTCOME_SQL.many, () => listArgs.outcome(group)],
    ['publish error', OUTBOX_ERROR_SQL.many, () => listArgs.error(group)],
  ];

  for (const [name, st, bindings] of cases) {
    for (const mode of ['custom', 'generic'] as const) {
      test(`${name}: ${mode} plan`, async () => {
        const text = await executedPlanOf(stored.db, st.text, bindings(), mode);
        // a step (a CTE) or the group's rows (a function scan) read more than once
        assert.doesNotMatch(text, /(CTE|Function) Scan on .*loops=([2-9]|\d{2,})\)/, text);
        assert.doesNotMatch(text, /Rows Removed by Join Filter/, text);
        assert.match(text, new RegExp(`rows=${GROUP} loops=1`), text);
      });
    }
  }
});
