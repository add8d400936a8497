/**
 * mqtt-packet (under mqtt.js and aedes) writes each packet id and topic length from a table of
 * 65 536 two-byte Buffers that it builds at the first packet written: 6.9 MB of the hub's JS
 * heap, about a tenth of its live objects with 10 000 agents online (bench `memory`, heap
 * snapshot). Making the two bytes per packet instead costs one small allocation from Node's
 * buffer pool. Process-wide, like the table it replaces: imported for this effect by every
 * module that opens MQTT connections or serves them (shared/mqtt-session.ts, broker/broker.ts),
 * before either writes a packet.
 */
import mqttPacket from 'mqtt-packet';

mqttPacket.writeToStream.cacheNumbers = false;
