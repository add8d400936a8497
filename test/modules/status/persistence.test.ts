import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { type ProjectView, STATUS } from '../../../modules/status/contract/topics.js';
import { DRIVERS, type Harness, isDown, newDb, startStatus, type TestDb } from './harness.js';

for (const driver of DRIVERS) {
  describe(`status persistence on ${driver}`, () => {
    let h: Harness;
    before(async () => {
      h = await startStatus(driver, { settings: { flush_interval_ms: 1000 } });
    });
    after(() => h.close());

    test('1000 heartbeats from 100 projects are written in a few batched UPSERTs, not one write each', async () => {
      const secrets = new Map<string, string>();
      for (let i = 0; i < 100; i++) {
        const p = await h.create(`fl-${String(i).padStart(3, '0')}`);
        secrets.set(p.project_id, p.secret);
      }
      for (const [pid, secret] of secrets) await h.bringOnline(pid, secret);
      await h.flushed();

      const db = h.host.db.get();
      let upserts = 0;
      let statements = 0;
      const onQuery = (q: { sql: string }) => {
        statements++;
        if (/^\s*insert into "?project_status"?\s/i.test(q.sql)) upserts++;
      };
      db.on('query', onQuery);
      try {
        const before = (await h.stats()).heartbeats as number;
        h.clock.advance(1_000);
        for (let round = 0; round < 10; round++) {
          for (const pid of secrets.keys()) h.data(pid, 'heartbeat', { metrics: { round } });
        }
        const s = await h.stats();
        assert.equal(s.heartbeats, before + 1000);
        await h.flushed();
      } finally {
        db.off('query', onQuery);
      }
      assert.ok(upserts >= 1, 'the heartbeats were written');
      assert.ok(upserts < 100, `${upserts} UPSERT statements for 1000 heartbeats`);
      assert.ok(statements < 200, `${statements} statements in all`);

      const rows = await db('project_status').where('project_id', 'like', 'fl-%');
      assert.equal(rows.length, 100);
      for (const r of rows) {
        assert.equal(r.state, 'online');
        assert.equal(new Date(r.last_heartbeat_at).getTime(), h.clock.now());
        assert.deepEqual(r.metrics, { round: 9 });
      }
    });

    test('a restarted status module keeps presence and goes on without asking agents to register again', async () => {
      const p = await h.create('rs-mod');
      await h.bringOnline('rs-mod', p.secret);
      const evFrom = h.events.items.length;
      await h.host.restartModule('status');
      assert.equal((await h.request<ProjectView>(STATUS.get, { project_id: 'rs-mod' })).state, 'online');

      const dl = h.downlinks.items.length;
      h.data('rs-mod', 'heartbeat', {}, { secret: p.secret });
      const s = await h.stats();
      assert.equal(s.presence.online >= 1, true);
      assert.equal(h.downlinks.items.slice(dl).filter(isDown('reregister', 'rs-mod')).length, 0);
      assert.ok(!h.events.items.slice(evFrom).some((e) => e.project_id === 'rs-mod'), 'no state change');
    });

    test('restarting the module many times leaks no timers', async () => {
      const timers = () => process.getActiveResourcesInfo().filter((r) => r === 'Timeout').length;
      await h.host.restartModule('status');
      const base = timers();
      for (let i = 0; i < 30; i++) await h.host.restartModule('status');
      assert.ok(timers() <= base + 2, `timers went from ${base} to ${timers()}`);
      const p = await h.create('rs-alive');
      await h.bringOnline('rs-alive', p.secret);
    });
  });

  describe(`status across a hub restart on ${driver}`, () => {
    let db: TestDb;
    before(async () => {
      db = await newDb(driver);
    });
    after(() => db.cleanup());

    test('a restarted hub continues presence and counts silence from its start, however long it was down', async () => {
      const first = await startStatus(driver, { db });
      const p = await first.create('rs-hub');
      const q = await first.create('rs-hub-2');
      await first.bringOnline('rs-hub', p.secret);
      await first.bringOnline('rs-hub-2', q.secret);
      first.clock.advance(20_000);
      first.data('rs-hub-2', 'heartbeat', {}, { secret: q.secret }); // rs-hub's last heartbeat stays 20 s older
      await first.stats();
      await first.stopHost(); // the last changes are flushed on stop

      const second = await first.restartHost();
      try {
        assert.equal((await second.request<ProjectView>(STATUS.get, { project_id: 'rs-hub' })).state, 'online');
        assert.equal((await second.request<ProjectView>(STATUS.get, { project_id: 'rs-hub-2' })).state, 'online');
        assert.equal(second.events.items.length, 0);
        const dl = second.downlinks.items.length;
        second.data('rs-hub-2', 'heartbeat', {}, { secret: q.secret });
        const s = await second.stats();
        assert.equal(s.heartbeats, 1);
        assert.equal(second.downlinks.items.slice(dl).filter(isDown('reregister')).length, 0);
        // secrets come from the database too
        assert.deepEqual(await second.request(STATUS.authenticate, { username: 'rs-hub', password: p.mqtt_password }), {
          ok: true,
          project_id: 'rs-hub',
        });
      } finally {
        await second.stopHost();
      }

      // down for 15 s more: rs-hub's last heartbeat is now 35 s old, rs-hub-2's 15 s. Nobody
      // heard the agents while the hub was down (their heartbeats wait in the broker for its
      // session), so both are continued, and each has a whole timeout from the start to be heard:
      // a restart longer than the timeout must not flap the fleet
      second.clock.advance(15_000);
      const third = await second.restartHost();
      try {
        await third.sweepPassed();
        assert.equal((await third.request<ProjectView>(STATUS.get, { project_id: 'rs-hub' })).state, 'online');
        assert.equal((await third.request<ProjectView>(STATUS.get, { project_id: 'rs-hub-2' })).state, 'online');
        assert.equal(third.events.items.length, 0, 'no state change at the start');
        // rs-hub-2's agent is alive and heard half a timeout later; rs-hub's never is
        third.clock.advance(15_000);
        third.data('rs-hub-2', 'heartbeat', {}, { secret: q.secret });
        await third.stats();
        third.clock.advance(15_001);
        const silent = await third.events.wait((e) => e.project_id === 'rs-hub', 'rs-hub silent since the start', 0);
        assert.deepEqual([silent.previous, silent.state, silent.reason], ['online', 'offline', 'heartbeat timeout']);
        assert.equal((await third.request<ProjectView>(STATUS.get, { project_id: 'rs-hub-2' })).state, 'online');
        await third.flushed();
        const hist = await third.host.db.get()('project_status_history').where({ project_id: 'rs-hub' }).orderBy('id');
        assert.deepEqual(
          hist.map((r) => r.to_state),
          ['connecting', 'verifying', 'online', 'offline'],
        );
      } finally {
        await third.close();
      }
    });
  });
}
