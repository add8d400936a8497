import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { BRIDGE } from '../../../modules/mqtt-bridge/contract/topics.js';
import { messageDownTopic, newMessageId, TOPIC_COMMAND_UP } from '../../../modules/shared/protocol.js';
import { verifySignature } from '../../../modules/shared/signing.js';
import { type ProjectView, STATUS } from '../../../modules/status/contract/topics.js';
import { ackPayload, DRIVERS, type Harness, isDown, startStatus } from './harness.js';

for (const driver of DRIVERS) {
  describe(`status registration handshake on ${driver}`, () => {
    let h: Harness;
    before(async () => {
      h = await startStatus(driver, { settings: { heartbeat_interval_s: 7 } });
    });
    after(() => h.close());

    /** Sends a register and returns the register_ack that answers it. */
    async function registerAndAck(pid: string, secret: string, opts: Parameters<Harness['register']>[2] = {}) {
      const from = h.downlinks.items.length;
      h.register(pid, secret, opts);
      return h.downlinks.wait(isDown('register_ack', pid), `register_ack for ${pid}`, from);
    }

    test('register → signed register_ack → register_complete → online, recorded in the database', async () => {
      const p = await h.create('hs-ok');
      const evFrom = h.events.items.length;
      const ack = await registerAndAck('hs-ok', p.secret, { instance: 'wd-box1-4242' });
      assert.equal(ack.topic, messageDownTopic('hs-ok'));
      assert.equal(ack.qos, 1);
      assert.deepEqual(ackPayload(ack), { accepted: true, heartbeat_interval_s: 7 });
      assert.ok(verifySignature(ack.parsed.msg, p.secret), 'register_ack is signed with the project secret');
      assert.ok(!verifySignature(ack.parsed.msg, 'another secret'));

      h.data('hs-ok', 'register_complete', { instance_id: 'wd-box1-4242' }, { secret: p.secret });
      await h.events.wait((e) => e.project_id === 'hs-ok' && e.state === 'online', 'online', evFrom);
      const seen = h.events.items.slice(evFrom).filter((e) => e.project_id === 'hs-ok');
      assert.deepEqual(
        seen.map((e) => [e.previous, e.state]),
        [
          ['offline', 'connecting'],
          ['connecting', 'verifying'],
          ['verifying', 'online'],
        ],
      );

      const view = await h.request<ProjectView>(STATUS.get, { project_id: 'hs-ok' });
      assert.equal(view.state, 'online');
      assert.equal(view.instance_id, 'wd-box1-4242');
      assert.equal(view.agent_version, '2.1.0');
      const online = await h.request<{ items: ProjectView[] }>(STATUS.online, {});
      assert.ok(online.items.some((x) => x.project_id === 'hs-ok'));
      const creds = await h.request<{ state: string }>(STATUS.credentials, { project_id: 'hs-ok' });
      assert.equal(creds.state, 'online');

      await h.flushed();
      const db = h.host.db.get();
      const row = await db('project_status').where({ project_id: 'hs-ok' }).first();
      assert.equal(row.state, 'online');
      assert.equal(row.instance_id, 'wd-box1-4242');
      assert.equal(row.agent_version, '2.1.0');
      assert.equal(row.registration.node_version, 'v20.11.0');
      assert.deepEqual(row.registration.capabilities, ['host_exec']);
      assert.deepEqual(row.registration.metadata, { site: 'lab' });
      const history = await db('project_status_history').where({ project_id: 'hs-ok' }).orderBy('id');
      assert.deepEqual(
        history.map((r) => r.to_state),
        ['connecting', 'verifying', 'online'],
      );
    });

    test('refusals carry the reason: bad signature, stale timestamp, replayed message, unknown, disabled', async () => {
      const p = await h.create('hs-bad');
      const evFrom = h.events.items.length;

      const forged = await registerAndAck('hs-bad', 'f'.repeat(64));
      assert.deepEqual(ackPayload(forged), { accepted: false, reason: 'bad signature', heartbeat_interval_s: 7 });
      assert.ok(verifySignature(forged.parsed.msg, p.secret));

      const stale = await registerAndAck('hs-bad', p.secret, { now: h.clock.now() - 300_001 });
      assert.equal(ackPayload(stale).reason, 'timestamp outside the allowed window');
      const ahead = await registerAndAck('hs-bad', p.secret, { now: h.clock.now() + 300_001 });
      assert.equal(ackPayload(ahead).reason, 'timestamp outside the allowed window');

      const id = newMessageId();
      const first = await registerAndAck('hs-bad', p.secret, { messageId: id });
      assert.equal(ackPayload(first).accepted, true);
      const replayed = await registerAndAck('hs-bad', p.secret, { messageId: id });
      assert.equal(ackPayload(replayed).accepted, false);
      assert.equal(ackPayload(replayed).reason, 'message replayed');

      const unknown = await registerAndAck('hs-nobody', p.secret);
      assert.deepEqual(ackPayload(unknown), { accepted: false, reason: 'unknown project', heartbeat_interval_s: 7 });
      assert.equal(unknown.parsed.msg.signature, undefined, 'no secret to sign with');

      const d = await h.create('hs-disabled');
      await h.request(STATUS.disable, { project_id: 'hs-disabled' });
      const disabled = await registerAndAck('hs-disabled', d.secret);
      assert.deepEqual(ackPayload(disabled), { accepted: false, reason: 'project disabled', heartbeat_interval_s: 7 });
      assert.ok(verifySignature(disabled.parsed.msg, d.secret));

      // the bridge refused them before status saw them: a refusal is an answer, never a presence change
      const states = h.events.items
        .slice(evFrom)
        .filter((e) => e.project_id === 'hs-bad')
        .map((e) => e.state);
      assert.deepEqual(states, ['connecting', 'verifying'], 'only the accepted register moved the project');
      assert.ok(!h.events.items.some((e) => e.project_id === 'hs-nobody' || e.project_id === 'hs-disabled'));
      const s = await h.stats();
      assert.ok(s.registers_refused >= 6);
      assert.ok(s.registers_rejected >= 6, 'each refusal came from the bridge (mqtt/rejected)');
    });

    test('a refused register does not knock an online project offline', async () => {
      const p = await h.create('hs-keep');
      await h.bringOnline('hs-keep', p.secret);
      const evFrom = h.events.items.length;
      const forged = await registerAndAck('hs-keep', 'e'.repeat(64));
      assert.equal(ackPayload(forged).reason, 'bad signature');
      await h.stats();
      assert.deepEqual(
        h.events.items.slice(evFrom).filter((e) => e.project_id === 'hs-keep'),
        [],
        'no presence change',
      );
      const view = await h.request<ProjectView>(STATUS.get, { project_id: 'hs-keep' });
      assert.equal(view.state, 'online');
      assert.equal(view.rejected_uplinks, 1, 'the refusal is on the project');
    });

    test('message ids are per project: another project using the same id is not refused as a replay', async () => {
      const a = await h.create('hs-ids-a');
      const b = await h.create('hs-ids-b');
      const id = newMessageId();
      assert.equal(ackPayload(await registerAndAck('hs-ids-a', a.secret, { messageId: id })).accepted, true);
      const other = await registerAndAck('hs-ids-b', b.secret, { messageId: id });
      assert.deepEqual(ackPayload(other), { accepted: true, heartbeat_interval_s: 7 });
    });

    test('a second copy of a register while its handshake is written changes nothing', async () => {
      // The broker delivers a register again to a new connection of the hub's session when the
      // first copy's PUBACK had not gone out: both copies pass the bridge before either is
      // committed to its replay cache, so status sees the same message twice.
      const p = await h.create('hs-twice');
      const from = h.downlinks.items.length;
      const evFrom = h.events.items.length;
      const before = await h.stats();
      const msg = h.registerMessage('hs-twice', p.secret);
      const ev = { msg, topic: TOPIC_COMMAND_UP, received_at: h.clock.now() };
      await h.host.bus.publish(BRIDGE.uplink('hs-twice', 'command', 'register'), ev);
      await h.host.bus.publish(BRIDGE.uplink('hs-twice', 'command', 'register'), ev);
      await h.downlinks.wait(isDown('register_ack', 'hs-twice'), 'register_ack', from);
      const s = await h.stats();
      assert.equal(s.registers_duplicate, before.registers_duplicate + 1);
      assert.equal(s.registers_accepted, before.registers_accepted + 1);
      await h.flushed();
      assert.equal(h.downlinks.items.slice(from).filter(isDown('register_ack', 'hs-twice')).length, 1, 'one answer');
      assert.deepEqual(
        h.events.items
          .slice(evFrom)
          .filter((e) => e.project_id === 'hs-twice')
          .map((e) => e.state),
        ['connecting', 'verifying'],
      );
      // once online, a copy of the session's own register does not start a handshake either
      h.data('hs-twice', 'register_complete', {}, { secret: p.secret });
      await h.events.wait((e) => e.project_id === 'hs-twice' && e.state === 'online', 'online', evFrom);
      const onlineFrom = h.events.items.length;
      await h.host.bus.publish(BRIDGE.uplink('hs-twice', 'command', 'register'), ev);
      const after = await h.stats();
      assert.equal(after.registers_duplicate, before.registers_duplicate + 2);
      assert.deepEqual(
        h.events.items.slice(onlineFrom).filter((e) => e.project_id === 'hs-twice'),
        [],
      );
    });

    test('register_complete without an accepted registration asks the agent to register again', async () => {
      const p = await h.create('hs-early');
      const from = h.downlinks.items.length;
      h.data('hs-early', 'register_complete', {}, { secret: p.secret });
      const rr = await h.downlinks.wait(isDown('reregister', 'hs-early'), 'reregister', from);
      assert.ok(verifySignature(rr.parsed.msg, p.secret));
      const view = await h.request<ProjectView>(STATUS.get, { project_id: 'hs-early' });
      assert.equal(view.state, 'offline');
    });

    test('malformed uplink events are counted, never crash the module', async () => {
      const before = (await h.stats()).malformed as number;
      void h.host.bus.publish('hub/uplink/x/command/register', null);
      void h.host.bus.publish('hub/uplink/x/data/heartbeat', { msg: { project_id: 'a/b', data_type: 'heartbeat' } });
      void h.host.bus.publish('hub/uplink/x/data/monitor', 'text');
      const s = await h.stats();
      assert.equal(s.malformed, before + 3);
      const p = await h.create('hs-after');
      await h.bringOnline('hs-after', p.secret);
    });
  });
}
