/**
 * STATUS.credentials under a burst (every send asks it when its project is not cached): the
 * requests for projects the store has not cached yet share the store's batched read instead of
 * holding the status mailbox one database read at a time. Before, a hub's first seconds under
 * load (256 sends to 64 projects) made 64 reads in a row and the last sends waited seconds for
 * their 202 (bench `async`, accept latency).
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { type CreatedProject, type ProjectCredentials, STATUS } from '../../../modules/status/contract/topics.js';
import { DRIVERS, type Harness, startStatus } from './harness.js';

const PROJECTS = 30;

for (const driver of DRIVERS) {
  describe(`status credentials burst on ${driver}`, () => {
    let first: Harness;
    let h: Harness;
    const made: CreatedProject[] = [];
    before(async () => {
      first = await startStatus(driver);
      for (let i = 0; i < PROJECTS; i++) made.push(await first.create(`burst-${i}`));
      await first.stopHost();
      h = await first.restartHost(); // a cold project cache, as after a start
    });
    after(async () => {
      await h?.close();
      await first?.close();
    });

    test('a burst of requests for uncached projects shares the batched read and is answered right', async () => {
      const reads: string[] = [];
      const db = h.host.db.get();
      const count = (q: { sql: string }) => {
        if (/from "project"/i.test(q.sql)) reads.push(q.sql);
      };
      db.on('query', count);
      try {
        const asked = [...made, ...made.slice(0, 5)]; // some twice
        const answers = await Promise.all(
          asked.map((p) => h.request<ProjectCredentials>(STATUS.credentials, { project_id: p.project_id })),
        );
        answers.forEach((a, i) => {
          assert.equal(a.project_id, asked[i].project_id);
          assert.deepEqual(a.secrets, [asked[i].secret]);
          assert.equal(a.state, 'offline');
        });
        // held one at a time, this was one read per project (30)
        assert.ok(reads.length <= 2, `${reads.length} project reads for ${asked.length} requests`);
        await assert.rejects(h.request(STATUS.credentials, { project_id: 'burst-unknown' }), {
          code: 'STATUS_ERR_NOT_FOUND',
        });
      } finally {
        db.off('query', count);
      }
    });
  });
}
