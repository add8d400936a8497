/**
 * Every operation of /openapi.json, called on a real hub (status, command, bridge on
 * PostgreSQL; a token set): a valid request, an invalid one where the operation takes input,
 * and one without the token. Each answer must carry a status the operation lists and a body
 * valid (ajv, JSON Schema 2020-12) against the schema documented for it; the test fails if an
 * operation of the document was not exercised.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { until } from '../../helpers/wait.js';
import { OpenApiOracle } from './openapi-oracle.js';
import { HUB_TOKEN, type RealHub, rawRequest, startRealHub } from './real-hub.js';

const API = '/api/exchange-hub';
const auth = { authorization: `Bearer ${HUB_TOKEN}` };
const json = { ...auth, 'content-type': 'application/json' };

type Req = [method: string, path: string, body?: unknown, headers?: Record<string, string>];

describe('real answers match /openapi.json', () => {
  let hub: RealHub;
  let oracle: OpenApiOracle;
  const exercised = new Map<string, Set<number>>();

  /** Sends, checks against the operation the plain path names, and returns the answer. */
  const check = async ([method, path, body, headers]: Req) => {
    const h = headers ?? (body === undefined ? auth : json);
    const r = await rawRequest(hub.port, method, path, h, body === undefined ? undefined : JSON.stringify(body));
    const op = oracle.match(method, path);
    assert.ok(op, `no operation for ${method} ${path}`);
    assert.equal(oracle.check(op, r.status, r.headers['content-type'], r.body), null, `${method} ${path}: ${r.body}`);
    if (!exercised.has(op.operationId)) exercised.set(op.operationId, new Set());
    exercised.get(op.operationId)!.add(r.status);
    return r;
  };

  before(async () => {
    hub = await startRealHub();
    oracle = new OpenApiOracle((await rawRequest(hub.port, 'GET', '/openapi.json')).json);
  });
  after(() => hub?.stop());

  test('projects: create, list, status, online, disable, enable, rotate', async () => {
    assert.equal(
      (await check(['POST', `${API}/projects`, { project_id: 'oa-1', name: 'One', metadata: { a: [1] } }])).status,
      201,
    );
    assert.equal((await check(['POST', `${API}/projects`, { project_id: 'oa-1' }])).status, 409);
    assert.equal((await check(['POST', `${API}/projects`, { project_id: 'a/b' }])).status, 400);
    assert.equal(
      (await check(['POST', `${API}/projects`, undefined, { ...auth, 'content-type': 'text/plain' }])).status,
      415,
    );
    const big = 'x'.repeat(300_000);
    assert.equal((await check(['POST', `${API}/projects`, { name: big }])).status, 413);
    const plain = await rawRequest(hub.port, 'POST', `${API}/projects`, { ...auth, 'content-type': 'text/plain' }, 'x');
    assert.equal(plain.status, 415);
    assert.equal(
      oracle.check(oracle.match('POST', `${API}/projects`)!, 415, plain.headers['content-type'], plain.body),
      null,
    );
    assert.equal((await check(['GET', `${API}/projects?include_disabled=true&limit=10`])).status, 200);
    assert.equal((await check(['GET', `${API}/projects?limit=0`])).status, 400);
    assert.equal((await check(['GET', `${API}/project/oa-1/status`])).status, 200);
    assert.equal((await check(['GET', `${API}/project/nobody/status`])).status, 404);
    assert.equal((await check(['GET', `${API}/project/%24SYS/status`])).status, 400);
    assert.equal((await check(['GET', `${API}/projects/online`])).status, 200);
    assert.equal((await check(['POST', `${API}/projects/oa-1/disable`])).status, 200);
    assert.equal((await check(['POST', `${API}/projects/oa-1/enable`, {}])).status, 200);
    assert.equal((await check(['POST', `${API}/projects/nobody/enable`])).status, 404);
    assert.equal((await check(['POST', `${API}/projects/oa-1/disable`, { x: 1 }])).status, 400);
    assert.equal((await check(['POST', `${API}/projects/oa-1/rotate`, { overlap_s: 0 }])).status, 200);
    assert.equal((await check(['POST', `${API}/projects/oa-1/rotate`, { overlap_s: -1 }])).status, 400);
  });

  test('commands: send, sync, get, cancel, list, dead list, replay', async () => {
    assert.equal((await check(['POST', `${API}/projects`, { project_id: 'oa-c' }])).status, 201);
    assert.equal((await check(['POST', `${API}/command/send`, { project_id: 'oa-c', command_type: 'x' }])).status, 409);
    assert.equal(
      (await check(['POST', `${API}/command/send`, { project_id: 'nobody', command_type: 'x' }])).status,
      404,
    );
    assert.equal((await check(['POST', `${API}/command/send`, { project_id: 'oa-c' }])).status, 400);
    const queued = await check([
      'POST',
      `${API}/command/send`,
      { project_id: 'oa-c', command_type: 'x', offline_policy: 'queue', payload: { a: 1 } },
    ]);
    assert.equal(queued.status, 202);
    const id = (queued.json as { command_id: string }).command_id;
    const sync = await check([
      'POST',
      `${API}/command/sync`,
      { project_id: 'oa-c', command_type: 'x', offline_policy: 'queue', wait_ms: 50 },
    ]);
    assert.equal(sync.status, 504);
    assert.equal((await check(['POST', `${API}/command/sync`, { project_id: 'oa-c', command_type: 'x' }])).status, 409);
    assert.equal((await check(['GET', `${API}/command/${id}`])).status, 200);
    assert.equal((await check(['GET', `${API}/command/00000000-0000-0000-0000-000000000000`])).status, 404);
    assert.equal((await check(['GET', `${API}/command/not-a-uuid`])).status, 400);
    assert.equal((await check(['POST', `${API}/command/${id}/cancel`])).status, 200);
    assert.equal((await check(['POST', `${API}/command/${id}/cancel`])).status, 409);
    assert.equal(
      (await check(['GET', `${API}/commands?project_id=oa-c&status=cancelled,pending&limit=5`])).status,
      200,
    );
    assert.equal((await check(['GET', `${API}/commands?status=nope`])).status, 400);
    assert.equal((await check(['GET', `${API}/commands?since=8640000000000000`])).status, 400);

    const expiring = await check([
      'POST',
      `${API}/command/send`,
      { project_id: 'oa-c', command_type: 'x', offline_policy: 'queue', queue_ttl_ms: 1 },
    ]);
    const deadId = (expiring.json as { command_id: string }).command_id;
    await until(
      async () => {
        const r = await rawRequest(hub.port, 'GET', `${API}/commands/dead`, auth);
        return (r.json as { items: Array<{ command_id: string }> }).items.some((i) => i.command_id === deadId);
      },
      20_000,
      'the expired command in the dead list',
    );
    assert.equal((await check(['GET', `${API}/commands/dead?limit=10`])).status, 200);
    assert.equal((await check(['GET', `${API}/commands/dead?limit=x`])).status, 400);
    assert.equal((await check(['POST', `${API}/commands/dead/${deadId}/replay`])).status, 200);
    // a command that is not dead is the caller's mistake (400 naming command_id); an unknown one is a 404
    assert.equal((await check(['POST', `${API}/commands/dead/${id}/replay`])).status, 400);
    assert.equal(
      (await check(['POST', `${API}/commands/dead/00000000-0000-0000-0000-000000000000/replay`])).status,
      404,
    );
  });

  test('system: modules, restart, health, ready, metrics, openapi, the WebSocket path', async () => {
    assert.equal((await check(['GET', `${API}/modules`])).status, 200);
    assert.equal((await check(['POST', `${API}/modules/nope/restart`])).status, 404);
    assert.equal((await check(['POST', `${API}/modules/BAD NAME/restart`.replace(' ', '%20')])).status, 400);
    assert.equal((await check(['POST', `${API}/modules/command/restart`])).status, 200);
    assert.equal((await check(['GET', '/healthz', undefined, {}])).status, 200);
    const ready = await check(['GET', '/readyz', undefined, {}]);
    assert.ok([200, 503].includes(ready.status));
    assert.equal((await check(['GET', '/metrics'])).status, 200);
    assert.equal((await check(['GET', '/openapi.json', undefined, {}])).status, 200);
    assert.equal((await check(['GET', `${API}/ws`])).status, 426);
  });

  test('outbox: dead events and replay (no routes configured: empty, unknown ones 404)', async () => {
    const dead = await check(['GET', `${API}/outbox/dead`]);
    assert.equal(dead.status, 200);
    assert.deepEqual(JSON.parse(dead.body).items, []);
    assert.equal((await check(['GET', `${API}/outbox/dead?route=nope`])).status, 404);
    assert.equal((await check(['GET', `${API}/outbox/dead?route=BAD`])).status, 400);
    const none = '00000000-0000-0000-0000-000000000000';
    assert.equal((await check(['POST', `${API}/outbox/dead/${none}/replay`])).status, 404);
    assert.equal((await check(['POST', `${API}/outbox/dead/not-a-uuid/replay`])).status, 400);
  });

  test('without the token: every secured operation answers 401 in the error shape, public ones answer', async () => {
    const params: Record<string, string> = {
      project_id: 'oa-1',
      command_id: '00000000-0000-0000-0000-000000000000',
      event_id: '00000000-0000-0000-0000-000000000000',
      name: 'status',
    };
    for (const op of oracle.operations) {
      const path = op.path.replace(/\{([^}]+)\}/g, (_, n: string) => params[n]);
      const r = await check([op.method, path, undefined, {}]);
      if (op.secured) assert.equal(r.status, 401, `${op.method} ${op.path}`);
      else assert.ok(r.status === 200 || (op.path === '/readyz' && r.status === 503), `${op.method} ${op.path}`);
    }
  });

  test('every operation of the document was exercised', () => {
    const missing = oracle.operations.filter((o) => !exercised.has(o.operationId)).map((o) => o.operationId);
    assert.deepEqual(missing, []);
  });
});
