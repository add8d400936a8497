/**
 * The hand-coded floor the benchmarks compare the hub with (bench/floor-child.ts) serves its two
 * routes: a sync call comes back with the agent's echo, and a send is accepted (202) once its row
 * is written and later completed by the agent's reply. Against the machine's PostgreSQL (a fresh
 * schema) and a private Mosquitto with password logins. Both kinds (bench/floor-protocol.ts): the
 * unsigned floor, and the signed one, whose commands its agent must verify and whose replies it
 * verifies (a forged result is refused and completes nothing).
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import pg from 'pg';
import { connectMqtt, endClient, signedData } from '../../bench/agents.js';
import { type FloorProcess, startFloor } from '../../bench/floor.js';
import { connectFloorAgents, type FloorAgent, floorReplyTopic } from '../../bench/floor-agent.js';
import { type FloorKind, floorSecret } from '../../bench/floor-protocol.js';
import { JsonClient } from '../../bench/http.js';
import { TEST_DATABASE_URL, withPgSchema } from '../helpers/db.js';
import { mosquittoAvailable, type PrivateMosquitto, startPrivateMosquitto } from '../helpers/mosquitto.js';
import { until } from '../helpers/wait.js';

const withAuth = (url: string, user: string, pass: string) => url.replace('mqtt://', `mqtt://${user}:${pass}@`);

for (const kind of ['unsigned', 'signed'] as FloorKind[]) describeFloor(kind);

function describeFloor(kind: FloorKind): void {
  describe(`bench floor (${kind}): the hand-coded command path`, {
    skip: mosquittoAvailable() ? false : 'mosquitto is not installed',
    timeout: 60_000,
  }, () => {
    let mosq: PrivateMosquitto;
    let schema: { config: { schema?: string }; drop(): Promise<void> };
    let floor: FloorProcess;
    let agents: FloorAgent[];
    let http: JsonClient;
    let db: pg.Client;

    before(async () => {
      mosq = await startPrivateMosquitto({ floor: 'floor-pw', agent: 'agent-pw' });
      schema = await withPgSchema();
      floor = await startFloor(
        withAuth(mosq.tcpUrl, 'floor', 'floor-pw'),
        { url: TEST_DATABASE_URL, schema: schema.config.schema! },
        { env: { BENCH_FLOOR: kind } },
      );
      agents = await connectFloorAgents(withAuth(mosq.tcpUrl, 'agent', 'agent-pw'), ['p-1'], 1, kind);
      http = new JsonClient(floor.url, 4);
      db = new pg.Client({ connectionString: TEST_DATABASE_URL });
      await db.connect();
    });

    after(async () => {
      http?.close();
      await db?.end();
      await Promise.all((agents ?? []).map((a) => a.close()));
      await floor?.stop();
      await schema?.drop();
      await mosq?.stop();
    });

    const rowOf = async (id: string) =>
      (
        await db.query<{ status: string; result: unknown }>(`SELECT status, result FROM ${floor.table} WHERE id = $1`, [
          id,
        ])
      ).rows[0];

    /** What the agent's reply carries back for `payload`: the echo, or (signed) its exec_result. */
    const echoed = (result: unknown, payload: unknown) => {
      if (kind === 'unsigned') return assert.deepEqual(result, payload);
      const r = result as { status: string; exit_code: number; output: string; command_id: string };
      assert.equal(r.status, 'success');
      assert.equal(r.exit_code, 0);
      assert.deepEqual(JSON.parse(r.output), payload);
    };

    test('a sync call is answered with the payload the agent echoed, and its row is completed', async () => {
      const payload = { text: 'hello', n: 7 };
      const r = await http.request('POST', '/sync', { project_id: 'p-1', command_type: 'echo', payload });
      assert.equal(r.status, 200, JSON.stringify(r.json));
      assert.equal(r.json.status, 'completed');
      echoed(r.json.result, payload);
      const row = await rowOf(r.json.command_id);
      assert.equal(row.status, 'completed');
      assert.deepEqual(row.result, r.json.result);
    });

    test('a send is accepted with its row written, and the reply completes that row', async () => {
      const payload = { text: 'later', n: 8 };
      const r = await http.request('POST', '/send', { project_id: 'p-1', command_type: 'echo', payload });
      assert.equal(r.status, 202, JSON.stringify(r.json));
      const id = r.json.command_id as string;
      assert.ok(await rowOf(id), 'the row is committed before the 202');
      await until(async () => (await rowOf(id)).status === 'completed', 5_000, 'the row completed');
      echoed((await rowOf(id)).result, payload);
      const stats = await floor.stats();
      assert.equal(stats.bad_replies, 0);
      // the signed agent acks every command it verified, and the floor checked each ack
      assert.equal(stats.acks, kind === 'signed' ? 2 : 0);
      assert.equal(agents[0].rejected, 0);
    });

    if (kind === 'signed') {
      test('a result signed with another secret is refused and completes nothing', async () => {
        const payload = { text: 'forged' };
        const r = await http.request('POST', '/send', { project_id: 'p-2', command_type: 'echo', payload });
        assert.equal(r.status, 202, JSON.stringify(r.json));
        const id = r.json.command_id as string;
        // nobody serves p-2: a rogue client answers for it with a secret that is not the project's
        const rogue = await connectMqtt(mosq.tcpUrl, { clientId: 'rogue', username: 'agent', password: 'agent-pw' });
        const forged = signedData('p-2', `${floorSecret('p-2')}x`, 'exec_result', {
          command_id: id,
          status: 'success',
          exit_code: 0,
          output: '{}',
          error: '',
          start_time: Date.now(),
          end_time: Date.now(),
          duration: 0,
        });
        const before = (await floor.stats()).bad_replies;
        await rogue.publishAsync(floorReplyTopic('p-2', kind), forged, { qos: 1 });
        await until(async () => (await floor.stats()).bad_replies === before + 1, 5_000, 'the forged result refused');
        await endClient(rogue);
        assert.equal((await rowOf(id)).status, 'sent');
      });
    }

    test('a request without a project is refused', async () => {
      const r = await http.request('POST', '/sync', { command_type: 'echo', payload: {} });
      assert.equal(r.status, 400);
    });
  });
}

describe('bench floor: both kinds on one broker (BENCH_FLOOR=both)', {
  skip: mosquittoAvailable() ? false : 'mosquitto is not installed',
  timeout: 60_000,
}, () => {
  let mosq: PrivateMosquitto;
  const schemas: Array<{ config: { schema?: string }; drop(): Promise<void> }> = [];
  const floors: FloorProcess[] = [];
  const agents: FloorAgent[] = [];
  const clients: JsonClient[] = [];

  before(async () => {
    mosq = await startPrivateMosquitto({ floor: 'floor-pw', agent: 'agent-pw' });
    for (const kind of ['unsigned', 'signed'] as FloorKind[]) {
      const schema = await withPgSchema();
      schemas.push(schema);
      const floor = await startFloor(
        withAuth(mosq.tcpUrl, 'floor', 'floor-pw'),
        { url: TEST_DATABASE_URL, schema: schema.config.schema! },
        { env: { BENCH_FLOOR: kind } },
      );
      floors.push(floor);
      clients.push(new JsonClient(floor.url, 2));
    }
    // the agents of one project for both floors, connected at once, as the sync suites do
    for (const kind of ['unsigned', 'signed'] as FloorKind[])
      agents.push(...(await connectFloorAgents(withAuth(mosq.tcpUrl, 'agent', 'agent-pw'), ['p-1'], 1, kind)));
  });

  after(async () => {
    for (const c of clients) c.close();
    await Promise.all(agents.map((a) => a.close()));
    for (const f of floors) await f.stop();
    for (const s of schemas) await s.drop();
    await mosq?.stop();
  });

  test('each floor is answered by its own agents, on topics and sessions of its own', async () => {
    for (let round = 0; round < 3; round++) {
      for (const [i, http] of clients.entries()) {
        const r = await http.request('POST', '/sync', {
          project_id: 'p-1',
          command_type: 'echo',
          payload: { round, floor: i },
          wait_ms: 5_000,
        });
        assert.equal(r.status, 200, `floor ${i}, round ${round}: ${JSON.stringify(r.json)}`);
      }
    }
    for (const f of floors) assert.equal((await f.stats()).bad_replies, 0);
    assert.deepEqual(
      agents.map((a) => [a.replies, a.rejected]),
      [
        [3, 0],
        [3, 0],
      ],
    );
  });
});
