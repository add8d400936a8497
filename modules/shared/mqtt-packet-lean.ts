/**
 * mqtt-packet (the MQTT codec under mqtt.js and aedes), made lean for a hub with thousands of
 * connections. Process-wide, like what it changes: imported for this effect by every module that
 * opens MQTT connections or serves them (shared/mqtt-session.ts, broker/broker.ts), before either
 * writes a packet or makes a parser. Five changes: the two below, and further down a PUBACK and a
 * PUBLISH in one write, a CONNECT's settings kept without the CONNECT, and PUBLISH packets read in
 * place (the writes and the reads checked against mqtt-packet's own results).
 *
 * **No table of packet numbers.** mqtt-packet writes each packet id and topic length from a table
 * of 65 536 two-byte Buffers that it builds at the first packet written: 6.9 MB of the hub's JS
 * heap, about a tenth of its live objects with 10 000 agents online (bench `memory`, heap
 * snapshot). Making the two bytes per packet instead costs one small allocation from Node's
 * buffer pool.
 *
 * **A plain list in each parser.** The parser (one per connection: each client of the embedded
 * broker, each mqtt.js session) keeps the bytes not yet parsed in bl's `BufferListStream`: a full
 * duplex stream from readable-stream, with its readable and writable states, their buffers and
 * bound callbacks, of which the parser uses only the list (append, consume, length,
 * readUInt8/16/32, slice, toString). bl's plain `BufferList` is that list without the stream:
 * about 0.9 KB of live JS heap less per connection, 150.0 → 141.3 MB with 10 000 agents on the
 * embedded broker (docs/benchmarks.md "The embedded broker's connections"). bl is loaded from where
 * mqtt-packet loads it, so the list is the one it was written for. If the parser no longer has
 * the shape this relies on, nothing is changed (`parserListIsPlain` then says false; a test
 * requires it to be true for the installed version).
 */
import { createRequire } from 'node:module';
import type { Writable } from 'node:stream';
import mqttPacket from 'mqtt-packet';
import { FrozenRecords } from './frozen-records.js';

mqttPacket.writeToStream.cacheNumbers = false;

/**
 * **A PUBACK, and a PUBLISH, in one write.** mqtt-packet writes a PUBACK as three writes (header,
 * length, packet id: the id a new two-byte Buffer) and a PUBLISH as five or six (header, length,
 * topic length, topic, id, payload), corks the stream and uncorks it on the next tick, and logs
 * through `debug` on the way. Every uplink the bridge takes is acknowledged so, every QoS 1
 * publish the embedded broker takes from an agent, and every message the embedded broker hands
 * the bridge or an agent, and every command the bridge sends, is written so. Here an MQTT 3.1.1
 * PUBACK is one 4-byte Buffer, and a PUBLISH with a text topic and a payload of at most 64 KiB one
 * Buffer (its payload copied in): one write each, the same bytes, the same return value (true for
 * a PUBACK, the write's for a PUBLISH: the stream's buffered length against its high-water mark
 * after the whole packet, as after mqtt-packet's last write). MQTT 5 (a reason code,
 * properties), other packets, a Buffer topic or one past 65 535 bytes, a larger or non-Buffer
 * payload, a QoS or id out of range go to mqtt-packet's own writer.
 */
type WriteToStream = typeof mqttPacket.writeToStream;
const packetWriteToStream: WriteToStream = mqttPacket.writeToStream;
/** mqtt-packet's own writer, as it was before the change (tests compare the two). */
export const mqttPacketWriteToStream = packetWriteToStream;
const PUBACK_HEADER = 0x40;
const PUBLISH_HEADER = 0x30;
/** A larger payload is written by mqtt-packet (in its own write, not copied). */
const MAX_COPIED_PAYLOAD = 65_536;

const writeToStream = function writeToStream(
  packet: mqttPacket.Packet,
  stream: Writable,
  opts?: { protocolVersion?: number },
): boolean {
  // mqtt-packet's own default: no options is MQTT 3.1.1
  const mqtt5 = (opts ? opts.protocolVersion : 4) === 5;
  if (!mqtt5 && packet?.cmd === 'puback') {
    const id = (packet as { messageId?: unknown }).messageId;
    if (isPacketId(id)) {
      const bytes = Buffer.allocUnsafe(4);
      bytes[0] = PUBACK_HEADER;
      bytes[1] = 2;
      bytes.writeUInt16BE(id, 2);
      stream.write(bytes);
      return true;
    }
  }
  if (!mqtt5 && packet?.cmd === 'publish') {
    const bytes = publishBytes(packet as PublishToWrite);
    if (bytes !== null) return stream.write(bytes);
  }
  return packetWriteToStream(packet, stream as unknown as Parameters<WriteToStream>[1], opts);
} as unknown as WriteToStream;
interface PublishToWrite {
  qos?: unknown;
  dup?: unknown;
  retain?: unknown;
  topic?: unknown;
  payload?: unknown;
  messageId?: unknown;
}

/** An MQTT 3.1.1 PUBLISH as one Buffer, or null when mqtt-packet should write it (see above). */
function publishBytes(p: PublishToWrite): Buffer | null {
  const qos = p.qos || 0;
  if (qos !== 0 && qos !== 1 && qos !== 2) return null;
  const topic = p.topic;
  const payload = p.payload || EMPTY;
  if (typeof topic !== 'string' || !Buffer.isBuffer(payload) || payload.length > MAX_COPIED_PAYLOAD) return null;
  const id = p.messageId;
  if (qos > 0 && !isPacketId(id)) return null;
  const topicBytes = Buffer.byteLength(topic);
  if (topicBytes > 0xffff) return null;
  const length = 2 + topicBytes + (qos > 0 ? 2 : 0) + payload.length;
  const lengthBytes = length < 0x80 ? 1 : length < 0x4000 ? 2 : length < 0x200000 ? 3 : 4;
  const bytes = Buffer.allocUnsafe(1 + lengthBytes + length);
  bytes[0] = PUBLISH_HEADER | (p.dup ? 8 : 0) | (qos << 1) | (p.retain ? 1 : 0);
  let at = 1;
  for (let left = length; ; ) {
    const digit = left % 0x80;
    left = Math.floor(left / 0x80);
    bytes[at++] = left > 0 ? digit | 0x80 : digit;
    if (left === 0) break;
  }
  at = bytes.writeUInt16BE(topicBytes, at);
  at += bytes.write(topic, at, 'utf8');
  if (qos > 0) at = bytes.writeUInt16BE(id as number, at);
  payload.copy(bytes, at);
  return bytes;
}
const EMPTY = Buffer.alloc(0);

/** A packet id two bytes can carry (mqtt-packet's writer throws or writes garbage for others: they go to it). */
function isPacketId(id: unknown): id is number {
  return typeof id === 'number' && Number.isInteger(id) && id >= 0 && id <= 0xffff;
}

// mqtt.js sets `writeToStream.cacheNumbers` on each new client: it reaches mqtt-packet's own
Object.defineProperty(writeToStream, 'cacheNumbers', {
  get: () => packetWriteToStream.cacheNumbers,
  set: (v: boolean) => {
    packetWriteToStream.cacheNumbers = v;
  },
});
mqttPacket.writeToStream = writeToStream;

interface ParserInternals {
  _resetState(): void;
  _list: unknown;
}

const fromMqttPacket = createRequire(createRequire(import.meta.url).resolve('mqtt-packet'));
const { BufferList } = fromMqttPacket('bl') as { BufferList?: new () => unknown };

const proto = Object.getPrototypeOf(mqttPacket.parser()) as Partial<ParserInternals>;
const resetState = proto._resetState;
if (typeof resetState === 'function' && typeof BufferList === 'function') {
  proto._resetState = function plainListReset(this: ParserInternals) {
    resetState.call(this);
    // the stream resetState made is dropped at once; the list lives as long as the connection
    this._list = new BufferList();
  };
}

/**
 * **A CONNECT's settings, not the CONNECT.** After a CONNECT the parser keeps the whole packet as
 * its `settings`, for the rest of the connection, and reads two fields of it: `protocolVersion`
 * and `bridgeMode`. The packet holds the client id, the will, the username and the password, a
 * view of the read it came in: with 10 000 agents on the embedded broker, 10 000 such reads and
 * packets kept alive for those two fields. The parser keeps the two fields, in a record shared by
 * every parser with the same two (frozen: mqtt-packet only reads it, and a later CONNECT replaces
 * it): 40 bytes a connection less than a record of its own.
 */
const sharedSettings = new FrozenRecords<{ protocolVersion?: number; bridgeMode?: boolean }>();
// a CONNECT that parsed has version 3, 4 or 5, and bridgeMode true or absent: a handful of keys
const settingsOf = (protocolVersion: number | undefined, bridgeMode: boolean | undefined) =>
  sharedSettings.get(`${protocolVersion}${bridgeMode}`, () => ({ protocolVersion, bridgeMode }));
const parseConnect = (proto as { _parseConnect?: () => unknown })._parseConnect;
if (typeof parseConnect === 'function') {
  (proto as { _parseConnect: () => unknown })._parseConnect = function connectSettingsOnly(this: {
    settings: { cmd?: string; protocolVersion?: number; bridgeMode?: boolean };
  }) {
    const r = parseConnect.call(this);
    const s = this.settings;
    if (s?.cmd === 'connect') this.settings = settingsOf(s.protocolVersion, s.bridgeMode);
    return r;
  };
}

/** Whether a new parser's list is bl's plain BufferList (the patch above took). */
export function parserListIsPlain(): boolean {
  const list = (mqttPacket.parser() as unknown as ParserInternals)._list as { _readableState?: unknown };
  return typeof BufferList === 'function' && list instanceof BufferList && list._readableState === undefined;
}

/**
 * **PUBLISH packets read in place.** mqtt-packet reads every packet through its list: each byte
 * and number is a `slice` of the list (a new Buffer view), each step logs through `debug` (its
 * arguments gathered even when the log is off), and the list is appended to and consumed for every
 * packet. For the hub's bridge that was about 30 % of the bytes it allocated for a heartbeat (bench
 * `heartbeat`, an allocation profile of the hub). `parse` here reads the whole PUBLISH packets at
 * the front of a read (MQTT 3.1 and 3.1.1: no properties) straight from the Buffer it was given,
 * into the same `Packet` with the same fields (the payload a view of the read, as the list's
 * `slice` gives it), and hands everything else to mqtt-packet's own `parse`: any other packet, a
 * packet cut by the end of the read, anything malformed (mqtt-packet then reports it as it always
 * did), MQTT 5. A packet begun in an earlier read is finished by mqtt-packet with exactly the bytes
 * it lacks, and the rest of the read comes back here. A fast-check property feeds both parsers the
 * same bytes, valid and not, cut anywhere, and requires the same packets and errors
 * (test/modules/shared/mqtt-packet-list.test.ts).
 */
interface ParserState extends ParserInternals {
  _stateCounter: number;
  error: Error | null;
  packet: { length: number };
  settings: { protocolVersion?: number };
  _list: { length: number; append(b: Buffer): unknown };
  emit(event: 'packet', packet: unknown): boolean;
  /** parseInPlace is handing out packets of this parser (a call from their listeners waits in `_later`). */
  _inPlace?: boolean;
  _later?: Buffer[];
}
type Parse = (this: ParserState, buf: Buffer) => number;

const PUBLISH = 3;
/** The parser's state that waits for a packet's remaining bytes (its `_states`: header, length, payload, new packet). */
const PAYLOAD_STATE = 2;
const Packet = fromMqttPacket('./packet.js') as new () => PublishPacket;
interface PublishPacket {
  cmd: string;
  retain: boolean;
  qos: number;
  dup: boolean;
  length: number;
  topic: string | null;
  payload: Buffer | null;
  messageId?: number;
}

const packetParse = (proto as { parse?: Parse }).parse;
/** mqtt-packet's own `parse`, as it was before the change (tests compare the two). */
export const mqttPacketParse: Parse | undefined = packetParse;

if (typeof packetParse === 'function' && typeof Packet === 'function') {
  (proto as { parse: Parse }).parse = function parseInPlace(this: ParserState, buf: Buffer): number {
    if (this._inPlace) {
      // called from a listener of a packet this parser is handing out (aedes reads its socket's
      // next bytes when a packet's handling ended at once): those bytes follow the ones in hand
      if (this._later) this._later.push(buf);
      else this._later = [buf];
      return this._list.length;
    }
    this._inPlace = true;
    try {
      let left = parseRead(this, buf, packetParse);
      for (let next = this._later?.shift(); next !== undefined; next = this._later?.shift()) {
        left = parseRead(this, next, packetParse);
      }
      return left;
    } finally {
      this._inPlace = false;
      // only when a listener threw: what it left unread waits in the list
      if (this._later?.length) for (const b of this._later.splice(0)) this._list.append(b);
    }
  };
}

/** One read: the whole PUBLISH packets in it here, the rest (and a packet begun before) by mqtt-packet. */
function parseRead(p: ParserState, buf: Buffer, packetParse: Parse): number {
  if (p.error || !Buffer.isBuffer(buf) || p.settings.protocolVersion === 5) return packetParse.call(p, buf);
  let from = 0;
  if (p._list.length > 0) {
    // a packet begun in an earlier read: mqtt-packet finishes it with the bytes it lacks
    const lacking = p._stateCounter === PAYLOAD_STATE ? p.packet.length - p._list.length : -1;
    if (lacking <= 0 || lacking >= buf.length) return packetParse.call(p, buf);
    packetParse.call(p, buf.subarray(0, lacking));
    if (p.error || p._list.length > 0 || p._stateCounter !== 0) {
      p._list.append(buf.subarray(lacking));
      return p._list.length;
    }
    from = lacking;
  } else if (p._stateCounter !== 0) {
    return packetParse.call(p, buf);
  }
  const end = buf.length;
  while (from < end) {
    const packet = readPublish(buf, from, end);
    if (packet === null) break;
    from = readEnd;
    try {
      p.emit('packet', packet);
    } catch (err) {
      if (from < end) p._list.append(buf.subarray(from));
      throw err;
    }
    if (p.error || p._list.length > 0 || p._stateCounter !== 0) {
      // a listener reset or failed the parser: what is left waits in its list, as mqtt-packet leaves it
      if (from < end) p._list.append(buf.subarray(from));
      return p._list.length;
    }
  }
  if (from === end) return 0;
  return packetParse.call(p, from === 0 ? buf : buf.subarray(from));
}

/** Where the packet readPublish returned ends (a module variable: no pair allocated per packet). */
let readEnd = 0;

/** One whole, well-formed MQTT 3.1.1 PUBLISH at `from`, or null (anything else: mqtt-packet reads it). */
function readPublish(buf: Buffer, from: number, end: number): PublishPacket | null {
  const first = buf[from];
  if (first >> 4 !== PUBLISH) return null;
  const qos = (first >> 1) & 3;
  if (qos === 3) return null;
  // the remaining length: one to four bytes, seven bits each
  let i = from + 1;
  let length = 0;
  let mul = 1;
  for (let n = 0; ; n++) {
    if (n === 4 || i >= end) return null;
    const b = buf[i++];
    length += (b & 0x7f) * mul;
    mul *= 0x80;
    if ((b & 0x80) === 0) break;
  }
  const next = i + length;
  if (next > end || length < 2) return null;
  const topicEnd = i + 2 + ((buf[i] << 8) | buf[i + 1]);
  const payloadAt = qos > 0 ? topicEnd + 2 : topicEnd;
  if (payloadAt > next) return null;
  const packet = new Packet();
  packet.cmd = 'publish';
  packet.retain = (first & 1) !== 0;
  packet.qos = qos;
  packet.dup = (first & 8) !== 0;
  packet.length = length;
  packet.topic = buf.toString('utf8', i + 2, topicEnd);
  if (qos > 0) packet.messageId = (buf[topicEnd] << 8) | buf[topicEnd + 1];
  // as the list's slice: a view of the read, a new empty Buffer for an empty payload
  packet.payload = payloadAt === next ? Buffer.alloc(0) : buf.subarray(payloadAt, next);
  readEnd = next;
  return packet;
}
