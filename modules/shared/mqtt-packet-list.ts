/**
 * mqtt-packet's parser (one per MQTT connection: each client of the embedded broker, each
 * mqtt.js session) keeps the bytes not yet parsed in bl's `BufferListStream`: a full duplex
 * stream from readable-stream, with its readable and writable states, their buffers and bound
 * callbacks, of which the parser uses only the list (append, consume, length, readUInt8/16/32,
 * slice, toString). bl's plain `BufferList` is that list without the stream. Measured with 10 000
 * agents on the embedded broker (bench `memory`, heap snapshot): about 1 KB of live JS heap per
 * connection, 10 MB in all (README "The embedded broker's connections").
 *
 * Process-wide, like mqtt-packet-numbers.ts: imported for this effect by every module that opens
 * MQTT connections or serves them (shared/mqtt-session.ts, broker/broker.ts), before either makes
 * a parser. bl is loaded from where mqtt-packet loads it, so the list is the one it was written
 * for. If mqtt-packet's parser no longer has the shape this relies on, nothing is changed
 * (`parserListIsPlain` then says false; a test requires it to be true for the installed version).
 */
import { createRequire } from 'node:module';
import mqttPacket from 'mqtt-packet';

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
