/**
 * Regression (issue 8, finding 7): a disabled project's password and a rotated-out password
 * (overlap 0) still logged in to the embedded broker for `auth_cache_ms`, and an agent already
 * connected when its project was disabled stayed connected. Now the status module publishes
 * STATUS.credentialsChanged and the broker drops the project's cached logins and disconnects
 * the sessions whose login no longer authenticates — at once, whatever the cache time.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import type { MqttClient } from 'mqtt';
import type { CreatedProject } from '../../modules/status/contract/topics.js';
import { FullHub, metricSum, WAIT_MS } from '../fuzz/uplink-hub.js';
import { connectClient } from '../helpers/mqtt.js';
import { withTimeout } from '../helpers/wait.js';

const login = (hub: FullHub, p: { project_id: string; mqtt_password: string }): Promise<MqttClient> =>
  connectClient(hub.brokerUrl, {
    clientId: `cred-${Math.random().toString(16).slice(2, 10)}`,
    username: p.project_id,
    password: p.mqtt_password,
    protocolVersion: 4,
  });

const closed = (c: MqttClient, what: string): Promise<unknown> =>
  withTimeout(new Promise((r) => (c.disconnected ? r(null) : c.once('close', () => r(null)))), WAIT_MS, what);

describe('credential changes take effect on the broker at once', () => {
  let hub: FullHub;
  let p: CreatedProject;
  before(async () => {
    // a cache far longer than the test: only the change event can make these pass
    hub = await FullHub.start({ broker: { auth_cache_ms: 600_000 } });
    p = await hub.provision('cred');
  });
  after(async () => {
    await hub?.stop();
  });

  test('disable: the connected agent is disconnected and its password refused; enable lets it back', async () => {
    const first = await login(hub, p);
    const again = await login(hub, p); // now cached
    await again.endAsync();
    const r = await hub.api('POST', `/projects/${p.project_id}/disable`, {});
    assert.equal(r.status, 200, JSON.stringify(r.json));
    await closed(first, 'the disabled project’s connection to close');
    await assert.rejects(login(hub, p), 'a disabled project’s password must not log in');
    assert.equal((await hub.api('POST', `/projects/${p.project_id}/enable`, {})).status, 200);
    const back = await login(hub, p);
    await back.endAsync();
  });

  test('rotate with overlap 0: the old password is refused and its session closed; the new one works', async () => {
    const old = await login(hub, p);
    const r = await hub.api('POST', `/projects/${p.project_id}/rotate`, { overlap_s: 0 });
    assert.equal(r.status, 200, JSON.stringify(r.json));
    const rotated = r.json as CreatedProject;
    await closed(old, 'the session logged in with the rotated-out password to close');
    await assert.rejects(login(hub, p), 'a rotated-out password must not log in');
    const fresh = await login(hub, rotated);
    await fresh.endAsync();
    const text = await hub.metrics();
    assert.ok(metricSum(text, 'hub_broker_denials_total{kind="auth",reason="revoked_disabled"}') >= 1);
    assert.ok(metricSum(text, 'hub_broker_denials_total{kind="auth",reason="bad_credentials"}') >= 2);
  });

  test('rotate with an overlap: the old password works until the overlap ends, then its session closes', async () => {
    const q = await hub.provision('overlap');
    const old = await login(hub, q);
    const r = await hub.api('POST', `/projects/${q.project_id}/rotate`, { overlap_s: 2 });
    assert.equal(r.status, 200, JSON.stringify(r.json));
    const during = await login(hub, q); // still valid during the overlap
    await during.endAsync();
    assert.ok(!old.disconnected, 'the old session lives through the overlap');
    await closed(old, 'the old session to close when the overlap ends');
    await assert.rejects(login(hub, q), 'the old password after the overlap');
    const fresh = await login(hub, r.json as CreatedProject);
    await fresh.endAsync();
  });
});
