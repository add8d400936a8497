/**
 * Regression (issue 11): a hub instance killed with kill -9 kept its broker session. The bridge's
 * shared subscription sat on a persistent session (clean_session false), so the broker went on
 * handing that dead session its share of the uplinks (acks, results) until the instance came
 * back: on the survivors their commands stayed `acked` and ended `timeout`. Now a bridge in a
 * shared group uses a clean session: the broker ends the dead instance's session at once and the
 * survivors get every uplink. And an instance that stops (SIGTERM) unsubscribes first and writes
 * what it took before it disconnects. Re-asking for results is off here, so nothing but the
 * broker's routing and the stop sequence can complete the commands.
 */
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import type { Provisioned } from '../e2e/harness.js';
import { until } from '../helpers/wait.js';
import { Cluster } from '../modules/command/cluster-harness.js';

let cluster: Cluster;
let project: Provisioned;

before(async () => {
  cluster = await Cluster.create({ hubs: 2, command: { reask_after_ms: 0 } });
  const [a, b] = cluster.hubs;
  await a.start();
  project = await cluster.provision(a, 'dead');
  await cluster.agent(project);
  await b.start();
  await until(
    async () => (await b.api('GET', `/project/${project.project_id}/status`)).json?.state === 'online',
    30_000,
    'the project online on B',
  );
});

after(async () => {
  await cluster?.dispose();
});

test("a killed instance's broker session does not keep the uplinks the survivor needs", async () => {
  const [a, b] = cluster.hubs;
  await b.kill9();
  const ids: string[] = [];
  for (let i = 0; i < 10; i++) {
    const r = await a.api('POST', '/command/send', {
      project_id: project.project_id,
      command_type: 'echo',
      payload: { i },
    });
    assert.equal(r.status, 202, JSON.stringify(r.json));
    ids.push(r.json.command_id);
  }
  await allCompleted(a, ids, 'every command completed on the survivor', 'their uplinks went to the dead session');
});

test('an instance stopped with SIGTERM while results come in leaves none of them behind', async () => {
  const [a, b] = cluster.hubs;
  await b.start();
  await until(
    async () => (await b.api('GET', `/project/${project.project_id}/status`)).json?.state === 'online',
    30_000,
    'the project online on B again',
  );
  const ids: string[] = [];
  for (let i = 0; i < 10; i++) {
    const r = await a.api('POST', '/command/send', {
      project_id: project.project_id,
      command_type: 'host_exec',
      payload: { command: '/bin/sleep', args: [String(0.2 * (i + 1))] },
    });
    assert.equal(r.status, 202, JSON.stringify(r.json));
    ids.push(r.json.command_id);
  }
  // results arrive over two seconds while B stops: it unsubscribes, writes what it took, then goes
  await new Promise((r) => setTimeout(r, 300));
  const exit = await b.stop();
  assert.equal(exit.code, 0);
  await allCompleted(a, ids, 'every command completed', "after B's stop");
});

/** Waits until every command in `ids` is completed with its result, as `hub` answers; names the stuck ones' count. */
async function allCompleted(hub: (typeof cluster.hubs)[number], ids: string[], what: string, why: string) {
  const left = new Set(ids);
  await until(
    async () => {
      for (const id of [...left]) {
        const d = (await hub.api('GET', `/command/${id}`)).json;
        if (d?.status === 'completed' && d.result) left.delete(id);
      }
      return left.size === 0;
    },
    30_000,
    what,
  ).catch((err) => {
    throw new Error(`${left.size} of ${ids.length} commands stuck (${why}): ${err}`);
  });
}
