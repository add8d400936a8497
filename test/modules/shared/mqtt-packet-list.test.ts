import assert from 'node:assert/strict';
import { Writable } from 'node:stream';
import { test } from 'node:test';
import fc from 'fast-check';
import mqttPacket from 'mqtt-packet';
// the modules that parse MQTT packets: importing them gives the parser its plain list
import '../../../modules/broker/broker.js';
import {
  mqttPacketParse,
  mqttPacketWriteToStream,
  parserListIsPlain,
} from '../../../modules/shared/mqtt-packet-lean.js';
import '../../../modules/shared/mqtt-session.js';
import { parseChunks } from '../../helpers/mqtt.js';

type Parsed = Record<string, unknown>;

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

/** What a parser said, in order: each packet (its fields, a payload as hex), each error, each parse's return value. */
type Heard = Array<['packet', Parsed] | ['error', string] | ['left', number]>;

function hear(
  chunks: Buffer[],
  protocolVersion: 4 | 5,
  reenter: boolean,
  parse: (parser: ReturnType<typeof mqttPacket.parser>, c: Buffer) => number,
): Heard {
  const parser = mqttPacket.parser({ protocolVersion });
  const heard: Heard = [];
  let next = 0;
  parser.on('packet', (p) => {
    const fields: Parsed = {};
    for (const [k, v] of Object.entries(p)) fields[k] = Buffer.isBuffer(v) ? `hex:${v.toString('hex')}` : v;
    heard.push(['packet', fields]);
    // as aedes does when a packet's handling ends at once: the next read, from inside the listener
    if (reenter && next < chunks.length) parse(parser, chunks[next++]);
  });
  parser.on('error', (e: Error) => heard.push(['error', e.message]));
  while (next < chunks.length) {
    const left = parse(parser, chunks[next++]);
    if (!reenter) heard.push(['left', left]);
  }
  return heard;
}

const anyPublish = fc.record({
  cmd: fc.constant('publish' as const),
  topic: fc.string({ unit: 'grapheme', maxLength: 30 }),
  payload: fc.oneof(
    fc.constant(Buffer.alloc(0)),
    fc.uint8Array({ maxLength: 2000 }).map((a) => Buffer.from(a)),
  ),
  qos: fc.constantFrom(0, 1, 2) as fc.Arbitrary<0 | 1 | 2>,
  messageId: fc.integer({ min: 1, max: 65_535 }),
  retain: fc.boolean(),
  dup: fc.boolean(),
});
const others = fc.oneof(
  puback,
  fc.constant({ cmd: 'pingresp' as const }),
  fc.record({
    cmd: fc.constant('suback' as const),
    messageId: fc.integer({ min: 1, max: 65_535 }),
    granted: fc.constant([1]),
  }),
  fc.record({ cmd: fc.constant('pubrel' as const), messageId: fc.integer({ min: 1, max: 65_535 }) }),
);

test('PUBLISH packets read in place: the same packets, errors and leftovers as mqtt-packet’s own parse, for any bytes cut anywhere, read in turn or from inside a listener (fast-check)', () => {
  assert.equal(typeof mqttPacketParse, 'function');
  fc.assert(
    fc.property(
      fc.constantFrom(4, 5) as fc.Arbitrary<4 | 5>,
      fc.array(
        fc.oneof(
          { weight: 6, arbitrary: anyPublish.map((p) => ({ p })) },
          { weight: 2, arbitrary: others.map((p) => ({ p })) },
          // bytes no one wrote: a bad header, a cut length, a packet shorter than its topic
          {
            weight: 1,
            arbitrary: fc.uint8Array({ minLength: 1, maxLength: 12 }).map((b) => ({ raw: Buffer.from(b) })),
          },
        ),
        { minLength: 1, maxLength: 10 },
      ),
      fc.array(fc.integer({ min: 1, max: 2500 }), { minLength: 1, maxLength: 20 }),
      fc.boolean(),
      (version, parts, cuts, reenter) => {
        const bytes = Buffer.concat(
          parts.map((x) =>
            'raw' in x ? x.raw : mqttPacket.generate(x.p as mqttPacket.Packet, { protocolVersion: version }),
          ),
        );
        const chunks: Buffer[] = [];
        for (let at = 0, i = 0; at < bytes.length; i++) {
          chunks.push(bytes.subarray(at, at + cuts[i % cuts.length]));
          at += cuts[i % cuts.length];
        }
        const inPlace = hear(chunks, version, reenter, (parser, c) => parser.parse(c));
        // mqtt-packet's own parse, called again from a listener, hands out the packet it is in
        // the middle of a second time: the reference reads in turn, and a read from inside a
        // listener must change nothing but when the packets come
        const theirs = hear(chunks, version, false, (parser, c) =>
          (mqttPacketParse as (b: Buffer) => number).call(parser, c),
        );
        assert.deepEqual(inPlace, reenter ? theirs.filter((h) => h[0] !== 'left') : theirs);
      },
    ),
    { numRuns: 1500 },
  );
});

test('a PUBLISH whole in one read is read in place: its payload is a view of that read, not a copy', () => {
  const parser = mqttPacket.parser();
  const packets: Parsed[] = [];
  parser.on('packet', (p) => packets.push(p as unknown as Parsed));
  const read = Buffer.concat([
    mqttPacket.generate({
      cmd: 'publish',
      topic: 'gmq/message/up',
      payload: Buffer.from('{"a":1}'),
      qos: 1,
      messageId: 9,
      retain: false,
      dup: false,
    }),
    mqttPacket.generate({ cmd: 'publish', topic: 't', payload: Buffer.from('x'), qos: 0, retain: true, dup: false }),
  ]);
  assert.equal(parser.parse(read), 0);
  assert.deepEqual(
    packets.map((p) => [p.topic, p.messageId, p.retain, String(p.payload)]),
    [
      ['gmq/message/up', 9, false, '{"a":1}'],
      ['t', undefined, true, 'x'],
    ],
  );
  assert.equal((packets[0].payload as Buffer).buffer, read.buffer, 'the payload shares the read’s memory');
});

/** What a writer put on a stream: every write's bytes, in order, what it returned (or threw), whether the stream was destroyed. */
function written(write: (stream: Writable) => boolean): {
  bytes: string;
  result: boolean | string;
  destroyed: boolean;
} {
  const chunks: Buffer[] = [];
  // as a socket: bytes are taken at once, a write completes later (so `write()` reports what is
  // still buffered against the high-water mark, whether the packet came in one write or in six)
  const stream = new Writable({
    write(chunk: Buffer, _enc, cb) {
      chunks.push(Buffer.from(chunk));
      setImmediate(cb);
    },
    writev(parts, cb) {
      for (const { chunk } of parts) chunks.push(Buffer.from(chunk as Buffer));
      setImmediate(cb);
    },
  });
  stream.on('error', () => {});
  let result: boolean | string;
  try {
    result = write(stream);
  } catch (err) {
    // mqtt-packet throws for an id past two bytes: so must the hub's writer
    result = `threw ${(err as Error).name}`;
  }
  // the corked writes mqtt-packet leaves for the next tick
  stream.uncork();
  return { bytes: Buffer.concat(chunks).toString('hex'), result, destroyed: stream.destroyed };
}

test('a PUBACK in one write: the same bytes and result as mqtt-packet’s writer, any id, version, reason code or properties (fast-check)', async () => {
  const packets = fc.oneof(
    fc.record({
      cmd: fc.constant('puback' as const),
      messageId: fc.oneof(fc.integer({ min: 0, max: 65_535 }), fc.constantFrom(65_536, -1, 1.5, Number.NaN)),
    }),
    fc.record({
      cmd: fc.constant('puback' as const),
      messageId: fc.integer({ min: 0, max: 65_535 }),
      reasonCode: fc.constantFrom(0, 16, 128),
      properties: fc.option(fc.record({ reasonString: fc.string({ maxLength: 8 }) }), { nil: undefined }),
    }),
    fc.record({
      cmd: fc.constantFrom('pubrec' as const, 'pubcomp' as const),
      messageId: fc.integer({ min: 0, max: 65_535 }),
    }),
  );
  const versions = fc.constantFrom(
    undefined,
    { protocolVersion: 3 },
    { protocolVersion: 4 },
    { protocolVersion: 5 },
    {},
  );
  await fc.assert(
    fc.asyncProperty(packets, versions, async (packet, opts) => {
      const ours = written((s) => mqttPacket.writeToStream(packet as mqttPacket.Packet, s as never, opts));
      const theirs = written((s) => mqttPacketWriteToStream(packet as mqttPacket.Packet, s as never, opts));
      await new Promise((r) => setImmediate(r));
      assert.deepEqual(ours, theirs);
    }),
    { numRuns: 2000 },
  );
  // the hub's own case, checked by name: an MQTT 3.1.1 PUBACK is these four bytes
  assert.equal(
    written((s) => mqttPacket.writeToStream({ cmd: 'puback', messageId: 0x1234 }, s as never)).bytes,
    '40021234',
  );
  // mqtt.js sets cacheNumbers on each client: it still reaches mqtt-packet's writer
  assert.equal(mqttPacket.writeToStream.cacheNumbers, false);
});

test('a PUBLISH in one write: the same bytes and result as mqtt-packet’s writer, any topic, payload, QoS, flags, id or version (fast-check)', async () => {
  const payloads = fc.oneof(
    { weight: 4, arbitrary: fc.uint8Array({ maxLength: 300 }).map((a) => Buffer.from(a)) },
    // past one and two bytes of remaining length, and past the copied payload's bound
    { weight: 1, arbitrary: fc.integer({ min: 100, max: 70_000 }).map((n) => Buffer.alloc(n, 7)) },
    { weight: 1, arbitrary: fc.constantFrom(undefined, null, '', 'text payload') },
  );
  const packets = fc.record({
    cmd: fc.constant('publish' as const),
    topic: fc.oneof(
      { weight: 5, arbitrary: fc.string({ unit: 'grapheme', maxLength: 40 }) },
      { weight: 1, arbitrary: fc.constantFrom('\uD800lone', 'x'.repeat(70_000), Buffer.from('buffer/topic')) },
    ),
    payload: payloads,
    qos: fc.constantFrom(0, 1, 2, undefined, 3, 1.5),
    messageId: fc.oneof(fc.integer({ min: 0, max: 65_535 }), fc.constantFrom(undefined, 65_536, -1, 2.5)),
    dup: fc.constantFrom(true, false, undefined, 1),
    retain: fc.constantFrom(true, false, undefined, 'yes'),
  });
  const versions = fc.constantFrom(undefined, { protocolVersion: 4 }, { protocolVersion: 5 }, {});
  await fc.assert(
    fc.asyncProperty(packets, versions, async (packet, opts) => {
      const ours = written((s) => mqttPacket.writeToStream(packet as unknown as mqttPacket.Packet, s as never, opts));
      const theirs = written((s) => mqttPacketWriteToStream(packet as unknown as mqttPacket.Packet, s as never, opts));
      await new Promise((r) => setImmediate(r));
      assert.deepEqual(ours, theirs);
    }),
    { numRuns: 2000 },
  );
  // every length around the remaining length's one-, two- and three-byte bounds
  for (const qos of [0, 1] as const) {
    for (const around of [127, 16_383]) {
      for (let length = around - 3; length <= around + 3; length++) {
        const packet = {
          cmd: 'publish' as const,
          topic: 't',
          payload: Buffer.alloc(length - 3 - qos * 2, 1),
          qos,
          messageId: 9,
        };
        assert.deepEqual(
          written((s) => mqttPacket.writeToStream(packet as mqttPacket.Packet, s as never)),
          written((s) => mqttPacketWriteToStream(packet as mqttPacket.Packet, s as never)),
          `remaining length ${length}, QoS ${qos}`,
        );
      }
    }
  }
  // the hub's own case, checked by name: QoS 1, topic "t/x", id 0x0102, payload "hi"
  assert.equal(
    written((s) =>
      mqttPacket.writeToStream(
        {
          cmd: 'publish',
          topic: 't/x',
          payload: Buffer.from('hi'),
          qos: 1,
          messageId: 0x0102,
          dup: false,
          retain: false,
        },
        s as never,
      ),
    ).bytes,
    '32090003742f78010268 69'.replace(' ', ''),
  );
});
