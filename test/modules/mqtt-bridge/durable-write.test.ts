/**
 * Regression (found by `npm run chaos -- --scenario config-edit`, after durable-before-ack
 * landed: 815 of 1 000 commands never ran). A config edit restarts the status or command module;
 * for the second or so it has no subscription, durable uplinks (register, command_ack,
 * exec_result …) that arrived then were answered BUS_ERR_NO_RESPONDER — taken as "nobody owns
 * this type", so acknowledged and lost — or left unacknowledged on the connection, each holding
 * one of the broker's 20 in-flight slots for the hub's session until a reconnect that never came;
 * uplinks whose credentials could not be read meanwhile (PROTO_ERR_UNVERIFIABLE) were refused and
 * acknowledged. After a few edits every uplink of every agent stalled behind the held slots.
 *
 * Now a durable uplink is retried in the bridge until its owner wrote it; only an owner that is
 * not configured at all makes it final. Through the real bus: the owner's subscription appears
 * after the uplink arrived, as it does when a module restarts.
 */
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { test } from 'node:test';
import { Bus, scopedBus } from '../../../core/bus.js';
import { HOST_TOPICS } from '../../../core/host-topics.js';
import { silentLogger } from '../../../core/log.js';
import { BRIDGE, type UplinkEvent } from '../../../modules/mqtt-bridge/contract/topics.js';
import { DurableWriter } from '../../../modules/mqtt-bridge/durable-write.js';
import { UplinkVerifier } from '../../../modules/mqtt-bridge/verify.js';
import { buildData, type DataMessage } from '../../../modules/shared/protocol.js';
import { type ProjectCredentials, STATUS } from '../../../modules/status/contract/topics.js';
import { scaled, withTimeout } from '../../helpers/wait.js';

const PID = 'durable-p1';
const SECRET = 's'.repeat(32);
const CREDS: ProjectCredentials = { project_id: PID, enabled: true, state: 'online', secrets: [SECRET] };

interface Rig {
  bus: Bus;
  writer: DurableWriter;
  verifier: UplinkVerifier;
  providers: string[];
  retries: number;
}

function rig(opts: { credentials?: boolean; providers?: string[] } = {}): Rig {
  const bus = new Bus(silentLogger());
  const r: Rig = { bus, providers: opts.providers ?? ['status', 'command'], retries: 0 } as Rig;
  bus.mailbox('host').subscribe(HOST_TOPICS.listModules, () => r.providers.map((provider) => ({ provider })));
  if (opts.credentials !== false) bus.mailbox('status').subscribe(STATUS.credentials, () => CREDS);
  const moduleBus = scopedBus(bus, bus.mailbox('mqtt-bridge'), () => {});
  r.verifier = new UplinkVerifier({ bus: moduleBus, now: Date.now, credentialsTtlMs: 60_000 });
  r.writer = new DurableWriter({
    bus: moduleBus,
    verifier: r.verifier,
    now: Date.now,
    waitMs: scaled(20_000),
    retryMs: { first: 10, max: 100 },
    onRetry: () => {
      r.retries++;
    },
  });
  return r;
}

/** A command_ack (durable, owned by the command module) for a fresh command id. */
function commandAck(): { ev: UplinkEvent; topic: string; msg: DataMessage; id: string } {
  const id = randomUUID();
  const msg = buildData(PID, 'command_ack', { command_id: id }, { secret: SECRET });
  return {
    msg,
    ev: { msg, topic: 'wdd/RDMC/message/up', received_at: Date.now() },
    topic: BRIDGE.uplink(PID, 'data', 'command_ack'),
    id,
  };
}

test('a durable uplink that arrives while its owner restarts is written once the owner is back, not acknowledged away', async () => {
  const r = rig();
  const { ev, topic, msg, id } = commandAck();
  const verdict = await r.verifier.verify('data', msg);
  assert.equal(verdict.ok, true);
  const outcome = r.writer.write('command_ack', topic, ev, verdict, () => true);
  // the command module "restarts": no subscription for a while, then it subscribes again
  await new Promise((res) => setTimeout(res, 200));
  const written: string[] = [];
  r.bus.mailbox('command').subscribe(BRIDGE.uplinkPattern('data', 'command_ack'), (e) => {
    written.push(((e as UplinkEvent).msg.payload as { command_id: string }).command_id);
  });
  const out = await withTimeout(outcome, scaled(15_000), 'the durable write');
  assert.equal(out.kind, 'written');
  assert.deepEqual(written, [id], 'written exactly once, by the owner');
  assert.ok(r.retries >= 1, 'it was retried while the owner was away');
});

test('an owner that answers with an error (database down) is asked again until it writes', async () => {
  const r = rig();
  let calls = 0;
  r.bus.mailbox('command').subscribe(BRIDGE.uplinkPattern('data', 'command_ack'), () => {
    calls++;
    if (calls < 3) throw Object.assign(new Error('database "default" unreachable'), { code: 'DB_ERR_UNAVAILABLE' });
    return { written: Promise.resolve() };
  });
  const { ev, topic, msg } = commandAck();
  const out = await withTimeout(
    r.writer.write('command_ack', topic, ev, await r.verifier.verify('data', msg), () => true),
    scaled(15_000),
    'the durable write',
  );
  assert.equal(out.kind, 'written');
  assert.equal(calls, 3);
});

test('credentials unreadable while status restarts: verified again and written, never refused', async () => {
  const r = rig({ credentials: false });
  const { ev, topic, msg, id } = commandAck();
  const first = await r.verifier.verify('data', msg);
  assert.equal(first.ok, false);
  assert.equal(!first.ok && first.code, 'PROTO_ERR_UNVERIFIABLE');
  const written: string[] = [];
  r.bus.mailbox('command').subscribe(BRIDGE.uplinkPattern('data', 'command_ack'), (e) => {
    written.push(((e as UplinkEvent).msg.payload as { command_id: string }).command_id);
  });
  const outcome = r.writer.write('command_ack', topic, ev, first, () => true);
  await new Promise((res) => setTimeout(res, 200));
  r.bus.mailbox('status').subscribe(STATUS.credentials, () => CREDS);
  const out = await withTimeout(outcome, scaled(15_000), 'the durable write');
  assert.equal(out.kind, 'written');
  assert.deepEqual(written, [id]);
});

test('a forged uplink found out once the credentials are readable is refused (acknowledged and dropped)', async () => {
  const r = rig({ credentials: false });
  const { ev, topic, msg } = commandAck();
  const forged = { ...msg, signature: 'f'.repeat(64) };
  const first = await r.verifier.verify('data', forged);
  const outcome = r.writer.write('command_ack', topic, { ...ev, msg: forged }, first, () => true);
  r.bus.mailbox('status').subscribe(STATUS.credentials, () => CREDS);
  const out = await withTimeout(outcome, scaled(15_000), 'the durable write');
  assert.equal(out.kind, 'refused');
  assert.equal(out.kind === 'refused' && out.verdict.code, 'PROTO_ERR_SIGNATURE');
});

test('no module of the owner provider configured: final at once (nothing to keep)', async () => {
  const r = rig({ providers: ['status'] });
  const { ev, topic, msg } = commandAck();
  const out = await withTimeout(
    r.writer.write('command_ack', topic, ev, await r.verifier.verify('data', msg), () => true),
    scaled(5_000),
    'the durable write',
  );
  assert.equal(out.kind, 'written');
  assert.equal(r.retries, 0);
});

test('the connection it came on is gone: withheld at once, for the broker to deliver again', async () => {
  const r = rig();
  const { ev, topic, msg } = commandAck();
  let current = true;
  const outcome = r.writer.write('command_ack', topic, ev, await r.verifier.verify('data', msg), () => current);
  current = false;
  const out = await withTimeout(outcome, scaled(5_000), 'the durable write');
  assert.deepEqual(out.kind === 'withheld' && out.reason, 'connection');
});
