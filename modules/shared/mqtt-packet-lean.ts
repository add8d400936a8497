/**
 * mqtt-packet (the MQTT codec under mqtt.js and aedes), made lean for a hub with thousands of
 * connections. Process-wide, like what it changes: imported for this effect by every module that
 * opens MQTT connections or serves them (shared/mqtt-session.ts, broker/broker.ts), before either
 * writes a packet or makes a parser. Two changes:
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
 * embedded broker (README "The embedded broker's connections"). bl is loaded from where
 * mqtt-packet loads it, so the list is the one it was written for. If the parser no longer has
 * the shape this relies on, nothing is changed (`parserListIsPlain` then says false; a test
 * requires it to be true for the installed version).
 */
import { createRequire } from 'node:module';
import mqttPacket from 'mqtt-packet';

mqttPacket.writeToStream.cacheNumbers = false;

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

/** Whether a new parser's list is bl's plain BufferList (the patch above took). */
export function parserListIsPlain(): boolean {
  const list = (mqttPacket.parser() as unknown as ParserInternals)._list as { _readableState?: unknown };
  return typeof BufferList === 'function' && list instanceof BufferList && list._readableState === undefined;
}
