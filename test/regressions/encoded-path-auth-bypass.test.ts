/**
 * Issue 8 finding 1: the token check read the raw URL and the router decoded it, so with
 * HUB_API_TOKEN set `POST /%61pi/exchange-hub/projects` provisioned a project (201 with its
 * secret), `GET /%6detrics` and `GET /metrics#` answered 200. The gate now decides on the route
 * the router matched. Every spelling below must need the token, and do nothing without it.
 */
import assert from 'node:assert/strict';
import http2 from 'node:http2';
import { after, before, describe, test } from 'node:test';
import pg from 'pg';
import WebSocket from 'ws';
import { TEST_DATABASE_URL } from '../helpers/db.js';
import { HUB_TOKEN, type RealHub, rawRequest, startRealHub } from '../modules/web/real-hub.js';

const auth = { authorization: `Bearer ${HUB_TOKEN}` };
const json = { 'content-type': 'application/json' };

describe('regression: percent-encoded and odd paths do not get past the token', () => {
  let hub: RealHub;
  let db: pg.Client;
  const projects = async () =>
    (await db.query(`SELECT project_id, secret FROM "${hub.schema}".project ORDER BY project_id`)).rows;

  before(async () => {
    hub = await startRealHub({ grpc: true });
    db = new pg.Client({ connectionString: TEST_DATABASE_URL });
    await db.connect();
  });
  after(async () => {
    await db?.end();
    await hub?.stop();
  });

  test('POST /%61pi/exchange-hub/projects without the token: 401, no project', async () => {
    const before = await projects();
    for (const path of [
      '/%61pi/exchange-hub/projects',
      '/api/%65xchange-hub/projects',
      '/%61%70%69/exchange-hub/projects',
      '/api/exchange-hub/projects#',
    ]) {
      const r = await rawRequest(hub.port, 'POST', path, json, '{"project_id":"bypass"}');
      assert.equal(r.status, 401, path);
      assert.equal((r.json as { error: { code: string } }).error.code, 'AUTH_ERR_TOKEN', path);
      assert.equal(r.body.includes('secret'), false);
    }
    assert.deepEqual(await projects(), before, 'nothing was provisioned');
    // the same spelling with the token is the real route (so the 401 above was the gate's)
    const ok = await rawRequest(hub.port, 'POST', '/%61pi/exchange-hub/projects', { ...json, ...auth }, '{}');
    assert.equal(ok.status, 201);
  });

  test('rotating a secret through an encoded path needs the token', async () => {
    const created = await rawRequest(
      hub.port,
      'POST',
      '/api/exchange-hub/projects',
      { ...json, ...auth },
      '{"project_id":"rot"}',
    );
    assert.equal(created.status, 201);
    const secretBefore = (await projects()).find((p) => p.project_id === 'rot')?.secret;
    const r = await rawRequest(hub.port, 'POST', '/%61pi/exchange-hub/projects/rot/%72otate', json, '{}');
    assert.equal(r.status, 401);
    assert.equal((await projects()).find((p) => p.project_id === 'rot')?.secret, secretBefore);
  });

  test('GET /%6detrics and GET /metrics# without the token: 401', async () => {
    for (const path of ['/%6detrics', '/metrics#', '/%6D%65%74%72%69%63%73', '/metrics#x', '/metrics?']) {
      const r = await rawRequest(hub.port, 'GET', path);
      assert.equal(r.status, 401, path);
      assert.equal(r.body.includes('hub_http_requests_total'), false, path);
    }
    const ok = await rawRequest(hub.port, 'GET', '/%6detrics', auth);
    assert.equal(ok.status, 200);
    assert.match(ok.body, /hub_http_refusals_total\{code="AUTH_ERR_TOKEN"\} \d+/, 'the 401s were counted by code');
  });

  test('unknown paths under /api need the token too (fail closed); the public routes stay public', async () => {
    for (const [method, path] of [
      ['GET', '/api/exchange-hub/nope'],
      ['GET', '/%61pi/exchange-hub/nope'],
      ['POST', '/nowhere'],
      ['GET', '/api'],
    ] as const) {
      const r = await rawRequest(hub.port, method, path);
      assert.equal(r.status, 401, `${method} ${path}`);
    }
    for (const path of ['/healthz', '/openapi.json', '/', '/%68ealthz']) {
      const r = await rawRequest(hub.port, 'GET', path);
      assert.equal(r.status, 200, path);
    }
  });

  test('the WebSocket upgrade and gRPC stay as they were: exact paths, the token checked there', async () => {
    const open = (path: string, headers: Record<string, string> = {}) =>
      new Promise<number>((resolve) => {
        const ws = new WebSocket(`ws://127.0.0.1:${hub.port}${path}`, { headers });
        ws.on('open', () => {
          ws.close();
          resolve(101);
        });
        ws.on('unexpected-response', (_req, res) => {
          res.resume();
          resolve(res.statusCode ?? 0);
        });
        ws.on('error', () => resolve(-1));
      });
    assert.equal(await open('/api/exchange-hub/ws'), 401);
    assert.equal(await open('/%61pi/exchange-hub/ws'), 404);
    assert.equal(await open('/api/exchange-hub/%77s'), 404);
    assert.equal(await open('/api/exchange-hub/ws', auth), 101);

    // gRPC dispatches on the exact :path; a spelled-out method name is not the method
    const session = http2.connect(`http://127.0.0.1:${hub.grpcPort}`);
    try {
      const grpcStatus = (path: string, headers: Record<string, string> = {}) =>
        new Promise<string>((resolve, reject) => {
          const req = session.request({
            ':method': 'POST',
            ':path': path,
            'content-type': 'application/grpc',
            te: 'trailers',
            ...headers,
          });
          let status = '';
          req.on('response', (h) => {
            if (h['grpc-status'] !== undefined) status = String(h['grpc-status']);
          });
          req.on('trailers', (t) => {
            status = String(t['grpc-status']);
          });
          req.on('end', () => resolve(status));
          req.on('error', reject);
          req.resume();
          // one empty ListProjectsRequest message: no compression flag, length 0
          req.end(Buffer.from([0, 0, 0, 0, 0]));
        });
      assert.equal(await grpcStatus('/exchangehub.v1.ExchangeHub/ListProjects'), '16', 'UNAUTHENTICATED');
      assert.equal(await grpcStatus('/exchangehub.v1.ExchangeHub/%4cistProjects'), '12', 'UNIMPLEMENTED');
      assert.equal(await grpcStatus('/exchangehub.v1.ExchangeHub/ListProjects', auth), '0', 'OK with the token');
    } finally {
      session.close();
    }
  });
});
