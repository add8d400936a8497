/**
 * Command changes are announced to the other hub instances only while another instance listens
 * (migration 010): each listening instance keeps a row in the schema's command_listeners, and a
 * write whose transaction finds no live row but its own announces nothing. A lone instance then
 * pays for no announcement; a peer's row turns them on at once, its removal or lapse turns them
 * off. A session without a hub origin (another tool writing the tables) still announces to the
 * hub itself, and a hub that stops withdraws its row.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import pg from 'pg';
import { silentLogger } from '../../../core/log.js';
import { DbPool } from '../../../core/services/db.js';
import { channelFor } from '../../../modules/command/cluster-events.js';
import { COMMAND, type SentCommand } from '../../../modules/command/contract/topics.js';
import { migrations } from '../../../modules/command/migrations.js';
import { scaled, until } from '../../helpers/wait.js';
import { DRIVERS, type Hub, startHub } from './harness.js';

type Stats = { completed: number; cluster_listening: number; cluster_events_in: number; cluster_own_dropped: number };

describe('command changes are announced only while another instance listens (pg)', () => {
  let hub: Hub;
  let stopped = false;
  let admin: pg.Client;
  let db: { url: string; schema: string };
  let table: string;
  /** What a session listening on the hub's channel (no hub instance itself) has heard. */
  const heard: string[] = [];
  before(async () => {
    hub = await startHub(DRIVERS.find((d) => d.name === 'pg')!);
    db = hub.db as { url: string; schema: string };
    table = `"${db.schema}".command_listeners`;
    hub.project('heard-1');
    await until(
      async () => (await hub.req<Stats>(COMMAND.stats, {})).cluster_listening === 1,
      scaled(10_000),
      'the hub listening to the announcements',
    );
    admin = new pg.Client({ connectionString: db.url });
    await admin.connect();
    admin.on('notification', (m) => {
      if (m.payload !== undefined) heard.push(m.payload);
    });
    await admin.query(`LISTEN "${channelFor(db.schema)}"`);
  });
  after(async () => {
    if (!stopped) await hub?.stop();
    else await admin.query(`DROP SCHEMA IF EXISTS "${db.schema}" CASCADE`); // what hub.stop() drops
    await admin?.end();
  });

  const sendAll = async (n: number): Promise<string[]> => {
    const ids: string[] = [];
    for (let i = 0; i < n; i++) {
      ids.push((await hub.req<SentCommand>(COMMAND.send, { project_id: 'heard-1', command_type: 'echo' })).command_id);
    }
    for (const id of ids) await hub.waitStatus(id, (d) => d.status === 'completed', 'completed');
    return ids;
  };
  /** The notifications heard about these commands. */
  const about = (ids: string[]) => heard.filter((t) => ids.includes((JSON.parse(t) as { id: string }).id));
  /** Announcements would have been sent at each commit: time for them to arrive. */
  const settle = () => new Promise((r) => setTimeout(r, scaled(1_000)));

  test('alone, the hub has one live row and announces nothing, so hears nothing back', async () => {
    const rows = await admin.query(`SELECT origin FROM ${table} WHERE alive_until > now()`);
    assert.equal(rows.rowCount, 1, 'the hub registered as a listener');
    const before = await hub.req<Stats>(COMMAND.stats, {});
    const ids = await sendAll(10);
    await settle();
    assert.deepEqual(about(ids), [], 'nothing announced while no other instance listens');
    const stats = await hub.req<Stats>(COMMAND.stats, {});
    assert.equal(stats.cluster_own_dropped, before.cluster_own_dropped, JSON.stringify(stats));
    assert.equal(stats.completed - before.completed, 10, JSON.stringify(stats));
  });

  test('another instance’s row turns announcements on; its removal turns them off', async () => {
    await admin.query(`INSERT INTO ${table} VALUES ('a-peer', now() + interval '1 hour')`);
    const before = await hub.req<Stats>(COMMAND.stats, {});
    let ids: string[];
    try {
      ids = await sendAll(10);
      // the insert and the result of each, at least; the hub drops its own
      await until(
        async () =>
          about(ids).length >= 20 &&
          (await hub.req<Stats>(COMMAND.stats, {})).cluster_own_dropped >= before.cluster_own_dropped + 20,
        scaled(10_000),
        'the changes announced, and the hub dropping its own',
      );
      // state and result changes carry the hub's sessions' origin (log chunk parts its own)
      const changes = about(ids)
        .map((t) => JSON.parse(t) as { k: string; o: string })
        .filter((n) => n.k !== 'l');
      assert.equal(new Set(changes.map((n) => n.o)).size, 1, 'announced with the hub’s sessions’ origin');
    } finally {
      await admin.query(`DELETE FROM ${table} WHERE origin = 'a-peer'`);
    }
    const later = await sendAll(10);
    await settle();
    assert.deepEqual(about(later), [], 'nothing announced once the peer left');
  });

  test('a lapsed row (an instance killed) does not count', async () => {
    await admin.query(`INSERT INTO ${table} VALUES ('a-dead-peer', now() - interval '1 second')`);
    try {
      const ids = await sendAll(5);
      await settle();
      assert.deepEqual(about(ids), []);
    } finally {
      await admin.query(`DELETE FROM ${table} WHERE origin = 'a-dead-peer'`);
    }
  });

  test('a write by another tool (no hub origin) is announced to the lone hub', async () => {
    const [id] = await sendAll(1);
    const before = await hub.req<Stats>(COMMAND.stats, {});
    const tool = new pg.Client({ connectionString: db.url });
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

  test('a hub that stops withdraws its row at once', async () => {
    stopped = true;
    await hub.h.stop(); // the host only: its schema stays to be read
    const rows = await admin.query(`SELECT origin FROM ${table}`);
    assert.equal(rows.rowCount, 0, JSON.stringify(rows.rows));
  });
});

describe('migration 010 on a schema an earlier version announced on (pg)', () => {
  test('the attached triggers get the condition, and announcements stay on 15 minutes for the earlier instances', async () => {
    const { config, cleanup } = await DRIVERS.find((d) => d.name === 'pg')!.db();
    const pool = new DbPool({ default: config }, silentLogger());
    try {
      const upTo009 = migrations.findIndex((m) => m.id === '010_command_announce_when_heard');
      assert.ok(upTo009 > 0);
      await pool.migrate('command', migrations.slice(0, upTo009));
      // as an earlier version's ANNOUNCE_TRIGGERS attached them: unconditional
      await pool.get().raw(`CREATE TRIGGER command_tracker_announce AFTER INSERT OR UPDATE ON command_tracker
        FOR EACH ROW EXECUTE FUNCTION command_tracker_announce();
      CREATE TRIGGER command_result_announce AFTER INSERT ON command_result
        FOR EACH ROW EXECUTE FUNCTION command_result_announce()`);
      await pool.migrate('command', migrations);
      const triggers = (
        await pool.get().raw(
          `SELECT tgname, pg_get_triggerdef(oid) AS def FROM pg_trigger
            WHERE tgname IN ('command_tracker_announce', 'command_result_announce')
              AND tgrelid IN ('command_tracker'::regclass, 'command_result'::regclass) -- this schema's: other test files' share the database
            ORDER BY tgname`,
        )
      ).rows as Array<{ tgname: string; def: string }>;
      assert.equal(triggers.length, 2);
      for (const t of triggers) assert.match(t.def, /WHEN \(.*command_events_heard\(\)\)/, t.def);
      const legacy = (
        await pool
          .get()
          .raw(
            "SELECT alive_until > now() + interval '14 minutes' AS live FROM command_listeners WHERE origin = '(instances before 010)'",
          )
      ).rows as Array<{ live: boolean }>;
      assert.deepEqual(legacy, [{ live: true }]);
      // a write of this pool's sessions is heard by that row: announced
      const heard = (await pool.get().raw('SELECT command_events_heard() AS on')).rows as Array<{ on: boolean }>;
      assert.deepEqual(heard, [{ on: true }]);
    } finally {
      await pool.close();
      await cleanup();
    }
  });
});
