/**
 * After a CONNECT the parser keeps the two fields it reads (protocolVersion, bridgeMode), not the
 * CONNECT with its client id, will and password (modules/shared/mqtt-packet-lean.ts): the packet is
 * still handed out whole, and what follows parses as it did when the whole CONNECT was kept.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import mqttPacket from 'mqtt-packet';
// the modules that serve MQTT connections: importing them applies the change
import '../../../modules/broker/broker.js';
import { parseChunks } from '../../helpers/mqtt.js';

type Parser = ReturnType<typeof mqttPacket.parser> & { settings: Record<string, unknown> };

/** The packets, with no parser error on the way. */
function parseAll(parser: Parser, ...bufs: Buffer[]): Array<Record<string, unknown>> {
  const { packets, errors } = parseChunks(bufs, parser);
  assert.deepEqual(errors, []);
  return packets;
}

const connect = (protocolVersion: 3 | 4 | 5, extra: Record<string, unknown> = {}) =>
  mqttPacket.generate({
    cmd: 'connect',
    protocolId: protocolVersion === 3 ? 'MQIsdp' : 'MQTT',
    protocolVersion,
    clientId: 'agent-plant-7',
    clean: true,
    keepalive: 60,
    username: 'plant-7',
    password: Buffer.from('a password of some length'),
    will: { topic: 'wdd/RDMC/message/up', payload: Buffer.from('{"gone":true}'), qos: 1, retain: false },
    ...extra,
  } as unknown as mqttPacket.Packet);

test('the parser keeps the CONNECT’s protocol version and bridge mode, not the CONNECT; the CONNECT is handed out whole', () => {
  for (const v of [3, 4, 5] as const) {
    const parser = mqttPacket.parser() as Parser;
    const [p] = parseAll(parser, connect(v));
    assert.equal(p.cmd, 'connect');
    assert.equal(p.clientId, 'agent-plant-7');
    assert.equal(p.username, 'plant-7');
    assert.equal((p.password as Buffer).toString(), 'a password of some length');
    assert.equal((p.will as { topic: string }).topic, 'wdd/RDMC/message/up');
    assert.deepEqual({ ...parser.settings }, { protocolVersion: v, bridgeMode: undefined });
    assert.notEqual(parser.settings, p, 'the CONNECT itself is not kept');
    // every connection of one protocol version holds the same frozen record, not one of its own
    const other = mqttPacket.parser() as Parser;
    parseAll(other, connect(v));
    assert.equal(other.settings, parser.settings);
    assert.ok(Object.isFrozen(parser.settings));
  }
  // a bridge's CONNECT holds another
  const bridge = mqttPacket.parser() as Parser;
  const bridgeConnect = connect(4);
  bridgeConnect[8] |= 0x80;
  parseAll(bridge, bridgeConnect);
  const plain = mqttPacket.parser() as Parser;
  parseAll(plain, connect(4));
  assert.notEqual(bridge.settings, plain.settings);
  assert.deepEqual({ ...bridge.settings }, { protocolVersion: 4, bridgeMode: true });
});

test('what follows a CONNECT parses as with the whole CONNECT kept: MQTT 5 properties, bridge-mode subscriptions', () => {
  // MQTT 5: a PUBLISH with properties is read with them
  const v5 = mqttPacket.parser() as Parser;
  const publish = mqttPacket.generate(
    {
      cmd: 'publish',
      topic: 'wdd/RDMC/message/up',
      payload: Buffer.from('{}'),
      qos: 1,
      messageId: 7,
      retain: false,
      dup: false,
      properties: { contentType: 'application/json', userProperties: { k: 'v' } },
    } as unknown as mqttPacket.Packet,
    { protocolVersion: 5 },
  );
  const [, pub] = parseAll(v5, connect(5), publish);
  const props = pub.properties as { contentType: string; userProperties: Record<string, string> };
  assert.equal(props.contentType, 'application/json');
  assert.deepEqual({ ...props.userProperties }, { k: 'v' });

  // a bridge's CONNECT (protocol version with bit 0x80): its subscriptions come with nl/rap/rh
  const bridge = mqttPacket.parser() as Parser;
  const bridgeConnect = connect(4);
  bridgeConnect[8] |= 0x80; // fixed header 2 bytes, "MQTT" 6 bytes, then the version byte
  const subscribe = mqttPacket.generate({
    cmd: 'subscribe',
    messageId: 9,
    subscriptions: [{ topic: 'wdd/RDMC/command/down/plant-7', qos: 1 }],
  } as unknown as mqttPacket.Packet);
  const [c, sub] = parseAll(bridge, bridgeConnect, subscribe);
  assert.equal(c.bridgeMode, true);
  assert.deepEqual(bridge.settings, { protocolVersion: 4, bridgeMode: true });
  assert.deepEqual(sub.subscriptions, [{ topic: 'wdd/RDMC/command/down/plant-7', qos: 1, rh: 0, rap: true, nl: true }]);

  // and with the same settings given up front (what mqtt-packet reads them for), the same packets
  const reference = mqttPacket.parser({ protocolVersion: 4, bridgeMode: true } as never) as Parser;
  const [refSub] = parseAll(reference, subscribe);
  assert.deepEqual(refSub.subscriptions, sub.subscriptions);
});
