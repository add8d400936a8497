import assert from 'node:assert/strict';
import { createRequire } from 'node:module';
import { test } from 'node:test';
import mqttPacket from 'mqtt-packet';
// the modules that write MQTT packets: importing them turns the table off
import '../../../modules/broker/broker.js';
import '../../../modules/shared/mqtt-session.js';

const require = createRequire(import.meta.url);

test('mqtt-packet writes packet ids without its 65 536-Buffer table once the hub’s MQTT modules are loaded', () => {
  assert.equal(mqttPacket.writeToStream.cacheNumbers, false);
  const bytes = mqttPacket.generate({
    cmd: 'publish',
    topic: 'a/b',
    payload: Buffer.from('x'),
    qos: 1,
    messageId: 4660,
    retain: false,
    dup: false,
  });
  // the id is still written right (0x1234), and the table was never built
  assert.equal(bytes.readUInt16BE(2 + 2 + 3), 4660);
  const numbers = require('mqtt-packet/numbers.js') as { cache: Record<number, Buffer> };
  assert.equal(Object.keys(numbers.cache).length, 0);
});
