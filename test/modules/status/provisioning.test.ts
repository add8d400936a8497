import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { deriveMqttPassword } from '../../../modules/shared/credentials.js';
import { verifySignature } from '../../../modules/shared/signing.js';
import {
  type CreatedProject,
  type ProjectCredentials,
  type ProjectView,
  STATUS,
} from '../../../modules/status/contract/topics.js';
import { ackPayload, DRIVERS, type Harness, isDown, startStatus } from './harness.js';

for (const driver of DRIVERS) {
  describe(`status provisioning on ${driver}`, () => {
    // One host for the file (PGlite opens slowly); every test uses its own project ids.
    let h: Harness;
    before(async () => {
      h = await startStatus(driver, { settings: { rotation_overlap_s: 120 } });
    });
    after(() => h.close());

    test('create shows the secret once; get and list never include it', async () => {
      const made = await h.request<CreatedProject>(STATUS.create, { name: 'Plant 7', metadata: { region: 'eu' } });
      assert.match(made.project_id, /^p-[0-9a-f]{12}$/);
      assert.match(made.secret, /^[0-9a-f]{64}$/);
      assert.equal(made.mqtt_username, made.project_id);
      assert.equal(made.mqtt_password, deriveMqttPassword(made.project_id, made.secret));

      const named = await h.create('plant-7');
      assert.equal(named.project_id, 'plant-7');
      assert.notEqual(named.secret, made.secret);

      const got = await h.request<ProjectView>(STATUS.get, { project_id: made.project_id });
      assert.equal(got.name, 'Plant 7');
      assert.equal(got.enabled, true);
      assert.equal(got.state, 'offline');
      assert.ok(!('secret' in got));
      assert.ok(!JSON.stringify(got).includes(made.secret));

      const list = await h.request<{ items: ProjectView[]; total: number }>(STATUS.list, { limit: 1000 });
      const ids = list.items.map((p) => p.project_id);
      assert.ok(ids.includes(made.project_id) && ids.includes('plant-7'));
      assert.equal(list.total, list.items.length);
      const text = JSON.stringify(list);
      assert.ok(!text.includes(made.secret) && !text.includes(named.secret) && !text.includes('"secret"'));
    });

    test('clear errors: exists, invalid id, unknown project, bad request fields', async () => {
      await h.create('dup');
      await assert.rejects(h.create('dup'), { code: 'STATUS_ERR_EXISTS' });
      await assert.rejects(h.create('a/b'), { code: 'STATUS_ERR_INVALID' });
      await assert.rejects(h.create('$sys'), { code: 'STATUS_ERR_INVALID' });
      await assert.rejects(h.request(STATUS.create, { projectId: 'typo' }), { code: 'STATUS_ERR_INVALID' });
      await assert.rejects(h.request(STATUS.get, { project_id: 'nope' }), { code: 'STATUS_ERR_NOT_FOUND' });
      await assert.rejects(h.request(STATUS.get, {}), { code: 'STATUS_ERR_INVALID' });
      await assert.rejects(h.request(STATUS.credentials, { project_id: 'nope' }), { code: 'STATUS_ERR_NOT_FOUND' });
      await assert.rejects(h.request(STATUS.disable, { project_id: 'nope' }), { code: 'STATUS_ERR_NOT_FOUND' });
      await assert.rejects(h.request(STATUS.rotate, { project_id: 'nope' }), { code: 'STATUS_ERR_NOT_FOUND' });
      await assert.rejects(h.request(STATUS.list, { limit: 0 }), { code: 'STATUS_ERR_INVALID' });
    });

    test('list pages in creation order and counts the total', async () => {
      const before = (await h.request<{ total: number }>(STATUS.list, {})).total;
      for (let i = 0; i < 5; i++) {
        h.clock.advance(1);
        await h.create(`pg-${i}`);
      }
      const page = await h.request<{ items: ProjectView[]; total: number }>(STATUS.list, {
        limit: 2,
        offset: before + 2,
      });
      assert.equal(page.total, before + 5);
      assert.deepEqual(
        page.items.map((p) => p.project_id),
        ['pg-2', 'pg-3'],
      );
    });

    test('disable hides a project from list, refuses its broker login; enable brings it back', async () => {
      const p = await h.create('dis-1');
      await h.create('dis-2');
      const login = { username: p.mqtt_username, password: p.mqtt_password };
      assert.deepEqual(await h.request(STATUS.authenticate, login), { ok: true, project_id: 'dis-1' });

      const view = await h.request<ProjectView>(STATUS.disable, { project_id: 'dis-1' });
      assert.equal(view.enabled, false);
      const shown = await h.request<{ items: ProjectView[]; total: number }>(STATUS.list, { limit: 1000 });
      const ids = shown.items.map((x) => x.project_id);
      assert.ok(!ids.includes('dis-1') && ids.includes('dis-2'));
      const all = await h.request<{ items: ProjectView[]; total: number }>(STATUS.list, {
        include_disabled: true,
        limit: 1000,
      });
      assert.equal(all.total, shown.total + 1);
      assert.ok(all.items.some((x) => x.project_id === 'dis-1' && !x.enabled));
      assert.deepEqual(await h.request(STATUS.authenticate, login), { ok: false });
      const creds = await h.request<ProjectCredentials>(STATUS.credentials, { project_id: 'dis-1' });
      assert.equal(creds.enabled, false);

      await h.request(STATUS.enable, { project_id: 'dis-1' });
      assert.deepEqual(await h.request(STATUS.authenticate, login), { ok: true, project_id: 'dis-1' });
    });

    test('authenticate: right password ok; wrong, unknown or malformed denied', async () => {
      const p = await h.create('auth-1');
      const ok = await h.request(STATUS.authenticate, { username: 'auth-1', password: p.mqtt_password });
      assert.deepEqual(ok, { ok: true, project_id: 'auth-1' });
      const denied = [
        // The last character changed to a different one (a fixed replacement would be the same 1 time in 16).
        { username: 'auth-1', password: `${p.mqtt_password.slice(0, -1)}${p.mqtt_password.endsWith('0') ? '1' : '0'}` },
        { username: 'auth-1', password: p.secret }, // the secret itself is not the password
        { username: 'auth-1', password: '' },
        { username: 'nobody', password: p.mqtt_password },
        { username: 'a/b', password: 'x' },
        { username: 42, password: 'x' },
        {},
      ];
      for (const body of denied) assert.deepEqual(await h.request(STATUS.authenticate, body), { ok: false });
    });

    test('rotate: both secrets verify during the overlap, only the new one after it', async () => {
      const old = await h.create('rot-1');
      const next = await h.request<CreatedProject>(STATUS.rotate, { project_id: 'rot-1', overlap_s: 60 });
      assert.notEqual(next.secret, old.secret);
      assert.equal(next.mqtt_password, deriveMqttPassword('rot-1', next.secret));

      const during = await h.request<ProjectCredentials>(STATUS.credentials, { project_id: 'rot-1' });
      assert.deepEqual(during.secrets, [next.secret, old.secret]);
      for (const pw of [old.mqtt_password, next.mqtt_password]) {
        assert.deepEqual(await h.request(STATUS.authenticate, { username: 'rot-1', password: pw }), {
          ok: true,
          project_id: 'rot-1',
        });
      }
      // an agent still on the old secret registers fine during the overlap; the hub answers with the new one
      let from = h.downlinks.items.length;
      h.register('rot-1', old.secret);
      let ack = await h.downlinks.wait(isDown('register_ack', 'rot-1'), 'ack (old secret)', from);
      assert.equal(ackPayload(ack).accepted, true);
      assert.ok(verifySignature(ack.parsed.msg, next.secret));

      const row = await h.host.db.get()('project').where({ project_id: 'rot-1' }).first();
      assert.equal(row.prev_secret, old.secret);
      assert.equal(new Date(row.prev_secret_expires_at).getTime(), h.clock.now() + 60_000);

      h.clock.advance(60_001);
      const after = await h.request<ProjectCredentials>(STATUS.credentials, { project_id: 'rot-1' });
      assert.deepEqual(after.secrets, [next.secret]);
      assert.deepEqual(await h.request(STATUS.authenticate, { username: 'rot-1', password: old.mqtt_password }), {
        ok: false,
      });
      assert.deepEqual(await h.request(STATUS.authenticate, { username: 'rot-1', password: next.mqtt_password }), {
        ok: true,
        project_id: 'rot-1',
      });
      from = h.downlinks.items.length;
      h.register('rot-1', old.secret);
      ack = await h.downlinks.wait(isDown('register_ack', 'rot-1'), 'ack (expired secret)', from);
      assert.deepEqual(ackPayload(ack), { accepted: false, reason: 'bad signature', heartbeat_interval_s: 5 });
    });

    test('rotate with overlap_s 0 retires the old secret at once; the config default applies otherwise', async () => {
      const old = await h.create('rot-2');
      const next = await h.request<CreatedProject>(STATUS.rotate, { project_id: 'rot-2', overlap_s: 0 });
      const creds = await h.request<ProjectCredentials>(STATUS.credentials, { project_id: 'rot-2' });
      assert.deepEqual(creds.secrets, [next.secret]);
      assert.deepEqual(await h.request(STATUS.authenticate, { username: 'rot-2', password: old.mqtt_password }), {
        ok: false,
      });
      const third = await h.request<CreatedProject>(STATUS.rotate, { project_id: 'rot-2' });
      const row = await h.host.db.get()('project').where({ project_id: 'rot-2' }).first();
      assert.equal(row.secret, third.secret);
      assert.equal(new Date(row.prev_secret_expires_at).getTime(), h.clock.now() + 120_000);
    });
  });
}
