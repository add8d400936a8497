/**
 * Regression: a hub instance on PostgreSQL heard its own command changes back from the
 * database's announcements (LISTEN/NOTIFY, cluster-events.ts) and left them to the version gate.
 * When a notification was read before the commit's reply, the instance showed its own change as
 * another instance's (`remote`) and refused its local event: its counters and lifecycle log line
 * missed the change (a two-instance test beside another suite counted 205 of 300 local starts).
 * Announcements now carry the writing session's gmq.origin (migration 008) and an instance
 * drops its own on arrival: a lone instance hears nothing back, deterministically.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { COMMAND, type SentCommand } from '../../modules/command/contract/topics.js';
import { scaled, until } from '../helpers/wait.js';
import { DRIVERS, type Hub, startHub } from '../modules/command/harness.js';

type Stats = { completed: number; cluster_listening: number; cluster_events_in: number };

describe('regression: an instance never hears its own command changes back as another instance’s (pg)', () => {
  let hub: Hub;
  before(async () => {
    hub = await startHub(DRIVERS.find((d) => d.name === 'pg')!);
  });
  after(async () => {
    await hub?.stop();
  });

  test('a lone instance: every change published once, locally; nothing comes back', async () => {
    hub.project('own-1');
    await until(
      async () => (await hub.req<Stats>(COMMAND.stats, {})).cluster_listening === 1,
      scaled(10_000),
      'listening to the announcements',
    );
    const N = 40;
    const ids: string[] = [];
    for (let i = 0; i < N; i++) {
      ids.push((await hub.req<SentCommand>(COMMAND.send, { project_id: 'own-1', command_type: 'echo' })).command_id);
    }
    for (const id of ids) await hub.waitStatus(id, (d) => d.status === 'completed', 'completed');
    // the announcements of those changes have had time to come back (they are sent at commit)
    await new Promise((r) => setTimeout(r, scaled(1_000)));
    const stats = await hub.req<Stats>(COMMAND.stats, {});
    assert.equal(stats.cluster_events_in, 0, JSON.stringify(stats));
    // (`sent` is not counted here: a command whose result came before its PUBACK reply is never
    // `sent`, so that counter is below N on a good run too)
    assert.equal(stats.completed, N, JSON.stringify(stats));
    const remote = hub.w.events.filter((e) => e.kind === 'state' && e.remote && ids.includes(e.command.command_id));
    assert.equal(remote.length, 0, 'no change of its own shown as another instance’s');
    for (const id of ids) {
      const completed = hub.w.events.filter(
        (e) => e.kind === 'state' && e.command.command_id === id && e.command.status === 'completed',
      );
      assert.equal(completed.length, 1, `${id}: completed shown once`);
    }
  });
});
