/**
 * MQTT destination: QoS 1 publish of the JSON envelope on the route's topic template, through
 * the route's own mqtt.js client. Its own client, not the hub's bridge connection: core must
 * not reach into a module, the bridge may be restarting or absent (an instance with the outbox
 * but no bridge), and a delivery is confirmed only by this client's PUBACK, which the bus could
 * not carry back. With MQTT 5 the event id rides as a user property too.
 */
import { randomBytes } from 'node:crypto';
import mqtt, { type MqttClient } from 'mqtt';
import { HubError } from '../../errors.js';
import type { MqttDestinationConfig, OutboxEnvelope } from './contract.js';
import type { Destination } from './destination.js';

/** A level of a topic must not hold the MQTT wildcards or a separator. [MQTT-4.7.1] */
const unsafeLevel = (s: string) => s.replaceAll('+', '_').replaceAll('#', '_').replaceAll('/', '_') || '_';

export function topicFor(template: string, route: string, env: OutboxEnvelope): string {
  return template
    .replaceAll('{event_type}', unsafeLevel(env.event_type))
    .replaceAll('{key}', unsafeLevel(env.key))
    .replaceAll('{route}', unsafeLevel(route));
}

export class MqttDestination implements Destination {
  private readonly client: MqttClient;

  constructor(
    private readonly route: string,
    private readonly cfg: MqttDestinationConfig,
  ) {
    this.client = mqtt.connect(cfg.url, {
      clientId: cfg.client_id ?? `gmq-hub-outbox-${route}-${randomBytes(4).toString('hex')}`,
      username: cfg.username,
      password: cfg.password,
      protocolVersion: cfg.protocol_version,
      clean: true,
      reconnectPeriod: 1000,
      connectTimeout: cfg.timeout_ms,
      // an unacknowledged publish fails the attempt instead of being kept by mqtt.js across
      // reconnects: the relay owns retries, with the row's lease
      queueQoSZero: false,
    });
    this.client.on('error', () => undefined); // reported per attempt; mqtt.js reconnects on its own
  }

  send(envelope: OutboxEnvelope): Promise<void> {
    const topic = topicFor(this.cfg.topic, this.route, envelope);
    if (!this.client.connected)
      return Promise.reject(
        new HubError('OUTBOX_ERR_DELIVERY', `mqtt ${this.route}: not connected to ${this.cfg.url}`, {
          route: this.route,
        }),
      );
    const properties =
      this.cfg.protocol_version === 5
        ? {
            contentType: 'application/json',
            userProperties: { event_id: envelope.event_id, event_type: envelope.event_type },
          }
        : undefined;
    return new Promise<void>((resolve, reject) => {
      const timer = setTimeout(
        () =>
          reject(new HubError('OUTBOX_ERR_DELIVERY', `mqtt ${this.route}: no PUBACK within ${this.cfg.timeout_ms} ms`)),
        this.cfg.timeout_ms,
      );
      this.client.publish(topic, JSON.stringify(envelope), { qos: 1, properties }, (err) => {
        clearTimeout(timer);
        if (err)
          reject(
            new HubError(
              'OUTBOX_ERR_DELIVERY',
              `mqtt ${this.route}: ${err.message}`,
              { route: this.route },
              { cause: err },
            ),
          );
        else resolve();
      });
    });
  }

  async close(): Promise<void> {
    await this.client.endAsync(true).catch(() => undefined);
  }
}
