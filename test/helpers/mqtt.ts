import net from 'node:net';
import { Aedes } from 'aedes';
import mqtt, { type IClientOptions, type MqttClient } from 'mqtt';
import mqttPacket from 'mqtt-packet';
import { sessionQueues } from '../../modules/broker/outgoing-index.js';
import { scaled } from './wait.js';

export interface TestBroker {
  port: number;
  url: string;
  aedes: Aedes;
  close(): Promise<void>;
}

/**
 * A bare aedes broker on a free loopback port (no auth), for tests of modules that need an
 * MQTT peer before the broker module is involved. TCP_NODELAY on every socket (docs/architecture.md#performance-decisions).
 * Its session queues are the embedded broker's (modules/broker/outgoing-index.ts): aedes' own
 * could let a PUBACK clear another packet of a persistent session, and closed the session's
 * connection over a resend no longer due; a test of the bridge must not meet those.
 */
export async function startTestBroker(port = 0): Promise<TestBroker> {
  const aedes = await Aedes.createBroker(sessionQueues());
  const server = net.createServer((socket) => {
    socket.setNoDelay(true);
    aedes.handle(socket);
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, '127.0.0.1', () => resolve());
  });
  const actual = (server.address() as net.AddressInfo).port;
  const sockets = new Set<net.Socket>();
  server.on('connection', (s) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
  });
  return {
    port: actual,
    url: `mqtt://127.0.0.1:${actual}`,
    aedes,
    async close() {
      for (const s of sockets) s.destroy();
      await new Promise<void>((r) => server.close(() => r()));
      await new Promise<void>((r) => aedes.close(() => r()));
    },
  };
}

/** The Mosquitto of this machine (CI starts it); override with TEST_MOSQUITTO_URL. */
export const MOSQUITTO_URL = process.env.TEST_MOSQUITTO_URL ?? 'mqtt://127.0.0.1:1883';

/** Connects an mqtt.js client and waits for CONNACK (rejects on error or after `ms`, scaled). */
export async function connectClient(url: string, opts: IClientOptions = {}, quietMs = 5000): Promise<MqttClient> {
  const ms = scaled(quietMs);
  const client = mqtt.connect(url, { reconnectPeriod: 0, connectTimeout: ms, ...opts });
  await new Promise<void>((resolve, reject) => {
    const t = setTimeout(() => reject(new Error(`no CONNACK from ${url} within ${ms} ms`)), ms);
    client.once('connect', () => {
      clearTimeout(t);
      resolve();
    });
    client.once('error', (err) => {
      clearTimeout(t);
      client.end(true);
      reject(err);
    });
  });
  return client;
}

/** Ends persistent sessions on a broker that outlives the tests (clean connect, then disconnect). */
export async function forgetSessions(url: string, clientIds: string[], opts: IClientOptions = {}): Promise<void> {
  for (const clientId of clientIds) {
    const c = await connectClient(url, { ...opts, clientId, clean: true }).catch(() => undefined);
    await c?.endAsync();
  }
}

/** Every packet and parser error the bytes give, fed in these chunks to one parser (a new one unless given). */
export function parseChunks(
  chunks: Buffer[],
  parser: ReturnType<typeof mqttPacket.parser> = mqttPacket.parser(),
): { packets: Array<Record<string, unknown>>; errors: string[] } {
  const packets: Array<Record<string, unknown>> = [];
  const errors: string[] = [];
  parser.on('packet', (p) => packets.push(p as unknown as Record<string, unknown>));
  parser.on('error', (e: Error) => errors.push(e.message));
  for (const c of chunks) parser.parse(c);
  return { packets, errors };
}
