import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { COMMAND, type CommandView } from '../../../modules/command/contract/topics.js';
import { until } from '../../helpers/wait.js';
import { DRIVERS, execResult, type Hub, startHub, uplink } from './harness.js';

type Page = { items: CommandView[]; total: number };
const N = 500;

for (const driver of DRIVERS) {
  describe(`grouped writes (${driver.name})`, () => {
    let hub: Hub;
    before(async () => {
      // default retry schedule: nothing goes dead while 500 commands wait for their acks
      hub = await startHub(driver, { relay_interval_ms: 30 });
    });
    after(async () => {
      await hub?.stop();
    });

    const count = async (project_id: string, status: string) =>
      (await hub.req<Page>(COMMAND.list, { project_id, status, limit: 1 })).total;

    test(`${N} acks and ${N} results take far fewer than ${N} statements each`, async () => {
      const pid = 'b-many';
      hub.project(pid, 'online', 'silent');
      const ids: string[] = [];
      for (let i = 0; i < N; i++) ids.push((await hub.send({ project_id: pid, command_type: 'x' })).command_id);
      await until(async () => (await count(pid, 'sent')) === N, 30_000, `${N} sent`);

      const knex = hub.h.host.db.get('default');
      const seen = { acks: 0, results: 0 };
      const onQuery = (q: { sql: string }) => {
        if (q.sql.includes('ack_at timestamptz')) seen.acks++;
        if (q.sql.includes('INSERT INTO command_result')) seen.results++;
      };
      knex.on('query', onQuery);
      try {
        for (const id of ids) {
          const u = uplink(pid, `secret-of-${pid}`, 'command_ack', { command_id: id });
          void hub.h.host.bus.publish(u.topic, u.event);
        }
        // half the results before their ack has even been written: they must complete all the same
        for (const id of ids) {
          const u = uplink(pid, `secret-of-${pid}`, 'exec_result', execResult(id));
          void hub.h.host.bus.publish(u.topic, u.event);
        }
        await until(async () => (await count(pid, 'completed')) === N, 30_000, `${N} completed`);
      } finally {
        knex.off('query', onQuery);
      }
      assert.ok(seen.acks > 0 && seen.acks <= N / 20, `ack statements: ${seen.acks}`);
      assert.ok(seen.results > 0 && seen.results <= N / 20, `result statements: ${seen.results}`);
      const stats = await hub.req<Record<string, number>>(COMMAND.stats, {});
      assert.equal(stats.results, N);
      const d = await hub.get(ids[N - 1]);
      assert.equal(d.status, 'completed');
      assert.ok(d.acked_at);
    });
  });
}
