/**
 * A batch of command events reaches a job's targets through command_id's index, not a scan of
 * every target of every job (core/services/sql-lists.ts): the list of command ids, unpacked from
 * one jsonb parameter, is taken for 100 rows, and joined to it alone a job_target of a few
 * thousand rows was scanned whole for each batch. 5 000 targets is in that range.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import type { Knex } from 'knex';
import { silentLogger } from '../../../core/log.js';
import { DbPool } from '../../../core/services/db.js';
import { statement } from '../../../core/services/statement.js';
import { migrations } from '../../../modules/jobs/migrations.js';
import { APPLY_STATES_SQL, applyCommandStates } from '../../../modules/jobs/store.js';
import { withPgSchema } from '../../helpers/db.js';
import { planOf } from '../../helpers/plans.js';

const TARGETS = 5_000;

describe('jobs: command states reach their targets by index (PostgreSQL)', () => {
  let pool: DbPool;
  let drop: () => Promise<void>;
  let db: Knex;

  before(async () => {
    const schema = await withPgSchema();
    drop = schema.drop;
    pool = new DbPool({ default: schema.config }, silentLogger());
    await pool.migrate('jobs', migrations);
    db = pool.get();
    await db.raw(
      `INSERT INTO job (job_id, status, targets, command_type, payload, max_in_flight, created_at, updated_at)
       VALUES ('job-1', 'running', '[]', 'exec', '{}', 64, now(), now())`,
    );
    await db.raw(
      `INSERT INTO job_target (job_id, seq, project_id, command_id, state, updated_at)
       SELECT 'job-1', g, 'p-' || g, 'job-1-cmd-' || g, 'in_flight', now() FROM generate_series(1, ?::int) AS g`,
      [TARGETS],
    );
    await db.raw('ANALYZE job_target');
  });

  after(async () => {
    await pool?.close();
    await drop?.();
  });

  for (const mode of ['custom', 'generic'] as const) {
    test(`${mode} plan: no scan of job_target`, async () => {
      const batch = JSON.stringify([{ command_id: 'job-1-cmd-17', state: 'completed' }]);
      const at = new Date().toISOString();
      const text = await planOf(db, statement(APPLY_STATES_SQL).text, [batch, at, at], mode);
      assert.doesNotMatch(text, /Seq Scan on job_target\b/, text);
      assert.match(text, /Index Cond: \(command_id = /, text);
    });
  }

  test('the statement moves the targets it names and reports their job', async () => {
    const changed = await applyCommandStates(
      db,
      [
        { command_id: 'job-1-cmd-3', state: 'completed' },
        { command_id: 'job-1-cmd-4', state: 'failed' },
        { command_id: 'no-such-command', state: 'completed' },
      ],
      Date.now(),
    );
    assert.deepEqual(changed, ['job-1']);
    const rows = await db('job_target').whereIn('seq', [3, 4, 5]).orderBy('seq').select('seq', 'state');
    assert.deepEqual(
      rows.map((r) => [r.seq, r.state]),
      [
        [3, 'completed'],
        [4, 'failed'],
        [5, 'in_flight'],
      ],
    );
  });
});
