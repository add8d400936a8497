/**
 * A TCP proxy between one agent and its broker that understands MQTT framing, for the e2e tests:
 * cut the network, lose the agent's uplinks after a PUBACK, see what reaches the agent and when.
 */
import net from 'node:net';
import type { Json } from './harness.js';

export interface SeenPublish {
  at: number;
  topic: string;
  qos: number;
  packetId?: number;
  payload: Buffer;
  json: Json;
}

/**
 * Splits a byte stream into MQTT control packets (fixed header: type/flags byte, then the
 * "remaining length" varint of up to four bytes, [MQTT-2.2.3]).
 */
class Framer {
  private buf: Buffer = Buffer.alloc(0);

  push(chunk: Buffer): Buffer[] {
    this.buf = this.buf.length === 0 ? chunk : Buffer.concat([this.buf, chunk]);
    const out: Buffer[] = [];
    for (;;) {
      let len = 0;
      let mul = 1;
      let i = 1;
      let complete = false;
      for (; i <= 4 && i < this.buf.length; i++) {
        const b = this.buf[i];
        len += (b & 0x7f) * mul;
        mul *= 128;
        if ((b & 0x80) === 0) {
          complete = true;
          break;
        }
      }
      if (!complete) return out;
      const total = i + 1 + len;
      if (this.buf.length < total) return out;
      out.push(this.buf.subarray(0, total));
      this.buf = this.buf.subarray(total);
    }
  }
}

/** Decodes an MQTT 3.1.1 PUBLISH (type 3), or null for any other packet. */
function decodePublish(pkt: Buffer): Omit<SeenPublish, 'at'> | null {
  if (pkt[0] >> 4 !== 3) return null;
  const qos = (pkt[0] >> 1) & 3;
  let i = 1;
  while (pkt[i] & 0x80) i++;
  i++;
  const topicLen = pkt.readUInt16BE(i);
  const topic = pkt.subarray(i + 2, i + 2 + topicLen).toString('utf8');
  i += 2 + topicLen;
  let packetId: number | undefined;
  if (qos > 0) {
    packetId = pkt.readUInt16BE(i);
    i += 2;
  }
  const payload = Buffer.from(pkt.subarray(i));
  let json: Json = null;
  try {
    json = JSON.parse(payload.toString('utf8'));
  } catch {
    // not JSON: kept as bytes
  }
  return { topic, qos, packetId, payload, json };
}

/**
 * A TCP proxy between one agent and its broker that understands MQTT framing:
 * - `cut()` ends every connection and refuses new ones until `restore()` (a network outage; the
 *   broker sees the sockets close, so it sends the agent's last will);
 * - `dropUplink` drops PUBLISHes the agent sends and answers their PUBACK itself, like a broker
 *   that acknowledged a message and then lost it;
 * - `downlinks` records every PUBLISH the broker delivered to the agent, with its arrival time.
 */
export class MqttProxy {
  readonly downlinks: SeenPublish[] = [];
  readonly dropped: SeenPublish[] = [];
  dropUplink: ((p: SeenPublish) => boolean) | null = null;
  private down = false;
  private readonly pairs = new Set<{ client: net.Socket; upstream: net.Socket }>();

  private constructor(
    private readonly server: net.Server,
    readonly url: string,
  ) {}

  static async start(targetUrl: string): Promise<MqttProxy> {
    const target = new URL(targetUrl);
    let proxy!: MqttProxy;
    const server = net.createServer((client) => proxy.accept(client, target.hostname, Number(target.port || 1883)));
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(0, '127.0.0.1', () => resolve());
    });
    proxy = new MqttProxy(server, `mqtt://127.0.0.1:${(server.address() as net.AddressInfo).port}`);
    return proxy;
  }

  /** Ends every connection; new ones are closed at once until `restore()`. */
  cut(): void {
    this.down = true;
    for (const { client, upstream } of this.pairs) {
      client.destroy();
      upstream.destroy();
    }
    this.pairs.clear();
  }

  restore(): void {
    this.down = false;
  }

  get connections(): number {
    return this.pairs.size;
  }

  async close(): Promise<void> {
    this.cut();
    await new Promise<void>((r) => this.server.close(() => r()));
  }

  private accept(client: net.Socket, host: string, port: number): void {
    if (this.down) {
      client.destroy();
      return;
    }
    client.setNoDelay(true);
    const upstream = net.connect({ host, port, noDelay: true });
    const pair = { client, upstream };
    this.pairs.add(pair);
    const end = () => {
      this.pairs.delete(pair);
      client.destroy();
      upstream.destroy();
    };
    client.on('error', end).on('close', end);
    upstream.on('error', end).on('close', end);

    const up = new Framer();
    client.on('data', (chunk: Buffer) => {
      for (const pkt of up.push(chunk)) {
        const pub = decodePublish(pkt);
        if (pub && this.dropUplink) {
          const seen = { ...pub, at: Date.now() };
          if (this.dropUplink(seen)) {
            this.dropped.push(seen);
            // PUBACK [MQTT-3.4]: the agent believes the broker has it
            if (pub.qos === 1 && pub.packetId !== undefined) {
              client.write(Buffer.from([0x40, 0x02, pub.packetId >> 8, pub.packetId & 0xff]));
            }
            continue;
          }
        }
        upstream.write(pkt);
      }
    });
    const downFramer = new Framer();
    upstream.on('data', (chunk: Buffer) => {
      for (const pkt of downFramer.push(chunk)) {
        const pub = decodePublish(pkt);
        if (pub) this.downlinks.push({ ...pub, at: Date.now() });
        client.write(pkt);
      }
    });
  }
}
