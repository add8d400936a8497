import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { verifySignature } from '../../../modules/shared/signing.js';
import { type ProjectView, STATUS } from '../../../modules/status/contract/topics.js';
import { DRIVERS, type Harness, isDown, startStatus } from './harness.js';

const TIMEOUT_MS = 30_000;

for (const driver of DRIVERS) {
  describe(`status presence on ${driver}`, () => {
    let h: Harness;
    before(async () => {
      h = await startStatus(driver, { settings: { heartbeat_timeout_ms: TIMEOUT_MS } });
    });
    after(() => h.close());

    const stateOf = async (pid: string) => (await h.request<ProjectView>(STATUS.get, { project_id: pid })).state;

    test('heartbeats keep a project online; silence past the timeout takes it offline', async () => {
      const p = await h.create('pr-hb');
      await h.bringOnline('pr-hb', p.secret);
      for (let i = 0; i < 3; i++) {
        h.clock.advance(TIMEOUT_MS - 5_000);
        h.data('pr-hb', 'heartbeat', { uptime_s: i, metrics: { cpu: i } }, { secret: p.secret });
        await h.stats(); // the status mailbox is in order: the heartbeat has been handled
        await h.sweepPassed();
        assert.equal(await stateOf('pr-hb'), 'online');
      }
      const view = await h.request<ProjectView>(STATUS.get, { project_id: 'pr-hb' });
      assert.deepEqual(view.metrics, { cpu: 2 });
      assert.equal(view.last_heartbeat_at, new Date(h.clock.now()).toISOString());

      const from = h.events.items.length;
      h.clock.advance(TIMEOUT_MS + 1);
      const off = await h.events.wait((e) => e.project_id === 'pr-hb' && e.state === 'offline', 'offline', from);
      assert.equal(off.reason, 'heartbeat timeout');
      assert.equal(off.previous, 'online');
    });

    test('a heartbeat while offline (or unknown) asks the agent to register again, at most once per interval', async () => {
      const p = await h.create('pr-rr');
      let from = h.downlinks.items.length;
      h.data('pr-rr', 'heartbeat', {}, { secret: p.secret });
      const rr = await h.downlinks.wait(isDown('reregister', 'pr-rr'), 'reregister', from);
      assert.ok(verifySignature(rr.parsed.msg, p.secret));

      h.data('pr-rr', 'heartbeat', {});
      const s = await h.stats();
      assert.ok(s.reregisters_throttled >= 1);
      assert.equal(h.downlinks.items.slice(from).filter(isDown('reregister', 'pr-rr')).length, 1);

      h.clock.advance(5_000); // heartbeat_interval_s
      from = h.downlinks.items.length;
      h.data('pr-rr', 'heartbeat', {});
      await h.downlinks.wait(isDown('reregister', 'pr-rr'), 'second reregister', from);

      // a project the hub has never heard of: unsigned, since there is no secret to sign with
      from = h.downlinks.items.length;
      h.data('pr-ghost', 'heartbeat', {});
      const ghost = await h.downlinks.wait(isDown('reregister', 'pr-ghost'), 'reregister (unknown)', from);
      assert.equal(ghost.parsed.msg.signature, undefined);

      // and after an online project went silent
      await h.bringOnline('pr-rr', p.secret);
      h.clock.advance(TIMEOUT_MS + 1);
      await h.events.wait((e) => e.project_id === 'pr-rr' && e.state === 'offline', 'offline', h.events.items.length);
      from = h.downlinks.items.length;
      h.data('pr-rr', 'heartbeat', {}, { secret: p.secret });
      await h.downlinks.wait(isDown('reregister', 'pr-rr'), 'reregister after timeout', from);
    });

    test('disconnect → disconnecting → offline', async () => {
      const p = await h.create('pr-bye');
      await h.bringOnline('pr-bye', p.secret);
      const from = h.events.items.length;
      h.data('pr-bye', 'disconnect', { reason: 'shutdown' }, { secret: p.secret });
      const off = await h.events.wait((e) => e.project_id === 'pr-bye' && e.state === 'offline', 'offline', from);
      const seen = h.events.items.slice(from).filter((e) => e.project_id === 'pr-bye');
      assert.deepEqual(
        seen.map((e) => e.state),
        ['disconnecting', 'offline'],
      );
      assert.equal(off.reason, 'disconnect: shutdown');
    });

    test('a stale last will from an earlier connection is ignored; the current one counts', async () => {
      const p = await h.create('pr-will');
      const registeredAt = h.clock.now();
      await h.bringOnline('pr-will', p.secret);
      // last will of a connection that ended a minute before this session registered
      h.data('pr-will', 'disconnect', { reason: 'connection lost' }, { secret: p.secret, now: registeredAt - 60_000 });
      // the will of an earlier agent process (another instance id), however recent
      h.data('pr-will', 'disconnect', { reason: 'last_will', instance_id: 'wd-host-old-1' }, { secret: p.secret });
      const s = await h.stats();
      assert.equal(s.stale_wills, 2);
      assert.equal(await stateOf('pr-will'), 'online');

      // the will of the current connection, composed when it connected (just before it registered),
      // arrives late and old: still accepted (the clock window does not apply to disconnects)
      for (let i = 0; i < 13; i++) {
        h.clock.advance(TIMEOUT_MS - 5_000);
        h.data('pr-will', 'heartbeat', {}, { secret: p.secret });
        await h.stats();
      }
      assert.ok(h.clock.now() - registeredAt > 300_000);
      const from = h.events.items.length;
      h.data(
        'pr-will',
        'disconnect',
        { reason: 'connection lost', instance_id: 'wd-host-pr-will' },
        { secret: p.secret, now: registeredAt - 500 },
      );
      const off = await h.events.wait((e) => e.project_id === 'pr-will' && e.state === 'offline', 'offline', from);
      assert.equal(off.reason, 'disconnect: connection lost');
    });

    test('monitor and alert are stored and published', async () => {
      const p = await h.create('pr-mon');
      const from = h.monitors.items.length;
      h.data('pr-mon', 'monitor', { metrics: { cpu: 0.42, mem_mb: 512 } }, { secret: p.secret });
      const m = await h.monitors.wait((e) => e.project_id === 'pr-mon', 'monitor event', from);
      assert.deepEqual(m.metrics, { cpu: 0.42, mem_mb: 512 });
      assert.equal(m.at, h.clock.now());

      h.data('pr-mon', 'alert', { level: 'critical', message: 'disk full', mount: '/' });
      const a = await h.alerts.wait((e) => e.project_id === 'pr-mon', 'alert event', 0);
      assert.deepEqual(a.alert, { level: 'critical', message: 'disk full', mount: '/' });

      const view = await h.request<ProjectView>(STATUS.get, { project_id: 'pr-mon' });
      assert.deepEqual(view.metrics, { cpu: 0.42, mem_mb: 512 });
      assert.equal(view.last_alert?.message, 'disk full');

      await h.flushed();
      const row = await h.host.db.get()('project_status').where({ project_id: 'pr-mon' }).first();
      assert.deepEqual(row.metrics, { cpu: 0.42, mem_mb: 512 });
      assert.equal(row.last_alert.level, 'critical');
      assert.equal(new Date(row.metrics_at).getTime(), h.clock.now());
    });

    test('signed data that fails verification is counted and dropped', async () => {
      const p = await h.create('pr-sig');
      await h.bringOnline('pr-sig', p.secret);
      const before = await h.stats();
      h.clock.advance(TIMEOUT_MS - 5_000);
      h.data('pr-sig', 'heartbeat', {}, { secret: 'not-the-secret' });
      h.data('pr-sig', 'heartbeat', {}, { secret: p.secret, now: h.clock.now() - 400_000 });
      h.data('pr-sig', 'monitor', { metrics: { x: 1 } }, { secret: 'not-the-secret' });
      const s = await h.stats();
      assert.equal(s.uplinks_rejected, before.uplinks_rejected + 3, 'refused by the bridge, counted on the project');
      const view = await h.request<ProjectView>(STATUS.get, { project_id: 'pr-sig' });
      assert.equal(view.metrics, null);
      // none of them refreshed presence
      const from = h.events.items.length;
      h.clock.advance(5_001);
      await h.events.wait((e) => e.project_id === 'pr-sig' && e.state === 'offline', 'offline', from);
    });

    test('data from a disabled project is dropped; disabling an online project takes it offline', async () => {
      const p = await h.create('pr-off');
      await h.bringOnline('pr-off', p.secret);
      const from = h.events.items.length;
      await h.request(STATUS.disable, { project_id: 'pr-off' });
      const off = await h.events.wait((e) => e.project_id === 'pr-off' && e.state === 'offline', 'offline', from);
      assert.equal(off.reason, 'project disabled');
      const before = (await h.stats()).uplinks_rejected;
      const dl = h.downlinks.items.length;
      h.data('pr-off', 'heartbeat', {}, { secret: p.secret });
      const s = await h.stats();
      assert.equal(s.uplinks_rejected, before + 1, 'refused by the bridge (PROTO_ERR_PROJECT_DISABLED)');
      const view = await h.request<ProjectView>(STATUS.get, { project_id: 'pr-off' });
      assert.equal(view.last_rejected?.code, 'PROTO_ERR_PROJECT_DISABLED');
      assert.equal(h.downlinks.items.slice(dl).filter(isDown('reregister', 'pr-off')).length, 0);
    });
  });

  describe(`status presence with require_data_signature on ${driver}`, () => {
    test('unsigned data is refused; signed data is accepted', async () => {
      const h = await startStatus(driver, { settings: { require_data_signature: true } });
      try {
        const p = await h.create('pr-strict');
        await h.bringOnline('pr-strict', p.secret);
        h.data('pr-strict', 'monitor', { metrics: { a: 1 } });
        let s = await h.stats();
        assert.equal(s.uplinks_rejected, 1);
        const view = await h.request<ProjectView>(STATUS.get, { project_id: 'pr-strict' });
        assert.equal(view.last_rejected?.code, 'PROTO_ERR_UNSIGNED');
        h.data('pr-strict', 'monitor', { metrics: { a: 2 } }, { secret: p.secret });
        const m = await h.monitors.wait((e) => e.project_id === 'pr-strict', 'monitor', 0);
        assert.deepEqual(m.metrics, { a: 2 });
        s = await h.stats();
        assert.equal(s.monitors, 1);
      } finally {
        await h.close();
      }
    });
  });
}

describe('reregister asks are limited fleet-wide (reregister_per_s)', () => {
  let h: Harness;
  before(async () => {
    h = await startStatus('pglite', { settings: { reregister_per_s: 3 } });
  });
  after(() => h.close());

  test('a fleet heard while offline is asked at the limit pace; the rest at a later heartbeat', async () => {
    const pids = ['rl-0', 'rl-1', 'rl-2', 'rl-3', 'rl-4'];
    const secrets = new Map<string, string>();
    for (const pid of pids) secrets.set(pid, (await h.create(pid)).secret);
    const asked = (from: number) =>
      new Set(
        h.downlinks.items
          .slice(from)
          .filter(isDown('reregister'))
          .map((d) => d.parsed.msg.project_id as string),
      );

    let from = h.downlinks.items.length;
    for (const pid of pids) h.data(pid, 'heartbeat', {}, { secret: secrets.get(pid) });
    let s = await h.stats();
    assert.equal(s.reregisters_sent, 3);
    assert.equal(s.reregisters_deferred, 2);
    await h.downlinks.wait(() => asked(from).size === 3, 'three reregister asks', from);
    const first = asked(from);

    // a second later every agent heartbeats again: the two left out are asked now, the three
    // asked are within their heartbeat interval (throttled per project, as before)
    h.clock.advance(1_000);
    from = h.downlinks.items.length;
    for (const pid of pids) h.data(pid, 'heartbeat', {}, { secret: secrets.get(pid) });
    s = await h.stats();
    assert.equal(s.reregisters_sent, 5);
    assert.equal(s.reregisters_throttled, 3);
    await h.downlinks.wait(() => asked(from).size === 2, 'the two deferred asks', from);
    assert.deepEqual([...asked(from), ...first].sort(), pids);
  });
});
