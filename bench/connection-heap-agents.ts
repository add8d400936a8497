/**
 * The agents of the `connection-heap` suite (bench/connection-heap-child.ts): N MQTT connections
 * to 127.0.0.1:<port>, as the agent module makes them (client id `agent-<project>`, `clean:
 * false`, its two downlink subscriptions at QoS 1), 50 at a time. Tells its parent how many are
 * up, then holds them until it is killed. argv: port, N, the projects' secret.
 */
import mqtt, { type MqttClient } from 'mqtt';
import { deriveMqttPassword } from '../modules/shared/credentials.js';

async function connect(port: number, project: string, secret: string): Promise<MqttClient> {
  const client = mqtt.connect(`mqtt://127.0.0.1:${port}`, {
    clientId: `agent-${project}`,
    username: project,
    password: deriveMqttPassword(project, secret),
    clean: false,
    reconnectPeriod: 0,
    keepalive: 60,
  });
  await new Promise<void>((resolve, reject) => {
    client.once('connect', () => resolve());
    client.once('error', reject);
  });
  await client.subscribeAsync([`wdd/RDMC/command/down/${project}`, `wdd/RDMC/message/down/${project}`], { qos: 1 });
  return client;
}

async function main(): Promise<void> {
  const [port, n] = process.argv.slice(2, 4).map(Number);
  const secret = process.argv[4] ?? '';
  const held: MqttClient[] = [];
  let next = 0;
  await Promise.all(
    Array.from({ length: 50 }, async () => {
      while (next < n) held.push(await connect(port, `bench-${next++}`, secret));
    }),
  );
  process.send?.({ connected: held.length });
  setInterval(() => {}, 60_000);
}

void main();
