/**
 * The seed's example messages (test/fixtures/seed/, verbatim from seed 002 消息格式) through a
 * real hub process and its embedded broker: the registration brings the project online, the
 * heartbeat shows as the last heartbeat and metrics over REST, the control message travels as a
 * command payload and its result completes the command. Refusals are answered: a malformed
 * register gets `register_ack {accepted: false, reason}` naming the field; a malformed heartbeat
 * is counted on the project's status view and in /metrics.
 */
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { commandDownTopic, TOPIC_COMMAND_UP, TOPIC_MESSAGE_UP } from '../../modules/shared/protocol.js';
import { canonicalJson, signMessage, verifySignature, wireText } from '../../modules/shared/signing.js';
import { REPO_ROOT } from '../helpers/process.js';
import { until } from '../helpers/wait.js';
import { Hub, type Json, T } from './harness.js';
import { isRegisterAck, RawAgent } from './raw-agent.js';

const fixture = (name: string): Json =>
  JSON.parse(fs.readFileSync(path.join(REPO_ROOT, 'test/fixtures/seed', `${name}.json`), 'utf8'));

/** A signed envelope around `payload` exactly as given (no schema check at the sender: tests send what agents send). */
function envelope(
  projectId: string,
  secret: string,
  kind: 'command' | 'message',
  type: string,
  payload: unknown,
  extra: Record<string, unknown> = {},
): Json {
  const base: Record<string, unknown> = {
    message_id: randomUUID(),
    type: kind,
    project_id: projectId,
    timestamp: Date.now(),
    version: '1.0',
    ...(kind === 'command' ? { command_type: type } : { data_type: type, encrypted: false }),
    payload,
    ...extra,
  };
  return { ...base, signature: signMessage(base, secret) };
}

describe('the seed messages, verbatim, through a real hub', () => {
  let hub: Hub;
  const closers: Array<() => Promise<void>> = [];

  before(async () => {
    hub = await Hub.create('embedded');
    await hub.start();
  });

  after(async () => {
    for (const c of closers) await c().catch(() => undefined);
    await hub?.dispose();
  });

  async function rawAgent(what: string): Promise<RawAgent> {
    const project = await hub.provision(what);
    const raw = await RawAgent.connect(hub.brokerUrl, project);
    closers.push(() => raw.close());
    return raw;
  }

  const send = (raw: RawAgent, topic: string, msg: Json) =>
    raw.client.publishAsync(topic, JSON.stringify(msg), { qos: 1 });

  async function register(raw: RawAgent, payload: unknown): Promise<Json> {
    const from = raw.received.length;
    await send(raw, TOPIC_COMMAND_UP, envelope(raw.projectId, raw.project.secret, 'command', 'register', payload));
    return (await raw.next(isRegisterAck, T, 'register_ack', from)).msg;
  }

  test('register (seed 002) → online, registration kept as sent; heartbeat → last heartbeat and metrics over REST', async () => {
    const raw = await rawAgent('seed');
    const reg = fixture('register');
    const ack = await register(raw, reg);
    assert.equal(ack.payload.accepted, true, JSON.stringify(ack.payload));
    assert.ok(verifySignature(ack, raw.project.secret), 'the ack is signed');
    await send(
      raw,
      TOPIC_MESSAGE_UP,
      envelope(raw.projectId, raw.project.secret, 'message', 'register_complete', { instance_id: reg.instance_id }),
    );
    const online = await hub.waitState(raw.projectId, 'online');
    assert.equal(online.instance_id, reg.instance_id);
    assert.equal(online.agent_version, reg.version);
    assert.deepEqual(online.registration.node_version, reg.node_version, 'node_version kept as sent (an object)');
    assert.equal(online.registration.start_time, Date.parse(reg.start_time), 'start_time read as ms');

    const hb = fixture('heartbeat');
    // the envelope's own timestamp written the seed's way too (an RFC 3339 string)
    await send(
      raw,
      TOPIC_MESSAGE_UP,
      envelope(raw.projectId, raw.project.secret, 'message', 'heartbeat', hb, { timestamp: new Date().toISOString() }),
    );
    let status: Json;
    await until(
      async () => {
        status = (await hub.api('GET', `/project/${raw.projectId}/status`)).json;
        return status.metrics !== null;
      },
      T,
      'the heartbeat metrics over REST',
    );
    assert.deepEqual(status.metrics, hb.metrics, 'metric values as sent: "2.50" stays a string');
    assert.ok(status.last_heartbeat_at && Date.parse(status.last_heartbeat_at) >= Date.parse(online.state_since));
    assert.equal(status.state, 'online');
    assert.equal(status.rejected_uplinks, 0);
  });

  test('control (seed 002) travels as a command payload; the agent acks and its result completes the command', async () => {
    const raw = await rawAgent('ctl');
    assert.equal((await register(raw, fixture('register'))).payload.accepted, true);
    await send(raw, TOPIC_MESSAGE_UP, envelope(raw.projectId, raw.project.secret, 'message', 'register_complete', {}));
    await hub.waitState(raw.projectId, 'online');

    const control = fixture('control');
    const sent = await hub.api('POST', '/command/send', {
      project_id: raw.projectId,
      command_type: control.command,
      payload: control,
    });
    assert.equal(sent.status, 202, JSON.stringify(sent.json));
    const id = sent.json.command_id;
    const cmd = await raw.next(
      (r) => r.topic === commandDownTopic(raw.projectId) && r.msg.message_id === id,
      T,
      'the command',
    );
    assert.equal(cmd.msg.command_type, 'stop');
    assert.deepEqual(cmd.msg.payload, control, 'the control message arrives as it was written');
    await send(
      raw,
      TOPIC_MESSAGE_UP,
      envelope(raw.projectId, raw.project.secret, 'message', 'command_ack', { command_id: id }),
    );
    // one clock reading for both: two readings a millisecond apart made the span 1001 ms
    const now = Date.now();
    const start = new Date(now - 1500);
    const end = new Date(now - 500);
    await send(
      raw,
      TOPIC_MESSAGE_UP,
      envelope(raw.projectId, raw.project.secret, 'message', 'exec_result', {
        command_id: id,
        status: 'success',
        exit_code: 0,
        output: 'stopped',
        error: '',
        // RFC 3339 times, the seed's way
        start_time: start.toISOString(),
        end_time: end.toISOString(),
        duration: 1000,
      }),
    );
    const done = await hub.waitCommand(id);
    assert.equal(done.result.output, 'stopped');
    assert.equal(done.timings.execution_ms, 1000, JSON.stringify(done.timings));
  });

  test('a malformed register is answered with register_ack {accepted: false, reason} naming the field', async () => {
    const raw = await rawAgent('badreg');
    const cases: Array<[string, Json, RegExp]> = [
      ['start_time not a time', { ...fixture('register'), start_time: 'yesterday' }, /payload\.start_time/],
      ['node_version a number', { ...fixture('register'), node_version: 7 }, /payload\.node_version/],
      ['no instance_id', { ...fixture('register'), instance_id: undefined }, /payload\.instance_id: required/],
    ];
    for (const [what, payload, field] of cases) {
      const t0 = Date.now();
      const ack = await register(raw, payload);
      const ms = Date.now() - t0;
      assert.equal(ack.payload.accepted, false, what);
      assert.match(ack.payload.reason, /^PROTO_ERR_SCHEMA: /, what);
      assert.match(ack.payload.reason, field, `${what}: ${ack.payload.reason}`);
      assert.ok(verifySignature(ack, raw.project.secret), `${what}: signed (the project is known)`);
      // measured for the record (not asserted: the machine is shared)
      process.stdout.write(`# refusal of "${what}" answered in ${ms} ms\n`);
    }
    const status = (await hub.api('GET', `/project/${raw.projectId}/status`)).json;
    assert.equal(status.state, 'offline', 'a refused registration does not bring the project online');
    assert.equal(status.rejected_uplinks, cases.length);
    assert.equal(status.last_rejected.type, 'register');
  });

  test('a seed agent’s envelope order is verified by a canonical text; a text written as signed, as sent', async () => {
    const signatures = async () => ({
      as_sent: await hub.metric('hub_mqtt_uplink_signatures_total{matched="as_sent"}'),
      canonical: await hub.metric('hub_mqtt_uplink_signatures_total{matched="canonical"}'),
    });
    const raw = await rawAgent('assent');
    assert.equal((await register(raw, fixture('register'))).payload.accepted, true);
    await send(raw, TOPIC_MESSAGE_UP, envelope(raw.projectId, raw.project.secret, 'message', 'register_complete', {}));
    await hub.waitState(raw.projectId, 'online');
    const before = await signatures();
    assert.ok(before.canonical >= 2, `the seed's envelope order took the canonical check: ${JSON.stringify(before)}`);

    const { signature: _s, ...unsigned } = envelope(raw.projectId, raw.project.secret, 'message', 'heartbeat', {
      ...fixture('heartbeat'),
      metrics: { cpu: 'as-sent' },
    });
    const canonical = canonicalJson(unsigned);
    const asSigned = wireText(canonical, signMessage(unsigned, raw.project.secret));
    await raw.client.publishAsync(TOPIC_MESSAGE_UP, asSigned, { qos: 1 });
    await until(
      async () => (await hub.api('GET', `/project/${raw.projectId}/status`)).json.metrics?.cpu === 'as-sent',
      T,
      'the heartbeat written as signed, applied',
    );
    const after = await signatures();
    assert.deepEqual(after, { as_sent: before.as_sent + 1, canonical: before.canonical });

    // the same text with one value changed after signing: refused, whichever check reads it
    const forged = JSON.parse(asSigned);
    forged.message_id = randomUUID();
    const forgedText = wireText(canonicalJson({ ...unsigned, message_id: forged.message_id }), forged.signature);
    await raw.client.publishAsync(TOPIC_MESSAGE_UP, forgedText, { qos: 1 });
    await until(
      async () => (await hub.api('GET', `/project/${raw.projectId}/status`)).json.rejected_uplinks >= 1,
      T,
      'the changed text refused',
    );
    const status = (await hub.api('GET', `/project/${raw.projectId}/status`)).json;
    assert.equal(status.last_rejected.code, 'PROTO_ERR_SIGNATURE');
    assert.deepEqual(await signatures(), after);
  });

  test('a malformed heartbeat of a known agent is counted on its status view and in /metrics', async () => {
    const raw = await rawAgent('badhb');
    assert.equal((await register(raw, fixture('register'))).payload.accepted, true);
    await send(raw, TOPIC_MESSAGE_UP, envelope(raw.projectId, raw.project.secret, 'message', 'register_complete', {}));
    await hub.waitState(raw.projectId, 'online');
    await send(
      raw,
      TOPIC_MESSAGE_UP,
      envelope(raw.projectId, raw.project.secret, 'message', 'heartbeat', {
        ...fixture('heartbeat'),
        timestamp: 'noon',
      }),
    );
    let status: Json;
    await until(
      async () => {
        status = (await hub.api('GET', `/project/${raw.projectId}/status`)).json;
        return status.rejected_uplinks >= 1;
      },
      T,
      'the refusal on the status view',
    );
    assert.equal(status.last_rejected.type, 'heartbeat');
    assert.equal(status.last_rejected.code, 'PROTO_ERR_SCHEMA');
    assert.match(status.last_rejected.reason, /payload\.timestamp/);
    assert.ok(!Number.isNaN(Date.parse(status.last_rejected.at)));
    const metrics = await (await fetch(`${hub.base}/metrics`)).text();
    assert.match(metrics, /hub_uplinks_rejected_by_type_total\{type="heartbeat",attributed="yes"\} [1-9]/);
  });
});
