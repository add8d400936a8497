/**
 * An MQTT consumer as its own process, for the outbox e2e test: subscribes (QoS 1, MQTT 5) to a
 * topic filter and prints one JSON line per message: the envelope's event id and the user
 * property's, the topic, type, key and data.
 *
 *   node outbox-mqtt-consumer.js <broker-url> <filter>
 *   stdout: {"subscribed":true} then one line per message (duplicate: an id seen before, dropped)
 */
import mqtt from 'mqtt';

const [url, filter] = process.argv.slice(2);
const out = (v: unknown) => process.stdout.write(`${JSON.stringify(v)}\n`);
/** Consumers deduplicate on the event id (at-least-once delivery): a repeat is marked, not processed. */
const seen = new Set<string>();
const client = mqtt.connect(url, { protocolVersion: 5, clean: true, reconnectPeriod: 200 });
client.on('connect', () => {
  client.subscribe(filter, { qos: 1 }, (err) => {
    if (err) throw err;
    out({ subscribed: true });
  });
});
client.on('message', (topic, payload, packet) => {
  const env = JSON.parse(payload.toString('utf8'));
  const props = (packet.properties?.userProperties ?? {}) as Record<string, string | string[]>;
  const duplicate = seen.has(env.event_id);
  seen.add(env.event_id);
  out({
    duplicate,
    topic,
    event_id: env.event_id,
    header_id: props.event_id,
    event_type: env.event_type,
    key: env.key,
    data: env.data,
  });
});
process.on('SIGTERM', () => client.end(true, () => process.exit(0)));
