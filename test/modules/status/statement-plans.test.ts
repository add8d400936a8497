/**
 * A presence flush with transitions locks its projects' rows through the primary key, not a scan
 * of every project's row (core/services/sql-lists.ts): the ids, unpacked from one jsonb parameter,
 * are taken for 100 rows, and joined to them alone a project_status of a few thousand rows was
 * scanned whole for each such flush. 5 000 projects is in that range.
 */
import assert from 'node:assert/strict';
import { before, describe, test } from 'node:test';
import { statement } from '../../../core/services/statement.js';
import { LOCK_PRESENCE_SQL } from '../../../modules/status/persist.js';
import { planOf } from '../../helpers/plans.js';
import { presenceDbForSuite } from './pg-presence-db.js';

const PROJECTS = 5_000;

describe('presence: a flush locks its rows by primary key (PostgreSQL)', () => {
  const database = presenceDbForSuite();

  before(async () => {
    const db = database();
    await db.raw(
      `INSERT INTO project_status (project_id, state, updated_at)
       SELECT 'plan-' || lpad(g::text, 5, '0'), 'online', now() FROM generate_series(1, ?::int) AS g`,
      [PROJECTS],
    );
    await db.raw('ANALYZE project_status');
  });

  for (const mode of ['custom', 'generic'] as const) {
    test(`${mode} plan: no scan of project_status`, async () => {
      const ids = JSON.stringify(['plan-00017', 'plan-00018']);
      const text = await planOf(database(), statement(LOCK_PRESENCE_SQL).text, [ids], mode);
      assert.doesNotMatch(text, /Seq Scan on project_status\b/, text);
      assert.match(text, /Index Cond: \(project_id = /, text);
    });
  }

  test('the rows are locked in the order given', async () => {
    const db = database();
    const ids = JSON.stringify(['plan-00003', 'plan-00001', 'plan-00002', 'plan-99999']);
    await db.transaction(async (trx) => {
      const r = await trx.raw(LOCK_PRESENCE_SQL.replace('SELECT 1 FROM', 'SELECT s.project_id FROM'), [ids]);
      assert.deepEqual(
        r.rows.map((x: { project_id: string }) => x.project_id),
        ['plan-00003', 'plan-00001', 'plan-00002'],
      );
    });
  });
});
