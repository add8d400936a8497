/**
 * Command changes are announced to the other hub instances only while another instance listens
 * (migration 010): an instance listens under the application_name `listenerNameFor(origin)`, and
 * a write whose transaction finds no other such session among the server's announces nothing.
 * A lone instance then pays for no announcement; a peer's listener turns them on at once and
 * its leaving turns them off. A session without a hub origin (another tool writing the tables)
 * still announces to the hub itself.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import pg from 'pg';
import { channelFor, listenerNameFor } from '../../../modules/command/cluster-events.js';
import { COMMAND, type SentCommand } from '../../../modules/command/contract/topics.js';
import { scaled, until } from '../../helpers/wait.js';
import { DRIVERS, type Hub, startHub } from './harness.js';

type Stats = { completed: number; cluster_listening: number; cluster_events_in: number; cluster_own_dropped: number };

/** A session listening on the hub's channel under `name`, keeping what it hears. */
async function listen(url: string, schema: string, name: string): Promise<{ heard: string[]; client: pg.Client }> {
  const client = new pg.Client({ connectionString: url, application_name: name });
  await client.connect();
  const heard: string[] = [];
  client.on('notification', (m) => {
    if (m.payload !== undefined) heard.push(m.payload);
  });
  await client.query(`LISTEN "${channelFor(schema)}"`);
  return { heard, client };
}

describe('command changes are announced only while another instance listens (pg)', () => {
  let hub: Hub;
  let observer: { heard: string[]; client: pg.Client };
  let db: { url: string; schema: string };
  before(async () => {
    hub = await startHub(DRIVERS.find((d) => d.name === 'pg')!);
    db = hub.db as { url: string; schema: string };
    hub.project('heard-1');
    await until(
      async () => (await hub.req<Stats>(COMMAND.stats, {})).cluster_listening === 1,
      scaled(10_000),
      'the hub listening to the announcements',
    );
    // a session that listens but is no hub instance: it hears whatever is announced, and
    // does not itself turn announcements on
    observer = await listen(db.url, db.schema, 'an observer');
  });
  after(async () => {
    await observer?.client.end();
    await hub?.stop();
  });

  const sendAll = async (n: number): Promise<string[]> => {
    const ids: string[] = [];
    for (let i = 0; i < n; i++) {
      ids.push((await hub.req<SentCommand>(COMMAND.send, { project_id: 'heard-1', command_type: 'echo' })).command_id);
    }
    for (const id of ids) await hub.waitStatus(id, (d) => d.status === 'completed', 'completed');
    return ids;
  };
  /** The notifications about these commands the observer has heard. */
  const about = (ids: string[]) => observer.heard.filter((t) => ids.includes((JSON.parse(t) as { id: string }).id));

  test('alone, the hub announces nothing and hears nothing back', async () => {
    const before = await hub.req<Stats>(COMMAND.stats, {});
    const ids = await sendAll(10);
    // announcements would have been sent at each commit; give them time to arrive
    await new Promise((r) => setTimeout(r, scaled(1_000)));
    assert.deepEqual(about(ids), [], 'nothing announced while no other instance listens');
    const stats = await hub.req<Stats>(COMMAND.stats, {});
    assert.equal(stats.cluster_own_dropped, before.cluster_own_dropped, JSON.stringify(stats));
    assert.equal(stats.completed - before.completed, 10, JSON.stringify(stats));
  });

  test('a peer listening turns announcements on; its leaving turns them off', async () => {
    const peer = await listen(db.url, db.schema, listenerNameFor('a-peer-origin'));
    let ids: string[];
    try {
      ids = await sendAll(10);
      // the insert and the result of each, at least; the hub drops its own
      await until(
        async () => about(ids).length >= 20 && peer.heard.length >= 20,
        scaled(10_000),
        'the changes announced to the peer (and so to every listener)',
      );
      // state and result changes carry the hub's sessions' origin (log chunk parts its own)
      const changes = about(ids)
        .map((t) => JSON.parse(t) as { k: string; o: string })
        .filter((n) => n.k !== 'l');
      assert.equal(new Set(changes.map((n) => n.o)).size, 1, 'announced with the hub’s sessions’ origin');
    } finally {
      await peer.client.end();
    }
    // the server forgets the peer's session when its backend has exited
    const admin = new pg.Client({ connectionString: db.url });
    await admin.connect();
    try {
      await until(
        async () =>
          (
            await admin.query('SELECT count(*)::int AS n FROM pg_stat_activity WHERE application_name = $1', [
              listenerNameFor('a-peer-origin'),
            ])
          ).rows[0].n === 0,
        scaled(10_000),
        'the peer’s session gone',
      );
    } finally {
      await admin.end();
    }
    const later = await sendAll(10);
    await new Promise((r) => setTimeout(r, scaled(1_000)));
    assert.deepEqual(about(later), [], 'nothing announced once the peer left');
  });

  test('a write by another tool (no hub origin) is announced to the lone hub', async () => {
    const [id] = await sendAll(1);
    const before = await hub.req<Stats>(COMMAND.stats, {});
    const tool = new pg.Client({ connectionString: db.url, application_name: 'an operator tool' });
    await tool.connect();
    try {
      await tool.query(`SET search_path TO "${db.schema}"`);
      const r = await tool.query(
        "UPDATE command_tracker SET status = 'failed', error = 'marked by an operator' WHERE command_id = $1",
        [id],
      );
      assert.equal(r.rowCount, 1);
    } finally {
      await tool.end();
    }
    await until(
      async () => (await hub.req<Stats>(COMMAND.stats, {})).cluster_events_in > before.cluster_events_in,
      scaled(10_000),
      'the hub hearing the tool’s change',
    );
    assert.equal(about([id]).length, 1, 'the tool’s change announced once');
  });
});
