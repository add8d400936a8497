/**
 * The hand-coded floor the benchmarks compare the hub with (bench/floor-child.ts) serves its two
 * routes: a sync call comes back with the agent's echo, and a send is accepted (202) once its row
 * is written and later completed by the agent's reply. Against the machine's PostgreSQL (a fresh
 * schema) and a private Mosquitto with password logins.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import pg from 'pg';
import { type FloorProcess, startFloor } from '../../bench/floor.js';
import { connectFloorAgents, type FloorAgent } from '../../bench/floor-agent.js';
import { JsonClient } from '../../bench/http.js';
import { TEST_DATABASE_URL, withPgSchema } from '../helpers/db.js';
import { mosquittoAvailable, type PrivateMosquitto, startPrivateMosquitto } from '../helpers/mosquitto.js';
import { until } from '../helpers/wait.js';

const withAuth = (url: string, user: string, pass: string) => url.replace('mqtt://', `mqtt://${user}:${pass}@`);

describe('bench floor: the hand-coded command path', {
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
    floor = await startFloor(withAuth(mosq.tcpUrl, 'floor', 'floor-pw'), {
      url: TEST_DATABASE_URL,
      schema: schema.config.schema!,
    });
    agents = await connectFloorAgents(withAuth(mosq.tcpUrl, 'agent', 'agent-pw'), ['p-1']);
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

  test('a sync call is answered with the payload the agent echoed, and its row is completed', async () => {
    const payload = { text: 'hello', n: 7 };
    const r = await http.request('POST', '/sync', { project_id: 'p-1', command_type: 'echo', payload });
    assert.equal(r.status, 200, JSON.stringify(r.json));
    assert.equal(r.json.status, 'completed');
    assert.deepEqual(r.json.result, payload);
    assert.deepEqual(await rowOf(r.json.command_id), { status: 'completed', result: payload });
  });

  test('a send is accepted with its row written, and the reply completes that row', async () => {
    const payload = { text: 'later', n: 8 };
    const r = await http.request('POST', '/send', { project_id: 'p-1', command_type: 'echo', payload });
    assert.equal(r.status, 202, JSON.stringify(r.json));
    const id = r.json.command_id as string;
    assert.ok(await rowOf(id), 'the row is committed before the 202');
    await until(async () => (await rowOf(id)).status === 'completed', 5_000, 'the row completed');
    assert.deepEqual((await rowOf(id)).result, payload);
  });

  test('a request without a project is refused', async () => {
    const r = await http.request('POST', '/sync', { command_type: 'echo', payload: {} });
    assert.equal(r.status, 400);
  });
});
