/**
 * Scheduled sends with two real hub processes on one PostgreSQL schema and one private Mosquitto
 * (issue 14 item 2): commands accepted on either instance, all due at one moment, are each
 * started by exactly one instance (the scheduler's claim is FOR UPDATE SKIP LOCKED under
 * status = 'scheduled') and run once by the agent process.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import type { Agent, Json, Provisioned } from '../../e2e/harness.js';
import { scaled, until } from '../../helpers/wait.js';
import { Cluster, type ClusterHub } from './cluster-harness.js';

const STARTED = 'hub_command_module_total{counter="scheduled_started"}';

describe('scheduled sends on two hub instances (PostgreSQL, Mosquitto, agent process)', () => {
  let cluster: Cluster;
  let a: ClusterHub;
  let b: ClusterHub;
  let project: Provisioned;
  let agent: Agent;

  before(async () => {
    cluster = await Cluster.create({ hubs: 2 });
    [a, b] = cluster.hubs;
    await a.start();
    project = await cluster.provision(a, 'sched');
    agent = await cluster.agent(project);
    await b.start();
    for (const hub of cluster.hubs) {
      await until(
        async () => (await hub.api('GET', `/project/${project.project_id}/status`)).json?.state === 'online',
        30_000,
        `${project.project_id} online on ${hub.name}`,
      );
    }
  });

  after(async () => {
    await cluster?.dispose();
  });

  test('each command due at one moment is started by one instance and run once', async () => {
    const N = 40;
    // far enough ahead that all N are accepted before the time on a busy machine
    const at = new Date(Date.now() + scaled(5_000)).toISOString();
    const ids: string[] = [];
    for (let i = 0; i < N; i++) {
      const hub = i % 2 === 0 ? a : b;
      const r = await hub.api('POST', '/command/send', {
        project_id: project.project_id,
        command_type: 'echo',
        payload: { i },
        schedule_at: at,
      });
      assert.equal(r.status, 202, JSON.stringify(r.json));
      assert.equal(r.json.status, 'scheduled', 'accepted before its time');
      ids.push(r.json.command_id);
    }
    await until(
      async () => {
        const r = await a.api('GET', `/commands?project_id=${project.project_id}&status=completed&limit=1`);
        return (r.json as Json).total === N;
      },
      60_000,
      `${N} completed`,
    );
    const started = (await a.metric(STARTED)) + (await b.metric(STARTED));
    assert.equal(started, N, 'started once each, across the two instances');
    for (const id of ids) {
      assert.equal(agent.logs('command accepted', id).length, 1, `${id} reached the agent once`);
      const d = (await b.api('GET', `/command/${id}`)).json as Json;
      assert.ok(Date.parse(d.sent_at) >= Date.parse(at), `${id} sent at ${d.sent_at}, before ${at}`);
    }
  });
});
