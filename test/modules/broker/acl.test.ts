import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import type { MqttClient } from 'mqtt';
import { BROKER, type BrokerDeniedEvent } from '../../../modules/broker/contract/topics.js';
import { deriveMqttPassword } from '../../../modules/shared/credentials.js';
import { until, withTimeout } from '../../helpers/wait.js';
import {
  A,
  B,
  type BrokerUnderTest,
  clientId,
  connectAgent,
  connectHub,
  end,
  publish,
  recorder,
  refusedCode,
  startBroker,
  subscribe,
  uplink,
} from './setup.js';

const UP_CMD = 'wdd/RDMC/command/up';
const UP_MSG = 'wdd/RDMC/message/up';
const down = (kind: 'command' | 'message', p: string) => `wdd/RDMC/${kind}/down/${p}`;

describe('broker ACL (real mqtt.js clients, embedded broker through a real host)', () => {
  let b: BrokerUnderTest;
  let hub: MqttClient;
  let hubSeen: ReturnType<typeof recorder>;
  const denied: BrokerDeniedEvent[] = [];

  before(async () => {
    b = await startBroker();
    b.h.host.bus.mailbox('test-observer').subscribe(BROKER.denied, (e) => {
      denied.push(e as BrokerDeniedEvent);
    });
    hub = await connectHub(b);
    hubSeen = recorder(hub);
    // the hub's own credential may subscribe to everything
    assert.deepEqual(await subscribe(hub, ['#']), [1]);
  });
  after(async () => {
    await end(hub);
    await b.stop();
  });

  /** Waits until the hub has `marker`, then returns every marker it saw from `since` on. */
  async function hubSawUpTo(marker: string, since: number): Promise<string[]> {
    await until(() => hubSeen.seen.some((m) => m.marker === marker), 5000, `hub to receive ${marker}`);
    return hubSeen.seen.slice(since).map((m) => m.marker);
  }

  test('an agent publishes its own uplinks; the hub receives them', async () => {
    const a = await connectAgent(b.url, A);
    try {
      const since = hubSeen.seen.length;
      await publish(a, UP_CMD, uplink(A.id, 'a-cmd-1'));
      await publish(a, UP_MSG, uplink(A.id, 'a-msg-1'));
      assert.deepEqual(await hubSawUpTo('a-msg-1', since), ['a-cmd-1', 'a-msg-1']);
      const got = hubSeen.seen.slice(since);
      assert.deepEqual(
        got.map((m) => m.topic),
        [UP_CMD, UP_MSG],
      );
    } finally {
      await end(a);
    }
  });

  test('publishes that break the ACL are acknowledged, dropped, counted and reported; the connection stays', async () => {
    const a = await connectAgent(b.url, A);
    try {
      const before = await b.stats();
      const deniedBefore = denied.length;
      const since = hubSeen.seen.length;
      // each refused publish is followed by later allowed ones; only those may reach the hub
      await publish(a, UP_CMD, uplink(B.id, 'a-as-b')); // speaks for another project
      await publish(a, UP_MSG, JSON.stringify({ message_id: 'no-project' })); // no project_id
      await publish(a, UP_MSG, 'not json at all'); // unparsable
      await publish(a, UP_MSG, '[1,2,3]'); // JSON but not an object
      await publish(a, down('command', A.id), uplink(A.id, 'a-to-own-downlink'));
      await publish(a, down('message', B.id), uplink(A.id, 'a-to-b-downlink'));
      await publish(a, 'some/other/topic', uplink(A.id, 'a-elsewhere'));
      await publish(a, UP_MSG, uplink(A.id, 'a-qos0-allowed'), 0);
      await publish(a, UP_MSG, uplink(B.id, 'a-as-b-qos0'), 0);
      await publish(a, UP_MSG, uplink(A.id, 'a-allowed-after'));
      assert.deepEqual(await hubSawUpTo('a-allowed-after', since), ['a-qos0-allowed', 'a-allowed-after']);
      assert.ok(a.connected, 'the agent is still connected after its refused publishes');
      const after = await b.stats();
      assert.equal(after.denied_publish - before.denied_publish, 8);
      await until(() => denied.length - deniedBefore >= 8, 2000, 'BROKER.denied events');
      const events = denied.slice(deniedBefore);
      assert.ok(
        events.every((e) => e.kind === 'publish' && e.project_id === A.id && e.client_id === a.options.clientId),
      );
      assert.deepEqual(
        events.map((e) => e.reason),
        ['project_id', 'project_id', 'not_json', 'not_json', 'topic', 'topic', 'topic', 'project_id'],
      );
      assert.equal(events[4].topic, down('command', A.id));
    } finally {
      await end(a);
    }
  });

  test('an oversized payload is refused', async () => {
    const big = await startBroker({ max_payload_bytes: 256 });
    const hub2 = await connectHub(big);
    const a = await connectAgent(big.url, A);
    try {
      const seen = recorder(hub2);
      await subscribe(hub2, ['wdd/RDMC/#']);
      const fat = JSON.stringify({ message_id: 'fat', project_id: A.id, pad: 'x'.repeat(300) });
      await publish(a, UP_MSG, fat);
      await publish(a, UP_MSG, uplink(A.id, 'thin'));
      await until(() => seen.seen.some((m) => m.marker === 'thin'), 5000, 'the small message');
      assert.deepEqual(
        seen.seen.map((m) => m.marker),
        ['thin'],
      );
      assert.equal((await big.stats()).denied_publish, 1);
    } finally {
      await end(a, hub2);
      await big.stop();
    }
  });

  test('an agent subscribes to its own downlinks and receives what the hub publishes there', async () => {
    const a = await connectAgent(b.url, A);
    try {
      const seen = recorder(a);
      assert.deepEqual(await subscribe(a, [down('command', A.id), down('message', A.id)]), [1, 1]);
      await publish(hub, down('command', A.id), 'cmd-for-a');
      await publish(hub, down('message', A.id), 'msg-for-a');
      await until(() => seen.seen.length === 2, 5000, 'both downlinks');
      assert.deepEqual(
        seen.seen.map((m) => m.marker),
        ['cmd-for-a', 'msg-for-a'],
      );
    } finally {
      await end(a);
    }
  });

  test("an agent may not subscribe to another project's downlinks or to wildcards (SUBACK 0x80, never receives)", async () => {
    const a = await connectAgent(b.url, A);
    try {
      const before = (await b.stats()).denied_subscribe;
      const seen = recorder(a);
      const refused = [down('command', B.id), down('message', B.id), '#', 'wdd/RDMC/command/down/+', 'wdd/#', UP_CMD];
      for (const t of refused) assert.deepEqual(await subscribe(a, [t]), [128], t);
      // a mixed SUBSCRIBE: each topic gets its own answer
      assert.deepEqual(await subscribe(a, [down('command', A.id), down('command', B.id)]), [1, 128]);
      assert.equal((await b.stats()).denied_subscribe - before, refused.length + 1);
      await publish(hub, down('command', B.id), 'for-b-only');
      await publish(hub, down('message', B.id), 'for-b-only-too');
      await publish(hub, UP_CMD, uplink(A.id, 'uplink-echo'));
      await publish(hub, down('command', A.id), 'for-a');
      await until(() => seen.seen.some((m) => m.marker === 'for-a'), 5000, "A's own downlink");
      assert.deepEqual(
        seen.seen.map((m) => m.marker),
        ['for-a'],
      );
      assert.ok(a.connected);
    } finally {
      await end(a);
    }
  });

  test('wrong password, unknown user and anonymous connections are refused and counted', async () => {
    const before = await b.stats();
    const deniedBefore = denied.length;
    assert.equal(await refusedCode(b.url, { username: A.id, password: 'wrong', clientId: clientId('x') }), 4);
    assert.equal(
      await refusedCode(b.url, {
        username: A.id,
        password: deriveMqttPassword(A.id, B.secret),
        clientId: clientId('x'),
      }),
      4,
    );
    assert.equal(
      await refusedCode(b.url, { username: 'proj-unknown', password: deriveMqttPassword('proj-unknown', 's') }),
      4,
    );
    assert.equal(await refusedCode(b.url, { clientId: clientId('anon') }), 5);
    // the hub's name never falls through to the project lookup
    assert.equal(await refusedCode(b.url, { username: b.cred.username, password: 'guess' }), 4);
    const after = await b.stats();
    assert.equal(after.denied_auth - before.denied_auth, 5);
    await until(() => denied.length - deniedBefore >= 5, 2000, 'auth denial events');
    assert.deepEqual(
      denied.slice(deniedBefore).map((e) => [e.kind, e.reason]),
      [
        ['auth', 'bad_credentials'],
        ['auth', 'bad_credentials'],
        ['auth', 'bad_credentials'],
        ['auth', 'anonymous'],
        ['auth', 'bad_credentials'],
      ],
    );
  });

  test('positive answers are cached briefly: a reconnect does not ask the status module again', async () => {
    const calls = b.probe.calls;
    const a1 = await connectAgent(b.url, B);
    await end(a1);
    const a2 = await connectAgent(b.url, B);
    await end(a2);
    assert.equal(b.probe.calls - calls, 1);
  });

  test("an agent cannot take over another identity's client id; its own reconnect can", async () => {
    const a = await connectAgent(b.url, A);
    try {
      const hubId = hub.options.clientId!;
      assert.equal(
        await refusedCode(b.url, { username: B.id, password: deriveMqttPassword(B.id, B.secret), clientId: hubId }),
        2,
      );
      assert.equal(
        await refusedCode(b.url, {
          username: B.id,
          password: deriveMqttPassword(B.id, B.secret),
          clientId: a.options.clientId,
        }),
        2,
      );
      assert.ok(hub.connected && a.connected);
      // the same project reconnecting with its id replaces its old session [MQTT-3.1.4-2]
      const closed = new Promise<void>((r) => a.once('close', () => r()));
      const again = await connectAgent(b.url, A, { clientId: a.options.clientId });
      await withTimeout(closed, 5000, 'the old session to be closed');
      await end(again);
    } finally {
      await end(a);
    }
  });

  test('a will that breaks the ACL refuses the connection; a valid one is published when the link dies', async () => {
    const before = (await b.stats()).denied_auth;
    assert.equal(
      await refusedCode(b.url, {
        username: A.id,
        password: deriveMqttPassword(A.id, A.secret),
        clientId: clientId('a'),
        will: { topic: UP_MSG, payload: Buffer.from(uplink(B.id, 'will-as-b')), qos: 1, retain: false },
      }),
      5,
    );
    assert.equal(
      await refusedCode(b.url, {
        username: A.id,
        password: deriveMqttPassword(A.id, A.secret),
        clientId: clientId('a'),
        will: { topic: down('command', B.id), payload: Buffer.from(uplink(A.id, 'will-down')), qos: 1, retain: false },
      }),
      5,
    );
    assert.equal((await b.stats()).denied_auth - before, 2);

    const since = hubSeen.seen.length;
    const a = await connectAgent(b.url, A, {
      will: { topic: UP_MSG, payload: Buffer.from(uplink(A.id, 'a-will')), qos: 1, retain: false },
    });
    a.stream.destroy(); // the link dies without DISCONNECT
    assert.deepEqual(await hubSawUpTo('a-will', since), ['a-will']);
    await end(a);
  });

  test('an agent cannot plant a retained message', async () => {
    const a = await connectAgent(b.url, A);
    const late = await connectHub(b);
    try {
      await publish(a, UP_MSG, uplink(A.id, 'retain-me'), 1, true);
      await hubSawUpTo('retain-me', 0);
      const seen = recorder(late);
      await subscribe(late, [UP_MSG]);
      await publish(a, UP_MSG, uplink(A.id, 'after-retain'));
      await until(() => seen.seen.length > 0, 5000, 'the late subscriber to get a message');
      assert.deepEqual(
        seen.seen.map((m) => m.marker),
        ['after-retain'],
      );
    } finally {
      await end(a, late);
    }
  });

  test('the hub credential publishes anywhere', async () => {
    const since = hubSeen.seen.length;
    const other = await connectHub(b);
    try {
      await publish(other, 'anything/at/all', 'free');
      await publish(other, UP_CMD, uplink(B.id, 'hub-as-b'));
      assert.deepEqual(await hubSawUpTo('hub-as-b', since), ['free', 'hub-as-b']);
    } finally {
      await end(other);
    }
  });
});
