/**
 * Issue 9: while the database was down callers got `500 WEB_ERR_INTERNAL`. Now every caller gets
 * 503 DB_ERR_UNAVAILABLE with Retry-After (gRPC: UNAVAILABLE), /readyz says the database is
 * unreachable, and once the database is back sends succeed again within seconds, without a
 * restart of the hub. On a private PostgreSQL cluster (stopped -m immediate) and Mosquitto.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { status } from '@grpc/grpc-js';
import { HubError } from '../../core/errors.js';
import { classifyDbError, isDbUnavailable } from '../../core/services/db.js';
import { toServiceError } from '../../modules/grpc/errors.js';
import { toHttpError } from '../../modules/web/errors.js';
import { API, ChaosAgent, ChaosHub } from '../chaos/fleet.js';
import { PrivateMosquitto, PrivatePostgres, sleep } from '../chaos/servers.js';
import { scaled } from '../helpers/wait.js';

describe('database unavailable: the classifier', () => {
  const errno = (code: string) => Object.assign(new Error(`connect ${code} 127.0.0.1:5432`), { code });
  const sqlstate = (code: string, message: string) => Object.assign(new Error(message), { code });

  it('recognises connection failures and nothing else', () => {
    const down = [
      errno('ECONNREFUSED'),
      errno('ECONNRESET'),
      sqlstate('57P01', 'terminating connection due to administrator command'),
      sqlstate('57P03', 'the database system is starting up'),
      sqlstate('08006', 'connection failure'),
      new Error('Connection terminated unexpectedly'),
      new Error('insert into "t" ... - Client has encountered a connection error and is not queryable'),
      Object.assign(new Error('Knex: Timeout acquiring a connection.'), { name: 'KnexTimeoutError' }),
      new AggregateError([errno('ECONNREFUSED'), errno('ECONNREFUSED')], 'connect failed'),
    ];
    for (const e of down) assert.equal(isDbUnavailable(e), true, e.message);
    const notDown = [
      sqlstate('23505', 'duplicate key value violates unique constraint'),
      sqlstate('42601', 'syntax error at or near "x"'),
      sqlstate('57014', 'canceling statement due to statement timeout'),
      new TypeError('x is undefined'),
      new HubError('CMD_ERR_INVALID', 'bad'),
      null,
      'ECONNREFUSED',
    ];
    for (const e of notDown) assert.equal(isDbUnavailable(e), false, String(e));
  });

  it('DB_ERR_UNAVAILABLE names the database, not the SQL, and is 503 / UNAVAILABLE with a retry hint', () => {
    const raw = Object.assign(
      new Error('insert into "command_tracker" ("secret") values ($1) - Connection terminated'),
      {
        code: undefined,
      },
    );
    const e = classifyDbError(raw, 'default') as HubError;
    assert.equal(e.code, 'DB_ERR_UNAVAILABLE');
    assert.match(e.message, /database "default" unreachable/);
    assert.doesNotMatch(e.message, /insert|command_tracker/);
    assert.equal(e.cause, raw);
    const http = toHttpError(e);
    assert.equal(http.status, 503);
    assert.equal(http.body.error.code, 'DB_ERR_UNAVAILABLE');
    assert.ok(Number(http.headers['retry-after']) > 0);
    const grpc = toServiceError(e);
    assert.equal(grpc.code, status.UNAVAILABLE);
    assert.deepEqual(grpc.metadata?.get('error-code'), ['DB_ERR_UNAVAILABLE']);
    assert.ok(Number(grpc.metadata?.get('retry-after')[0]) > 0);
    // a query that is wrong stays what it was (500 without its internals)
    const syntax = Object.assign(new Error('syntax error'), { code: '42601' });
    assert.equal(classifyDbError(syntax, 'default'), syntax);
  });
});

describe('database outage: callers get 503 + Retry-After, the hub recovers by itself', {
  timeout: scaled(75_000),
}, () => {
  let pgs: PrivatePostgres;
  let mosquitto: PrivateMosquitto;
  let hub: ChaosHub;
  let agent: ChaosAgent;
  let projectId: string;

  before(async () => {
    pgs = await PrivatePostgres.create();
    mosquitto = await PrivateMosquitto.create();
    hub = await ChaosHub.create(await pgs.createDatabase('outage'), mosquitto.url);
    await hub.start();
    const project = await hub.provision('outage-p');
    projectId = project.project_id;
    agent = new ChaosAgent(project, mosquitto.url);
    await agent.start();
  });

  after(async () => {
    await agent?.dispose();
    await hub?.dispose();
    await mosquitto?.destroy();
    await pgs?.destroy();
  });

  const send = async () => {
    const res = await fetch(`${hub.base}${API}/command/send`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ project_id: projectId, command_type: 'echo', payload: { n: 1 }, offline_policy: 'queue' }),
    });
    return { status: res.status, retryAfter: res.headers.get('retry-after'), json: (await res.json()) as never };
  };

  const waitCompleted = async (id: string) => {
    const deadline = Date.now() + scaled(60_000);
    let last: unknown;
    while (Date.now() < deadline) {
      const r = await fetch(`${hub.base}${API}/command/${id}`);
      last = await r.json();
      if (r.status === 200 && (last as { status?: string }).status === 'completed') return;
      await sleep(200);
    }
    assert.fail(`command ${id} not completed: ${JSON.stringify(last)}`);
  };

  it('a send before, during and after an immediate stop of PostgreSQL', async () => {
    const first = await send();
    assert.equal(first.status, 202, JSON.stringify(first.json));
    await waitCompleted((first.json as { command_id: string }).command_id);

    await pgs.stop('immediate');
    // every send during the outage: 503 with the code and Retry-After, never 500
    for (let i = 0; i < 5; i++) {
      const r = await send();
      assert.equal(r.status, 503, JSON.stringify(r.json));
      assert.equal((r.json as { error: { code: string } }).error.code, 'DB_ERR_UNAVAILABLE');
      assert.ok(Number(r.retryAfter) > 0, `retry-after: ${r.retryAfter}`);
    }
    const list = await fetch(`${hub.base}${API}/commands?project_id=${projectId}`);
    assert.equal(list.status, 503);
    const ready = await fetch(`${hub.base}/readyz`);
    assert.equal(ready.status, 503);
    const body = (await ready.json()) as { checks: { database: { ok: boolean; reason: string } } };
    assert.equal(body.checks.database.ok, false);
    assert.match(body.checks.database.reason, /unreachable/);

    await pgs.start();
    const back = Date.now();
    const bound = scaled(5_000);
    let r = await send();
    while (r.status !== 202 && Date.now() - back < bound) {
      assert.notEqual(r.status, 500, JSON.stringify(r.json));
      await sleep(100);
      r = await send();
    }
    assert.equal(
      r.status,
      202,
      `no send accepted within ${bound} ms of the database's return: ${JSON.stringify(r.json)}`,
    );
    await waitCompleted((r.json as { command_id: string }).command_id);
    assert.equal((await fetch(`${hub.base}/readyz`)).status, 200);
  });
});
