import assert from 'node:assert/strict';
import { test } from 'node:test';
import v8 from 'node:v8';
import vm from 'node:vm';
import type { IPublishPacket, MqttClient } from 'mqtt';
import { AckGate } from '../../../modules/mqtt-bridge/ack-gate.js';

// node --test passes no per-file flags: the collector is exposed from inside (as test/core/leak.test.ts)
v8.setFlagsFromString('--expose-gc');
const gc = vm.runInNewContext('gc') as () => void;

/** The parts of mqtt.js's client the gate uses: its stream, whether it is connected, _sendPacket. */
function fakeClient() {
  const pubacks: number[] = [];
  const client = {
    stream: { connection: 1 } as object,
    connected: true,
    _sendPacket(packet: { cmd: string; messageId: number }) {
      assert.equal(packet.cmd, 'puback');
      pubacks.push(packet.messageId);
    },
  };
  return { client, pubacks, gate: new AckGate(client as unknown as MqttClient, Date.now) };
}

const publish = (messageId: number) => ({ cmd: 'publish', qos: 1, messageId, topic: 't' }) as IPublishPacket;

test('PUBACKs go out in the order the PUBLISHes came, a failed write never acknowledged', () => {
  const { gate, pubacks } = fakeClient();
  const settle = [1, 2, 3, 4].map((id) => gate.defer(publish(id)));
  settle[1](true); // the second is written first: it waits for the first
  assert.deepEqual(pubacks, []);
  assert.equal(gate.waiting, 4);
  settle[0](true);
  assert.deepEqual(pubacks, [1, 2]);
  settle[3](true);
  settle[2](false); // its write failed: withheld, and the fourth goes out behind it
  assert.deepEqual(pubacks, [1, 2, 4]);
  assert.equal(gate.waiting, 0);
  assert.deepEqual([gate.acked, gate.withheld], [3, 1]);
  settle[0](true); // settled once
  assert.deepEqual(pubacks, [1, 2, 4]);
});

test('a released deferral is let go: nothing keeps the connection it came on once every PUBACK is out', async () => {
  const { client, gate, pubacks } = fakeClient();
  // a few uplinks of one connection, all written and acknowledged (in a function of its own: an
  // async test's locals stay alive across its awaits)
  const old = ((): WeakRef<object> => {
    const settle = Array.from({ length: 10 }, (_, i) => gate.defer(publish(i + 1)));
    for (const s of settle) s(true);
    return new WeakRef(client.stream);
  })();
  assert.deepEqual(pubacks, [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]);
  client.stream = { connection: 2 }; // the client reconnected: the old socket is the gate's to forget
  for (let i = 0; i < 3; i++) {
    gc();
    await new Promise((r) => setImmediate(r));
  }
  assert.equal(old.deref(), undefined, 'the gate still held the old connection through a released deferral');
  // and it goes on working on the new one
  const next = gate.defer(publish(11));
  next(true);
  assert.deepEqual(pubacks.at(-1), 11);
});
