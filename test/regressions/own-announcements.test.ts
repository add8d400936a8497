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
import pg from 'pg';
import { channelFor, ownChangeMarker, ownLogPrefix } from '../../modules/command/cluster-events.js';
import { COMMAND, type SentCommand } from '../../modules/command/contract/topics.js';
import { scaled, until } from '../helpers/wait.js';
import { DRIVERS, type Hub, startHub } from '../modules/command/harness.js';

type Stats = { completed: number; cluster_listening: number; cluster_events_in: number; cluster_own_dropped: number };

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

  test('its own announcements are dropped unparsed: the marker it looks for is in the text the triggers write', async () => {
    hub.project('own-2');
    const { url, schema } = hub.db as { url: string; schema: string };
    // a second listener on the hub's channel hears what the hub hears, registered as another
    // instance (without one the hub announces nothing: migration 010)
    const listener = new pg.Client({ connectionString: url });
    await listener.connect();
    await listener.query(`INSERT INTO "${schema}".command_listeners VALUES ('a-peer', now() + interval '1 hour')`);
    const heard: string[] = [];
    listener.on('notification', (m) => {
      if (m.payload !== undefined) heard.push(m.payload);
    });
    try {
      await listener.query(`LISTEN "${channelFor(schema)}"`);
      const before = await hub.req<Stats>(COMMAND.stats, {});
      const N = 20;
      const ids: string[] = [];
      for (let i = 0; i < N; i++) {
        ids.push((await hub.req<SentCommand>(COMMAND.send, { project_id: 'own-2', command_type: 'echo' })).command_id);
      }
      for (const id of ids) await hub.waitStatus(id, (d) => d.status === 'completed', 'completed');
      // a command's insert and its result are announced at least: 2 a command, all of them dropped
      let stats = before;
      await until(
        async () => {
          stats = await hub.req<Stats>(COMMAND.stats, {});
          return heard.length >= 2 * N && stats.cluster_own_dropped - before.cluster_own_dropped === heard.length;
        },
        scaled(10_000),
        'every announcement heard by the second listener dropped by the hub',
      );
      assert.equal(stats.cluster_events_in, before.cluster_events_in, JSON.stringify(stats));
      // state and result changes carry the sessions' origin (the triggers' text), log chunk
      // parts the instance's own (its JSON.stringify)
      const origins = { change: new Set<string>(), log: new Set<string>() };
      for (const text of heard) {
        const n = JSON.parse(text) as { k: string; o: string | null };
        assert.equal(typeof n.o, 'string', `announced with an origin: ${text.slice(0, 200)}`);
        const o = n.o as string;
        if (n.k === 'l') {
          origins.log.add(o);
          assert.ok(text.startsWith(ownLogPrefix(o)), `a log part starts with its prefix: ${text.slice(0, 200)}`);
        } else {
          assert.ok(n.k === 's' || n.k === 'r', text.slice(0, 200));
          origins.change.add(o);
          assert.ok(text.includes(ownChangeMarker(o)), `the marker is in the text: ${text.slice(0, 200)}`);
        }
      }
      assert.equal(origins.change.size, 1, 'one instance, one origin of its changes');
      assert.ok(origins.log.size <= 1, 'one instance, one origin of its log parts');
    } finally {
      await listener.query(`DELETE FROM "${schema}".command_listeners WHERE origin = 'a-peer'`);
      await listener.end();
    }
  });
});
