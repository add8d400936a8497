/**
 * Regression (issue 8, finding 2): the command module never checked data signatures. A
 * command_ack or exec_result was applied with a bogus signature, with another project's key,
 * with a timestamp 301 s in the future and, with `require_data_signature: true`, with no
 * signature at all. Now every uplink passes the bridge's verification step before any module
 * sees it; each refusal is counted by code in /metrics.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { buildData, commandDownTopic, TOPIC_MESSAGE_UP } from '../../modules/shared/protocol.js';
import { Hub, type Json, T } from '../e2e/harness.js';
import { RawAgent } from '../e2e/raw-agent.js';
import { until } from '../helpers/wait.js';

const rejected = (hub: Hub, code: string): Promise<number> =>
  hub.metric(`hub_mqtt_uplinks_rejected_total{code="${code}"}`);

describe('data uplinks are verified before the command module sees them', () => {
  let hub: Hub;
  let raw: RawAgent;
  let other: { secret: string };
  before(async () => {
    hub = await Hub.create('embedded', { status: { require_data_signature: true } });
    await hub.start();
  });
  after(async () => {
    await raw?.close();
    await hub?.dispose();
  });

  test('bogus, foreign-key, future and unsigned results are refused and counted; the genuine one completes', async () => {
    const project = await hub.provision('sig');
    other = await hub.provision('other');
    const pid = project.project_id;
    raw = await RawAgent.connect(hub.brokerUrl, project);
    await raw.handshake();
    await hub.waitState(pid, 'online');

    const sent = await hub.api('POST', '/command/send', { project_id: pid, command_type: 'echo', payload: {} });
    assert.equal(sent.status, 202, JSON.stringify(sent.json));
    const id: string = sent.json.command_id;
    await raw.next((r) => r.topic === commandDownTopic(pid) && r.msg.message_id === id, T, 'the command');

    const result = {
      command_id: id,
      status: 'success',
      exit_code: 0,
      output: 'forged',
      error: '',
      start_time: 1,
      end_time: 2,
      duration: 1,
    };
    const publish = (msg: Json) => raw.client.publishAsync(TOPIC_MESSAGE_UP, JSON.stringify(msg), { qos: 1 });
    const before = {
      sig: await rejected(hub, 'PROTO_ERR_SIGNATURE'),
      clock: await rejected(hub, 'PROTO_ERR_CLOCK'),
      unsigned: await rejected(hub, 'PROTO_ERR_UNSIGNED'),
    };
    // a bogus signature, another project's key, 301 s in the future, no signature
    await publish({ ...buildData(pid, 'exec_result', result, { secret: project.secret }), signature: 'ab'.repeat(32) });
    await publish(buildData(pid, 'command_ack', { command_id: id }, { secret: other.secret }));
    await publish(buildData(pid, 'exec_result', result, { secret: other.secret }));
    await publish(buildData(pid, 'exec_result', result, { secret: project.secret, now: Date.now() + 301_000 }));
    await publish(buildData(pid, 'exec_result', result));
    await until(
      async () =>
        (await rejected(hub, 'PROTO_ERR_SIGNATURE')) >= before.sig + 3 &&
        (await rejected(hub, 'PROTO_ERR_CLOCK')) >= before.clock + 1 &&
        (await rejected(hub, 'PROTO_ERR_UNSIGNED')) >= before.unsigned + 1,
      T,
      'every forged uplink counted by its code',
    );
    const still = (await hub.api('GET', `/command/${id}`)).json;
    assert.equal(still.result, null, JSON.stringify(still));
    assert.notEqual(still.status, 'completed');
    assert.equal(still.acked_at, null, 'the ack signed with another key was not applied');

    await raw.sendData('exec_result', { ...result, output: 'genuine' });
    const done = await hub.waitCommand(id);
    assert.equal(done.result.output, 'genuine');
  });
});
