import assert from 'node:assert/strict';
import { test } from 'node:test';
import fc from 'fast-check';
import mqttPacket from 'mqtt-packet';
// the modules that parse MQTT packets: importing them gives the parser its plain list
import '../../../modules/broker/broker.js';
import { parserListIsPlain } from '../../../modules/shared/mqtt-packet-lean.js';
import '../../../modules/shared/mqtt-session.js';

type Parsed = Record<string, unknown>;

/** Every packet the bytes hold, fed to one parser in these chunks. */
function parseChunks(chunks: Buffer[]): { packets: Parsed[]; errors: string[] } {
  const parser = mqttPacket.parser();
  const packets: Parsed[] = [];
  const errors: string[] = [];
  parser.on('packet', (p) => packets.push(p as unknown as Parsed));
  parser.on('error', (e: Error) => errors.push(e.message));
  for (const c of chunks) parser.parse(c);
  return { packets, errors };
}

const publish = fc.record({
  cmd: fc.constant('publish' as const),
  topic: fc.stringMatching(/^[a-z0-9/]{1,40}$/),
  payload: fc.uint8Array({ maxLength: 3000 }).map((a) => Buffer.from(a)),
  qos: fc.constantFrom(0, 1) as fc.Arbitrary<0 | 1>,
  messageId: fc.integer({ min: 1, max: 65_535 }),
  retain: fc.boolean(),
  dup: fc.constant(false),
});
const puback = fc.record({ cmd: fc.constant('puback' as const), messageId: fc.integer({ min: 1, max: 65_535 }) });

test('the parser keeps its bytes in bl’s plain BufferList, not a duplex stream, once the hub’s MQTT modules are loaded', () => {
  assert.equal(parserListIsPlain(), true);
});

test('packets split anywhere across reads parse as written (fast-check)', () => {
  fc.assert(
    fc.property(
      fc.array(fc.oneof(publish, puback), { minLength: 1, maxLength: 12 }),
      fc.array(fc.integer({ min: 1, max: 4000 }), { minLength: 1, maxLength: 30 }),
      (written, cuts) => {
        const bytes = Buffer.concat(written.map((p) => mqttPacket.generate(p)));
        const chunks: Buffer[] = [];
        let at = 0;
        for (let i = 0; at < bytes.length; i++) {
          const n = cuts[i % cuts.length];
          chunks.push(bytes.subarray(at, at + n));
          at += n;
        }
        const { packets, errors } = parseChunks(chunks);
        assert.deepEqual(errors, []);
        assert.equal(packets.length, written.length);
        packets.forEach((p, i) => {
          const w = written[i];
          assert.equal(p.cmd, w.cmd);
          if (w.cmd === 'publish') {
            assert.equal(p.topic, w.topic);
            assert.deepEqual(Buffer.from(p.payload as Buffer), w.payload);
            assert.equal(p.qos, w.qos);
            if (w.qos > 0) assert.equal(p.messageId, w.messageId);
          } else {
            assert.equal(p.messageId, w.messageId);
          }
        });
      },
    ),
    { numRuns: 300 },
  );
});

test('after a malformed packet the parser starts over with a fresh list and parses what follows', () => {
  const parser = mqttPacket.parser();
  const packets: Parsed[] = [];
  const errors: string[] = [];
  parser.on('packet', (p) => packets.push(p as unknown as Parsed));
  parser.on('error', (e: Error) => errors.push(e.message));
  // a PUBREL without its required header flags is refused
  parser.parse(Buffer.from([0x60, 0x02, 0x00, 0x01]));
  assert.equal(errors.length, 1, 'the bad packet refused');
  parser.parse(mqttPacket.generate({ cmd: 'puback', messageId: 7 }));
  assert.deepEqual(
    packets.map((p) => [p.cmd, p.messageId]),
    [['puback', 7]],
  );
  assert.equal(parserListIsPlain(), true);
});
