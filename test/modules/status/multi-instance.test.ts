/**
 * Several hub instances on one PostgreSQL share one presence (issue 11): the row is the truth,
 * every transition is decided there and announced to every instance, which answers from a read
 * model kept current by the announcements.
 *
 * First over the bus (each host with its own stand-in bridge), where the test chooses which
 * instance gets which uplink: a handshake split across instances, heartbeats split across them
 * (on main the instance that did not see the registration asked the agent to register again), the
 * silence timeout decided once, a listener that loses its connection. Then three hosts with real
 * bridges on a private Mosquitto with a shared subscription and an MQTT client per project, where
 * the broker splits every project's uplinks round robin.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { after, before, describe, test } from 'node:test';
import pg from 'pg';
import type { ModuleProvider } from '../../../core/module.js';
import { BRIDGE, type BridgeStats } from '../../../modules/mqtt-bridge/contract/topics.js';
import { provider as bridgeProvider } from '../../../modules/mqtt-bridge/index.js';
import {
  buildCommand,
  buildData,
  type Downlink,
  messageDownTopic,
  parseDownlink,
  TOPIC_COMMAND_UP,
  TOPIC_MESSAGE_UP,
} from '../../../modules/shared/protocol.js';
import { verifySignature } from '../../../modules/shared/signing.js';
import {
  type ProjectCredentials,
  type ProjectView,
  STATUS,
  type StatusChangedEvent,
} from '../../../modules/status/contract/topics.js';
import { presenceChannel } from '../../../modules/status/sync.js';
import { TEST_DATABASE_URL } from '../../helpers/db.js';
import { mosquittoAvailable, type PrivateMosquitto, startPrivateMosquitto } from '../../helpers/mosquitto.js';
import { connectClient } from '../../helpers/mqtt.js';
import { until } from '../../helpers/wait.js';
import { FakeClock, type Harness, isDown, newDb, RealClock, Recorder, startStatus, type TestDb } from './harness.js';

const TIMEOUT_MS = 30_000;

const stateOn = async (h: Harness, pid: string) =>
  (await h.request<ProjectView>(STATUS.get, { project_id: pid })).state;
const eventsOf = (h: Harness, pid: string, from = 0): StatusChangedEvent[] =>
  h.events.items.slice(from).filter((e) => e.project_id === pid);

async function historyOf(h: Harness, pid: string): Promise<Array<{ to_state: string; reason: string }>> {
  return h.host.db.get()('project_status_history').where({ project_id: pid }).orderBy('id');
}

describe('presence shared by two instances (PostgreSQL, uplinks placed by the test)', () => {
  let db: TestDb;
  let clock: FakeClock;
  let a: Harness;
  let b: Harness;
  before(async () => {
    db = await newDb('pg');
    clock = new FakeClock();
    const settings = { heartbeat_timeout_ms: TIMEOUT_MS };
    a = await startStatus('pg', { db, clock, settings });
    b = await startStatus('pg', { db, clock, settings });
  });
  after(async () => {
    await a?.close();
    await b?.close();
    await db?.cleanup();
  });

  test('register on one instance, register_complete on the other: online on both, one register_ack, one history', async () => {
    const p = await a.create('mi-hs');
    const dlA = a.downlinks.items.length;
    const dlB = b.downlinks.items.length;
    a.register('mi-hs', p.secret);
    await a.downlinks.wait(isDown('register_ack', 'mi-hs'), 'register_ack from A', dlA);
    b.data('mi-hs', 'register_complete', {}, { secret: p.secret });
    await b.events.wait((e) => e.project_id === 'mi-hs' && e.state === 'online', 'online on B');
    await a.events.wait((e) => e.project_id === 'mi-hs' && e.state === 'online', 'online on A');

    for (const h of [a, b]) {
      assert.equal(await stateOn(h, 'mi-hs'), 'online');
      const creds = await h.request<ProjectCredentials>(STATUS.credentials, { project_id: 'mi-hs' });
      assert.equal(creds.state, 'online', 'a send on either instance finds the project online');
      // every change once on every instance, in order
      assert.deepEqual(
        eventsOf(h, 'mi-hs').map((e) => [e.previous, e.state]),
        [
          ['offline', 'connecting'],
          ['connecting', 'verifying'],
          ['verifying', 'online'],
        ],
      );
    }
    const acks = [...a.downlinks.items.slice(dlA), ...b.downlinks.items.slice(dlB)].filter(
      isDown('register_ack', 'mi-hs'),
    );
    assert.equal(acks.length, 1);
    assert.equal(
      [...a.downlinks.items.slice(dlA), ...b.downlinks.items.slice(dlB)].filter(isDown('reregister', 'mi-hs')).length,
      0,
    );
    assert.deepEqual(
      (await historyOf(a, 'mi-hs')).map((r) => r.to_state),
      ['connecting', 'verifying', 'online'],
    );
    const view = await b.request<ProjectView>(STATUS.get, { project_id: 'mi-hs' });
    await until(
      async () => (await b.request<ProjectView>(STATUS.get, { project_id: 'mi-hs' })).instance_id === 'wd-host-mi-hs',
      5_000,
      `B reads the registration A wrote (had ${view.instance_id})`,
    );
  });

  test('regression: heartbeats on the instance that did not see the registration never ask for a new one', async () => {
    const p = await a.create('mi-hb');
    await a.bringOnline('mi-hb', p.secret);
    const dlA = a.downlinks.items.length;
    const dlB = b.downlinks.items.length;
    for (let i = 0; i < 10; i++) {
      clock.advance(1_000);
      (i % 2 === 0 ? b : a).data('mi-hb', 'heartbeat', { metrics: { i } }, { secret: p.secret });
      await (i % 2 === 0 ? b : a).stats(); // handled (the mailbox is in order)
    }
    const rereg = [...a.downlinks.items.slice(dlA), ...b.downlinks.items.slice(dlB)].filter(
      isDown('reregister', 'mi-hb'),
    );
    assert.equal(rereg.length, 0, 'no instance asked the agent to register again');
    assert.equal(await stateOn(a, 'mi-hb'), 'online');
    assert.equal(await stateOn(b, 'mi-hb'), 'online');
    await a.flushed();
    await b.flushed();
    const row = await a.host.db.get()('project_status').where({ project_id: 'mi-hb' }).first();
    assert.equal(new Date(row.last_heartbeat_at).getTime(), clock.now(), 'the latest heartbeat of either instance');
  });

  test('heartbeats written by one instance keep the project online on the other; silence goes offline once', async () => {
    const p = await a.create('mi-to');
    await a.bringOnline('mi-to', p.secret);
    // B hears of it a moment later (the announcement): from then on, nothing is to change
    await b.events.wait((e) => e.project_id === 'mi-to' && e.state === 'online', 'online on B');
    const evA = a.events.items.length;
    const evB = b.events.items.length;
    // only B hears the agent: A's read model goes stale, the row does not
    for (let i = 0; i < 3; i++) {
      clock.advance(TIMEOUT_MS - 5_000);
      b.data('mi-to', 'heartbeat', {}, { secret: p.secret });
      await b.stats();
      await b.flushed();
      await a.sweepPassed();
      await b.sweepPassed();
      assert.equal(await stateOn(a, 'mi-to'), 'online', `round ${i}: A keeps it online`);
    }
    assert.deepEqual(eventsOf(a, 'mi-to', evA), [], 'no change on A');
    assert.deepEqual(eventsOf(b, 'mi-to', evB), [], 'no change on B');

    clock.advance(TIMEOUT_MS + 1);
    await a.events.wait((e) => e.project_id === 'mi-to' && e.state === 'offline', 'offline on A', evA);
    await b.events.wait((e) => e.project_id === 'mi-to' && e.state === 'offline', 'offline on B', evB);
    await a.sweepPassed();
    await b.sweepPassed();
    for (const [h, from] of [
      [a, evA],
      [b, evB],
    ] as const) {
      const evs = eventsOf(h, 'mi-to', from);
      assert.deepEqual(
        evs.map((e) => [e.previous, e.state, e.reason]),
        [['online', 'offline', 'heartbeat timeout']],
      );
    }
    const offline = (await historyOf(a, 'mi-to')).filter((r) => r.to_state === 'offline');
    assert.equal(offline.length, 1, 'decided once');
    assert.equal(((await a.stats()).timed_out as number) + ((await b.stats()).timed_out as number) >= 1, true);
  });

  test('regression: an instance listens once it has started: a change committed at once is heard step by step', async () => {
    // CI once saw B publish a registration as one change, offline → verifying: its start had
    // resolved before its LISTEN took effect, so A's announcement was gone and B's first resync
    // learnt the row instead. LISTEN now comes before the load, and start waits for it.
    const c = await startStatus('pg', { db, clock, settings: { heartbeat_timeout_ms: TIMEOUT_MS } });
    try {
      const stats = (await c.stats()).sync;
      assert.equal(stats.listener?.connected, true, 'listening when start resolved');
      const p = await a.create('mi-early');
      a.register('mi-early', p.secret);
      await c.events.wait((e) => e.project_id === 'mi-early' && e.state === 'verifying', 'verifying on C');
      assert.deepEqual(
        eventsOf(c, 'mi-early').map((e) => [e.previous, e.state]),
        [
          ['offline', 'connecting'],
          ['connecting', 'verifying'],
        ],
      );
      assert.equal((await c.stats()).sync.resyncs, 0, 'nothing to catch up on: the rows were read after LISTEN');
    } finally {
      await c.close();
    }
  });

  test('a listener that loses its connection reconnects and learns what it missed', async () => {
    const p = await a.create('mi-gap');
    await a.bringOnline('mi-gap', p.secret);
    await b.events.wait((e) => e.project_id === 'mi-gap' && e.state === 'online', 'online on B');
    const before = (await b.stats()).sync.listener?.connects ?? 0;
    const evB = b.events.items.length;
    // end B's listener connection from the server side (pg_stat_activity shows its LISTEN)
    const schema = (db.config as { schema?: string }).schema;
    const admin = new pg.Client({ connectionString: TEST_DATABASE_URL });
    await admin.connect();
    try {
      const channel = presenceChannel(schema);
      const r = await admin.query(
        `SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE query = $1 AND pid <> pg_backend_pid()`,
        [`LISTEN "${channel}"`],
      );
      assert.equal(r.rowCount, 2, 'the two listeners of this schema');
    } finally {
      await admin.end();
    }
    await a.request(STATUS.disable, { project_id: 'mi-gap' });
    await until(async () => ((await b.stats()).sync.listener?.connects ?? 0) > before, 5_000, 'B listens again');
    const off = await b.events.wait((e) => e.project_id === 'mi-gap' && e.state === 'offline', 'offline on B', evB);
    assert.equal(off.previous, 'online');
    assert.equal(eventsOf(b, 'mi-gap', evB).length, 1, 'once');
    assert.equal(await stateOn(b, 'mi-gap'), 'offline');
  });
});

// ─── three hubs, one Mosquitto, a shared subscription ────────────────────────────────────────

const HUBS = 3;
const PROJECTS = 6;
const HEARTBEAT_MS = 200;
const REAL_TIMEOUT_MS = 3_000;

interface Agent {
  pid: string;
  secret: string;
  client: Awaited<ReturnType<typeof connectClient>>;
  downs: Recorder<Downlink>;
  beat: NodeJS.Timeout | null;
}

describe('three hubs on one Mosquitto with a shared subscription', {
  skip: mosquittoAvailable() ? false : 'mosquitto is not installed',
}, () => {
  let broker: PrivateMosquitto;
  let db: TestDb;
  const hubs: Harness[] = [];
  const agents: Agent[] = [];
  const group = `hubs-${randomBytes(3).toString('hex')}`;
  before(async () => {
    broker = await startPrivateMosquitto({ hub: 'hub-pass' });
    db = await newDb('pg');
    for (let i = 0; i < HUBS; i++) {
      hubs.push(
        await startStatus('pg', {
          db,
          clock: new RealClock(),
          settings: { heartbeat_timeout_ms: REAL_TIMEOUT_MS, heartbeat_interval_s: 1, sweep_interval_ms: 50 },
          modules: {
            'mqtt-bridge': {
              url: broker.tcpUrl,
              username: 'hub',
              password: 'hub-pass',
              client_id: `t-mi-hub-${i}-${randomBytes(3).toString('hex')}`,
              clean_session: true,
              shared_group: group,
              reconnect_min_ms: 20,
              reconnect_max_ms: 200,
            },
          },
          providers: [bridgeProvider] as ModuleProvider<never>[],
        }),
      );
    }
    for (const h of hubs) {
      await until(
        async () => (await h.request<BridgeStats>(BRIDGE.stats, {})).state === 'connected',
        5_000,
        'bridge connected',
      );
    }
  });
  after(async () => {
    for (const ag of agents) {
      if (ag.beat) clearInterval(ag.beat);
      ag.client.end(true);
    }
    for (const h of hubs) await h.close();
    await db?.cleanup();
    await broker?.stop();
  });

  const publish = (ag: Agent, topic: string, msg: object) =>
    ag.client.publishAsync(topic, JSON.stringify(msg), { qos: 1 });
  const heartbeat = (ag: Agent) =>
    publish(
      ag,
      TOPIC_MESSAGE_UP,
      buildData(ag.pid, 'heartbeat', { metrics: { at: Date.now() } }, { secret: ag.secret }),
    );
  const received = (ag: Agent, type: string) =>
    ag.downs.items.filter((d) => d.kind === 'data' && d.msg.data_type === type && verifySignature(d.msg, ag.secret));

  test('every hub shows every project online, at every sample; nobody is asked to register again', async () => {
    for (let i = 0; i < PROJECTS; i++) {
      const created = await hubs[i % HUBS].create(`mi-agent-${i}`);
      await broker.addUser(created.mqtt_username, created.mqtt_password);
      const client = await connectClient(broker.tcpUrl, {
        clientId: `t-mi-agent-${i}-${randomBytes(3).toString('hex')}`,
        username: created.mqtt_username,
        password: created.mqtt_password,
        clean: true,
      });
      const ag: Agent = { pid: created.project_id, secret: created.secret, client, downs: new Recorder(), beat: null };
      client.on('message', (topic, payload) => {
        const r = parseDownlink(topic, payload);
        if (r.ok) ag.downs.push(r.value);
      });
      await client.subscribeAsync(messageDownTopic(ag.pid), { qos: 1 });
      agents.push(ag);
    }
    // the broker hands each message to the next hub of the group: a register and its
    // register_complete mostly land on different hubs
    for (const ag of agents) {
      const register = buildCommand(
        ag.pid,
        'register',
        {
          node_name: 'wd',
          instance_id: `wd-${ag.pid}`,
          version: '3.0.0',
          pid: process.pid,
          start_time: Date.now(),
          capabilities: [],
          metadata: {},
          node_version: process.version,
        },
        ag.secret,
      );
      await publish(ag, TOPIC_COMMAND_UP, register);
      const ack = await ag.downs.wait(
        (d) => d.kind === 'data' && d.msg.data_type === 'register_ack' && verifySignature(d.msg, ag.secret),
        `register_ack of ${ag.pid}`,
      );
      assert.equal((ack.msg.payload as { accepted: boolean }).accepted, true);
      await publish(ag, TOPIC_MESSAGE_UP, buildData(ag.pid, 'register_complete', {}, { secret: ag.secret }));
      ag.beat = setInterval(() => void heartbeat(ag).catch(() => undefined), HEARTBEAT_MS);
    }
    const ids = agents.map((ag) => ag.pid);
    const onlineOn = async (h: Harness) =>
      new Set((await h.request<{ items: ProjectView[] }>(STATUS.online, {})).items.map((v) => v.project_id));
    for (const [i, h] of hubs.entries()) {
      await until(
        async () => {
          const online = await onlineOn(h);
          return ids.every((id) => online.has(id));
        },
        5_000,
        `every project online on hub ${i}`,
      );
    }
    // two timeouts' worth of heartbeats split three ways
    const samples = Math.ceil((2 * REAL_TIMEOUT_MS) / 100);
    for (let s = 0; s < samples; s++) {
      for (const [i, h] of hubs.entries()) {
        const online = await onlineOn(h);
        const missing = ids.filter((id) => !online.has(id));
        assert.deepEqual(missing, [], `sample ${s}: hub ${i} does not show them online`);
        for (const id of ids) {
          const creds = await h.request<ProjectCredentials>(STATUS.credentials, { project_id: id });
          assert.equal(creds.state, 'online', `sample ${s}: hub ${i} would refuse a send to ${id}`);
        }
      }
      await new Promise((r) => setTimeout(r, 100));
    }
    for (const ag of agents) {
      assert.equal(received(ag, 'reregister').length, 0, `${ag.pid} was asked to register again`);
      assert.equal(received(ag, 'register_ack').length, 1, `${ag.pid}: one register_ack`);
    }
    // heartbeats reached every hub (the shared subscription splits them), and each hub saw every
    // project come online once, whichever hub decided it
    for (const h of hubs) {
      assert.ok(((await h.stats()).heartbeats as number) > 0);
      for (const id of ids) {
        assert.equal(
          eventsOf(h, id).filter((e) => e.state === 'online').length,
          1,
          `${id} online announced once on every hub`,
        );
      }
    }
  });

  test('an agent that goes silent goes offline on every hub, decided once', async () => {
    const ag = agents[0];
    assert.ok(ag, 'the agents of the previous test');
    const from = hubs.map((h) => h.events.items.length);
    clearInterval(ag.beat!);
    ag.beat = null;
    for (const [i, h] of hubs.entries()) {
      const off = await h.events.wait(
        (e) => e.project_id === ag.pid && e.state === 'offline',
        `offline on hub ${i}`,
        from[i],
      );
      assert.equal(off.reason, 'heartbeat timeout');
    }
    for (const [i, h] of hubs.entries()) {
      assert.equal(eventsOf(h, ag.pid, from[i]).length, 1, `hub ${i}: one change`);
      assert.equal(await stateOn(h, ag.pid), 'offline');
    }
    const offline = (await historyOf(hubs[0], ag.pid)).filter((r) => r.to_state === 'offline');
    assert.equal(offline.length, 1, 'one history row');
    // the others stayed online throughout
    for (const h of hubs) {
      const online = (await h.request<{ items: ProjectView[] }>(STATUS.online, {})).items.map((v) => v.project_id);
      for (const other of agents.slice(1)) assert.ok(online.includes(other.pid));
    }
  });
});
