import assert from 'node:assert/strict';
import net from 'node:net';
import { describe, test } from 'node:test';
import type { HubError } from '../../../core/errors.js';
import { webConfigSchema } from '../../../modules/web/config.js';
import { WEB, type WebInfo } from '../../../modules/web/contract/topics.js';
import { TEST_DATABASE_URL } from '../../helpers/db.js';
import { until } from '../../helpers/wait.js';
import { captureLog, type Json, startWeb, WAIT_MS, WsClient } from './harness.js';

const API = '/api/exchange-hub';

describe('auth', () => {
  test('with a token: 401 AUTH_ERR_TOKEN without it or with a wrong one, on /api and /metrics; open health and files', async () => {
    const w = await startWeb({ token: 'tok-1', web: { tokens: ['tok-1', 'tok-2'] } });
    try {
      w.domain.addProject('p1', 'online');
      for (const path of [`${API}/projects/online`, `${API}/nope`, '/metrics', '/api']) {
        const none = await w.call('GET', path, undefined, { token: '' });
        assert.equal(none.status, 401, path);
        assert.equal(none.json.error.code, 'AUTH_ERR_TOKEN');
        assert.equal(none.headers.get('www-authenticate'), 'Bearer');
        const wrong = await w.call('GET', path, undefined, { token: 'tok-3' });
        assert.equal(wrong.status, 401, path);
      }
      const bad = await w.call('GET', `${API}/projects/online`, undefined, {
        token: '',
        headers: { authorization: 'Basic dG9rLTE=' },
      });
      assert.equal(bad.status, 401);
      for (const token of ['tok-1', 'tok-2']) {
        const ok = await w.call('GET', `${API}/projects/online`, undefined, { token });
        assert.equal(ok.status, 200);
      }
      // a bad body never gets parsed before auth: 401 first
      const early = await w.call('POST', `${API}/command/send`, '{oops', { token: '' });
      assert.equal(early.status, 401);
      for (const path of ['/healthz', '/readyz', '/', '/app.js', '/openapi.json']) {
        const r = await w.call('GET', path, undefined, { token: '' });
        assert.notEqual(r.status, 401, path);
      }
      assert.equal(w.info.auth, true);
      assert.equal(w.info.host, '0.0.0.0', 'with a token the default is every interface');
    } finally {
      await w.stop();
    }
  });

  test('without a token: the API is open, bound to loopback only, and one warn line says so', async () => {
    const cap = captureLog();
    const w = await startWeb({ web: { host: '0.0.0.0' }, log: cap.log });
    try {
      assert.equal(w.info.auth, false);
      assert.equal(w.info.host, '127.0.0.1');
      const r = await w.call('GET', `${API}/projects/online`);
      assert.equal(r.status, 200);
      const warns = cap.lines.filter((l) => l.module === 'web' && l.level === 40);
      assert.equal(warns.length, 1);
      assert.match(
        warns[0].msg,
        /no API token configured \(HUB_API_TOKEN\): listening on loopback 127\.0\.0\.1 only; refusing 0\.0\.0\.0/,
      );
    } finally {
      await w.stop();
    }
  });

  test('the default config passes token: HUB_API_TOKEN or empty; empty means none, digits are a token', () => {
    assert.equal(webConfigSchema.parse({ token: '' }).token, '');
    assert.equal(webConfigSchema.parse({ token: 12345 }).token, '12345');
    assert.throws(() => webConfigSchema.parse({ colour: 'blue' }));
  });

  test('a taken port fails start with HOST_ERR_PORT_IN_USE naming the port and the variable', async () => {
    const blocker = net.createServer();
    await new Promise<void>((r) => blocker.listen(0, '127.0.0.1', r));
    const port = (blocker.address() as net.AddressInfo).port;
    try {
      await assert.rejects(startWeb({ web: { port } }), (err: HubError) => {
        assert.equal(err.code, 'HOST_ERR_PORT_IN_USE');
        // the test's file has a literal port: the hint names that key, not a variable the file does not use
        assert.match(
          err.message,
          new RegExp(`^port ${port} is in use \\(change modules\\.web\\.port in .*config\\.yml\\)$`),
        );
        return true;
      });
    } finally {
      await new Promise((r) => blocker.close(r));
    }
  });
});

describe('health, readiness, metrics, OpenAPI, dashboard files', () => {
  test('readyz: 200 when the database answers and the bridge is connected; 503 with the reasons otherwise', async () => {
    const w = await startWeb({
      databases: `databases:\n  default: { driver: pg, url: "${TEST_DATABASE_URL}" }\n  down: { driver: pg, url: "postgres://postgres@127.0.0.1:1/none" }\n`,
      web: { database: 'default' },
    });
    try {
      let r = await w.call('GET', '/readyz');
      assert.equal(r.status, 200);
      assert.deepEqual(r.json, { ready: true, checks: { database: { ok: true }, mqtt: { ok: true } } });
      w.domain.bridge = 'reconnecting';
      r = await w.call('GET', '/readyz');
      assert.equal(r.status, 503);
      assert.equal(r.json.checks.mqtt.ok, false);
      assert.match(r.json.checks.mqtt.reason, /reconnecting/);
      assert.equal(r.json.checks.database.ok, true);
      assert.equal((await w.call('GET', '/healthz')).status, 200, 'alive while not ready');
    } finally {
      await w.stop();
    }
    const down = await startWeb({
      databases: `databases:\n  down: { driver: pg, url: "postgres://postgres@127.0.0.1:1/none" }\n`,
      web: { database: 'down' },
      fake: { answer_bridge: false },
    });
    try {
      const r = await down.call('GET', '/readyz');
      assert.equal(r.status, 503);
      assert.equal(r.json.ready, false);
      assert.equal(r.json.checks.database.ok, false);
      assert.match(r.json.checks.database.reason, /^database "down" unreachable/);
      assert.equal(r.json.checks.mqtt.ok, false);
      assert.match(r.json.checks.mqtt.reason, /BUS_ERR_NO_RESPONDER|no subscriber/);
    } finally {
      await down.stop();
    }
  });

  test('/metrics has the bus, command, presence, MQTT, HTTP and WebSocket series', async () => {
    const w = await startWeb();
    try {
      w.domain.setState('m1', 'online');
      w.domain.addProject('m2', 'offline');
      const ws = await WsClient.open(w.base);
      const r1 = await w.call('POST', `${API}/command/sync`, { project_id: 'm1', command_type: 'echo', wait_ms: 5000 });
      assert.equal(r1.status, 200);
      await w.call('GET', `${API}/project/ghost/status`);
      await w.h.host.bus.drain(5000);
      const m = await w.call('GET', '/metrics');
      assert.equal(m.status, 200);
      assert.match(m.headers.get('content-type') ?? '', /^text\/plain/);
      const t = m.text;
      for (const series of [
        /hub_bus_mailbox_queued\{mailbox="web"\} \d+/,
        /hub_bus_mailbox_handled_total\{mailbox="web"\} [1-9]\d*/,
        /hub_bus_mailbox_dropped_total\{mailbox="fake"\} 0/,
        /hub_bus_published_total [1-9]/,
        /hub_command_stage_seconds_count\{stage="queue"\} 1/,
        /hub_command_stage_seconds_count\{stage="delivery"\} 1/,
        /hub_command_stage_seconds_count\{stage="execution"\} 1/,
        /hub_command_stage_seconds_count\{stage="total"\} 1/,
        /hub_command_stage_seconds_bucket\{le="0.005",stage="execution"\} 1/,
        /hub_commands_final_total\{status="completed"\} 1/,
        /hub_projects\{state="online"\} 1/,
        /hub_mqtt_publish_failures_total 2/,
        /hub_mqtt_uplinks_rejected_total\{code="PROTO_ERR_SIGNATURE"\} 3/,
        /hub_mqtt_connected 1/,
        /hub_http_requests_total\{method="POST",route="\/api\/exchange-hub\/command\/sync",status="200"\} 1/,
        /hub_http_requests_total\{method="GET",route="\/api\/exchange-hub\/project\/:project_id\/status",status="404"\} 1/,
        /hub_ws_clients 1/,
        /hub_sync_waiting 0/,
        /# TYPE hub_mqtt_publish_failures_total counter/,
        // prom-client's default process metrics (issue 15, item 9)
        /process_cpu_seconds_total \d/,
        /process_resident_memory_bytes \d+/,
        /nodejs_eventloop_lag_seconds \d/,
        /nodejs_heap_size_used_bytes \d+/,
        /# TYPE nodejs_gc_duration_seconds histogram/,
      ]) {
        assert.match(t, series);
      }
      await ws.close();
    } finally {
      await w.stop();
    }
  });

  test('presence counts are the status module’s (metrics/{name}), shown again after a web restart', async () => {
    const w = await startWeb();
    try {
      // projects that existed before the web module started
      w.domain.addProject('early-1', 'online');
      w.domain.addProject('early-2', 'offline');
      await w.h.host.restartModule('web');
      const info = await w.h.host.bus.request<WebInfo>(WEB.info('web'), {});
      const metrics = () => fetch(`${info.url}/metrics`).then((r) => r.text());
      // the status module's own series (test/modules/status/metrics.test.ts), read at scrape time
      await until(
        async () => /hub_projects\{state="offline"\} 1/.test(await metrics()),
        WAIT_MS,
        'presence counts from the status list',
      );
      assert.match(await metrics(), /hub_projects\{state="online"\} 1/);
      // the process series once, however often the web module was made (one registry per process)
      assert.equal((await metrics()).match(/^# TYPE process_cpu_seconds_total /gm)?.length, 1);
      w.domain.setState('early-2', 'online');
      await w.h.host.bus.drain(5000);
      assert.match(await metrics(), /hub_projects\{state="online"\} 2/);
    } finally {
      await w.stop();
    }
  });

  test('/openapi.json is OpenAPI 3.1 with every path, built from the route schemas', async () => {
    const w = await startWeb({ token: 't' });
    try {
      const r = await w.call('GET', '/openapi.json', undefined, { token: '' });
      assert.equal(r.status, 200);
      const doc = r.json;
      assert.equal(doc.openapi, '3.1.0');
      for (const [path, method] of [
        [`${API}/command/send`, 'post'],
        [`${API}/command/sync`, 'post'],
        [`${API}/command/{command_id}`, 'get'],
        [`${API}/command/{command_id}/cancel`, 'post'],
        [`${API}/project/{project_id}/status`, 'get'],
        [`${API}/projects/online`, 'get'],
        [`${API}/projects`, 'post'],
        [`${API}/projects`, 'get'],
        [`${API}/projects/{project_id}/rotate`, 'post'],
        [`${API}/commands`, 'get'],
        [`${API}/commands/dead`, 'get'],
        [`${API}/commands/dead/{command_id}/replay`, 'post'],
        [`${API}/modules`, 'get'],
        [`${API}/modules/{name}/restart`, 'post'],
        [`${API}/jobs`, 'post'],
        [`${API}/jobs`, 'get'],
        [`${API}/jobs/{job_id}`, 'get'],
        [`${API}/jobs/{job_id}/cancel`, 'post'],
        [`${API}/ws`, 'get'],
        ['/healthz', 'get'],
        ['/readyz', 'get'],
        ['/metrics', 'get'],
      ]) {
        assert.ok(doc.paths[path]?.[method], `${method} ${path}`);
      }
      const send = doc.paths[`${API}/command/send`].post;
      const body = send.requestBody.content['application/json'].schema;
      const schema = body.$ref ? doc.components.schemas[body.$ref.split('/').at(-1)] : body;
      assert.equal(schema.additionalProperties, false, 'strict bodies are documented as such');
      assert.deepEqual(schema.required.sort(), ['command_type', 'project_id']);
      assert.ok(send.responses['202']);
      assert.ok(send.responses['409']);
      assert.ok(doc.paths[`${API}/command/sync`].post.responses['504']);
      assert.ok(doc.components.schemas.CommandView);
      assert.ok(doc.components.schemas.CommandDetail);
      const list = doc.paths[`${API}/commands`].get.parameters.map((p: Json) => p.name);
      assert.deepEqual(list, ['project_id', 'status', 'command_type', 'job_id', 'since', 'until', 'limit', 'offset']);
      const ids = Object.values(doc.paths).flatMap((ops) =>
        Object.values(ops as Json).map((op: Json) => op.operationId),
      );
      assert.equal(new Set(ids).size, ids.length, `operationIds are unique: ${ids.join(', ')}`);
      assert.deepEqual(doc.paths['/healthz'].get.security, []);
      assert.deepEqual(doc.security, [{ bearer: [] }]);
      // every $ref resolves
      const refs = JSON.stringify(doc).match(/"\$ref":"[^"]+"/g) ?? [];
      for (const ref of refs) {
        const name = ref.split('/').at(-1)!.replace('"', '');
        assert.ok(doc.components.schemas[name], ref);
      }
    } finally {
      await w.stop();
    }
  });

  test('dashboard files: index, script and style with a strict CSP; no escape from the directory', async () => {
    const w = await startWeb();
    try {
      const index = await w.call('GET', '/');
      assert.equal(index.status, 200);
      assert.match(index.headers.get('content-type') ?? '', /text\/html/);
      assert.match(index.headers.get('content-security-policy') ?? '', /default-src 'self'/);
      assert.match(index.text, /<script src="app\.js"/);
      assert.equal((await w.call('GET', '/app.js')).status, 200);
      assert.equal((await w.call('GET', '/style.css')).status, 200);
      for (const bad of ['/../package.json', '/%2e%2e/package.json', '/..%2fpackage.json', '/x%00.js', '/nope.js']) {
        const r = await w.call('GET', bad);
        assert.equal(r.status, 404, bad);
      }
    } finally {
      await w.stop();
    }
  });

  test('restarting the web module 30 times leaves no server, socket or timer behind', async () => {
    const w = await startWeb();
    try {
      const count = () =>
        process
          .getActiveResourcesInfo()
          .filter((r) => r === 'TCPServerWrap' || r === 'TCPSocketWrap' || r === 'Timeout').length;
      // the same point of each round: one server, one WebSocket, one keep-alive HTTP connection
      const counts: number[] = [];
      for (let i = 0; i < 30; i++) {
        await w.h.host.restartModule('web');
        const info = await w.h.host.bus.request<WebInfo>(WEB.info('web'), {});
        const c = await WsClient.open(info.url);
        c.send({ op: 'subscribe', all: true });
        await c.next((m) => m.op === 'subscribed');
        assert.equal((await fetch(`${info.url}/healthz`)).status, 200);
        counts.push(count());
      }
      assert.ok(counts[29] <= counts[4], `active handles grew from ${counts[4]} to ${counts[29]}: ${counts.join(' ')}`);
    } finally {
      await w.stop();
    }
  });
});
