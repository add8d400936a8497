/**
 * Issue 8 finding 6: values a JavaScript Date or JSON.parse accepts but PostgreSQL cannot hold
 * answered 500: `since`/`until` past timestamptz's range (`?since=8640000000000000`,
 * `+275760-09-13T00:00:00.000Z`; gRPC ListCommands gave INTERNAL), a project `name` or
 * `metadata` with NUL, a lone surrogate or deep nesting. They are a caller's mistake: 400 with
 * a stable code naming the field (INVALID_ARGUMENT over gRPC), counted in /metrics. A command
 * payload nested too deep or holding a lone surrogate is refused the same way.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import * as grpc from '@grpc/grpc-js';
import { call, ExchangeHubClient, fails } from '../modules/grpc/harness.js';
import { HUB_TOKEN, type RealHub, rawRequest, startRealHub } from '../modules/web/real-hub.js';

const API = '/api/exchange-hub';
const auth = { authorization: `Bearer ${HUB_TOKEN}` };
const json = { ...auth, 'content-type': 'application/json' };

/** `{"a":{"a":…}}` nested `depth` deep, written as text (JSON.stringify would recurse). */
const nested = (depth: number) => `${'{"a":'.repeat(depth)}1${'}'.repeat(depth)}`;

interface ErrorJson {
  error: { code: string; field?: string; message: string };
}

describe('regression: unstorable input is a 400, not a 500', () => {
  let hub: RealHub;
  let client: grpc.Client;
  before(async () => {
    hub = await startRealHub({ grpc: true });
    client = new ExchangeHubClient(`127.0.0.1:${hub.grpcPort}`, grpc.credentials.createInsecure());
  });
  after(async () => {
    client?.close();
    await hub?.stop();
  });

  test('since/until outside PostgreSQL’s range: 400 CMD_ERR_INVALID naming the field', async () => {
    for (const [field, value] of [
      ['since', '8640000000000000'],
      ['since', '%2B275760-09-13T00:00:00.000Z'],
      ['until', '8640000000000000'],
      ['until', '-271821-04-20T00:00:00.000Z'],
      ['since', '-000001-01-01T00:00:00.000Z'],
      ['until', '%2B010000-01-01T00:00:00.000Z'],
    ]) {
      const r = await rawRequest(hub.port, 'GET', `${API}/commands?${field}=${value}`, auth);
      assert.equal(r.status, 400, `${field}=${value}: ${r.body}`);
      const e = r.json as ErrorJson;
      assert.equal(e.error.code, 'CMD_ERR_INVALID');
      assert.equal(e.error.field, field);
    }
    // the edges of the range are fine
    for (const q of ['since=0001-01-01T00:00:00.000Z', 'until=9999-12-31T23:59:59.999Z', 'since=0']) {
      const r = await rawRequest(hub.port, 'GET', `${API}/commands?${q}`, auth);
      assert.equal(r.status, 200, `${q}: ${r.body}`);
    }
  });

  test('gRPC ListCommands with such a time: INVALID_ARGUMENT, not INTERNAL', async () => {
    const md = { token: HUB_TOKEN };
    for (const since of ['8640000000000000', '+275760-09-13T00:00:00.000Z']) {
      const err = await fails(call(client, 'ListCommands', { since }, md), grpc.status.INVALID_ARGUMENT);
      assert.match(err.details, /^since: /);
    }
  });

  test('project name or metadata with NUL, a lone surrogate or deep nesting: 400 STATUS_ERR_INVALID', async () => {
    const bodies: Array<[string, string]> = [
      ['name', '{"project_id":"n1","name":"a\\u0000b"}'],
      ['name', '{"project_id":"n2","name":"a\\ud800b"}'],
      ['name', '{"project_id":"n3","name":"\\udc00"}'],
      ['metadata', '{"project_id":"m1","metadata":{"k":"a\\u0000b"}}'],
      ['metadata', '{"project_id":"m2","metadata":{"k\\u0000":1}}'],
      ['metadata', '{"project_id":"m3","metadata":{"k":["\\ud83d"]}}'],
      ['metadata', `{"project_id":"m4","metadata":${nested(10_000)}}`],
      ['metadata', `{"project_id":"m5","metadata":${nested(40)}}`],
    ];
    for (const [field, body] of bodies) {
      const r = await rawRequest(hub.port, 'POST', `${API}/projects`, json, body);
      assert.equal(r.status, 400, `${body.slice(0, 80)}: ${r.body}`);
      const e = r.json as ErrorJson;
      assert.equal(e.error.code, 'STATUS_ERR_INVALID');
      assert.equal(e.error.field, field);
    }
    // none of them was provisioned, and the listing still answers
    const list = await rawRequest(hub.port, 'GET', `${API}/projects?include_disabled=true`, auth);
    assert.equal(list.status, 200);
    assert.equal((list.json as { total: number }).total, 0);
    // a paired surrogate (an emoji) is text like any other
    const ok = await rawRequest(hub.port, 'POST', `${API}/projects`, json, '{"name":"\\ud83d\\ude00","metadata":{}}');
    assert.equal(ok.status, 201, ok.body);
  });

  test('gRPC CreateProject with such metadata or name: INVALID_ARGUMENT', async () => {
    const md = { token: HUB_TOKEN };
    await fails(
      call(client, 'CreateProject', { project_id: 'g1', metadata_json: `{"a":${nested(100)}}` }, md),
      grpc.status.INVALID_ARGUMENT,
    );
    await fails(
      call(client, 'CreateProject', { project_id: 'g2', name: 'x\u0000y' }, md),
      grpc.status.INVALID_ARGUMENT,
    );
  });

  test('a command payload nested deep or with a lone surrogate: 400 CMD_ERR_INVALID', async () => {
    const created = await rawRequest(hub.port, 'POST', `${API}/projects`, json, '{"project_id":"pay"}');
    assert.equal(created.status, 201);
    for (const payload of [nested(10_000), nested(33), '{"s":"\\ud800"}', '{"s":"a\\u0000"}', '["\\udfff"]']) {
      const r = await rawRequest(
        hub.port,
        'POST',
        `${API}/command/send`,
        json,
        `{"project_id":"pay","command_type":"x","offline_policy":"queue","payload":${payload}}`,
      );
      assert.equal(r.status, 400, `${payload.slice(0, 40)}: ${r.body}`);
      const e = r.json as ErrorJson;
      assert.equal(e.error.code, 'CMD_ERR_INVALID');
      assert.match(e.error.field ?? '', /^payload/);
    }
  });

  test('every one of these refusals is counted by code', async () => {
    const m = await rawRequest(hub.port, 'GET', '/metrics', auth);
    assert.match(m.body, /hub_http_refusals_total\{code="CMD_ERR_INVALID"\} \d+/);
    assert.match(m.body, /hub_http_refusals_total\{code="STATUS_ERR_INVALID"\} \d+/);
  });
});
