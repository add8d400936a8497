import net from 'node:net';
import { Aedes } from 'aedes';
import mqtt, { type IClientOptions, type MqttClient } from 'mqtt';
import mqttPacket, { type IConnectPacket, type IPublishPacket, type Packet } from 'mqtt-packet';
import { sessionQueues } from '../../modules/broker/outgoing-index.js';
import { scaled, until } from './wait.js';

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

/** A client written packet by packet (rawMqttClient): the test decides every PINGREQ and PUBACK. */
export interface RawMqttClient {
  /** Every packet the broker sent, in order. */
  packets: Packet[];
  /** The PUBLISH packets among them, in order (a new array at each read). */
  readonly publishes: IPublishPacket[];
  closed(): boolean;
  send(p: Packet): void;
  /** Ends the connection without a DISCONNECT, as a crash or a network loss does; resolves once closed. */
  drop(): Promise<void>;
}

/**
 * Connects to `port` on loopback and sends one CONNECT (MQTT 3.1.1, `connect` over a clean
 * session with keepalive 60 unless it says otherwise); resolves at a CONNACK that accepts, and
 * fails on one that refuses or none within `ms`.
 *
 * @example
 *   const raw = await rawMqttClient(port, { clientId: 'a', clean: false });
 *   raw.send({ cmd: 'subscribe', messageId: 1, subscriptions: [{ topic: 't', qos: 1 }] });
 */
export async function rawMqttClient(
  port: number,
  connect: Partial<Omit<IConnectPacket, 'cmd'>> & { clientId: string },
  ms = scaled(10_000),
): Promise<RawMqttClient> {
  const socket = net.connect(port, '127.0.0.1');
  const parser = mqttPacket.parser();
  const packets: Packet[] = [];
  parser.on('packet', (p) => packets.push(p));
  socket.on('data', (b) => parser.parse(b));
  socket.on('error', () => undefined); // a broker ending the connection is what some tests wait for
  const send = (p: Packet) => socket.write(mqttPacket.generate(p));
  await new Promise<void>((r) => socket.once('connect', () => r()));
  send({ cmd: 'connect', protocolId: 'MQTT', protocolVersion: 4, clean: true, keepalive: 60, ...connect });
  await until(() => packets.some((p) => p.cmd === 'connack'), ms, 'CONNACK');
  const connack = packets.find((p) => p.cmd === 'connack') as { returnCode?: number; reasonCode?: number };
  const code = connack.returnCode ?? connack.reasonCode ?? 0;
  if (code !== 0) {
    socket.destroy();
    throw new Error(`CONNACK refused the connection (${code})`);
  }
  return {
    packets,
    get publishes() {
      return packets.filter((p): p is IPublishPacket => p.cmd === 'publish');
    },
    closed: () => socket.closed,
    send,
    drop: async () => {
      socket.destroy();
      await new Promise<void>((r) => (socket.closed ? r() : socket.once('close', () => r())));
    },
  };
}
