/**
 * modules/broker/lean-connection.ts on the installed aedes: a client made lean still closes on
 * every way a connection ends (the peer's FIN, a reset, the broker destroying the socket, a
 * malformed packet), still runs QoS 1 and QoS 2 both ways, and holds no function of its own on its
 * socket (the listeners are the same objects on every connection: no closure per connection).
 */
import assert from 'node:assert/strict';
import net from 'node:net';
import { after, before, describe, it } from 'node:test';
import { Aedes, type Client } from 'aedes';
import mqtt, { type MqttClient } from 'mqtt';
import { InboundIds, leanConnection, leanOnceConnected } from '../../../modules/broker/lean-connection.js';
import { sessionQueues } from '../../../modules/broker/outgoing-index.js';
import { scaled, until, withTimeout } from '../../helpers/wait.js';

interface Served {
  socket: net.Socket;
  client: Client;
  lean: boolean;
}

describe('lean connections (aedes clients without per-connection listeners)', () => {
  let aedes: Aedes;
  let server: net.Server;
  let url: string;
  const served: Served[] = [];
  const wills: string[] = [];
  const gone: string[] = [];
  const errors: string[] = [];

  before(async () => {
    aedes = await Aedes.createBroker({ ...sessionQueues(), maxInflightInbound: 2 });
    aedes.on('clientDisconnect', (c) => gone.push(c.id));
    // as the broker module does (broker.ts)
    aedes.on('clientReady', (c) => queueMicrotask(() => leanOnceConnected(c)));
    aedes.on('clientError', (c, err) => errors.push(`${c.id}: ${err.message}`));
    aedes.on('publish', (packet) => {
      if (packet.topic.startsWith('will/')) wills.push(packet.topic);
    });
    server = net.createServer((socket) => {
      socket.setNoDelay(true);
      const client = aedes.handle(socket);
      served.push({ socket, client, lean: leanConnection(client) });
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    url = `mqtt://127.0.0.1:${(server.address() as net.AddressInfo).port}`;
  });

  after(async () => {
    await new Promise<void>((r) => aedes.close(() => r()));
    await new Promise<void>((r) => server.close(() => r()));
  });

  /** Connects with a will on will/<id>, and returns the client with the broker's side of it. */
  async function connect(id: string): Promise<{ peer: MqttClient; side: Served }> {
    const peer = mqtt.connect(url, {
      clientId: id,
      reconnectPeriod: 0,
      will: { topic: `will/${id}`, payload: Buffer.from('gone'), qos: 0, retain: false },
    });
    await withTimeout(
      new Promise<void>((resolve, reject) => {
        peer.once('connect', () => resolve());
        peer.once('error', reject);
      }),
      scaled(5000),
      `${id} connected`,
    );
    const side = served.find((s) => s.client.id === id);
    assert.ok(side, `the broker's side of ${id}`);
    return { peer, side };
  }

  const closedOnBroker = (id: string, what: string) =>
    until(
      () => gone.includes(id) && !(aedes as unknown as { clients: Record<string, unknown> }).clients[id],
      scaled(5000),
      what,
    );

  it('the installed aedes takes it, and every connection shares the same listeners', async () => {
    const a = await connect('lean-a');
    const b = await connect('lean-b');
    assert.equal(a.side.lean, true, 'leanConnection applied to the installed aedes');
    assert.equal(b.side.lean, true);
    for (const event of ['error', 'end', 'close', 'finish'] as const) {
      const la = a.side.socket.listeners(event);
      const lb = b.side.socket.listeners(event);
      assert.deepEqual(la, lb, `'${event}' listeners are the same functions on both sockets`);
      for (const fn of la) assert.doesNotMatch(fn.name, /^bound /, `no bound function per socket on '${event}'`);
    }
    const parserErrors = (c: Client) => (c as unknown as { _parser: NodeJS.EventEmitter })._parser.listeners('error');
    assert.deepEqual(parserErrors(a.side.client), parserErrors(b.side.client));
    assert.ok(Object.getPrototypeOf((a.side.client as unknown as { duplicates: object }).duplicates) === null);
    // once connected, the client's and its parser's listener tables are new ones (fast objects), the
    // same listeners in them, still without a prototype
    await new Promise((r) => setImmediate(r));
    for (const c of [a.side.client, b.side.client]) {
      const parser = (c as unknown as { _parser: NodeJS.EventEmitter })._parser;
      for (const emitter of [c as unknown as NodeJS.EventEmitter, parser]) {
        assert.equal(Object.getPrototypeOf((emitter as unknown as { _events: object })._events), null);
      }
      assert.deepEqual(Object.keys((c as unknown as { _events: object })._events), ['error']);
      assert.deepEqual(Object.keys((parser as unknown as { _events: object })._events).sort(), ['error', 'packet']);
    }
    a.peer.end(true);
    b.peer.end(true);
    await closedOnBroker('lean-a', 'lean-a closed');
    await closedOnBroker('lean-b', 'lean-b closed');
  });

  it('QoS 1 and QoS 2 run both ways, and a delivery is not repeated', async () => {
    const sub = await connect('lean-sub');
    const pub = await connect('lean-pub');
    const got: string[] = [];
    sub.peer.on('message', (_t, payload) => got.push(payload.toString()));
    await sub.peer.subscribeAsync('lean/topic', { qos: 2 });
    for (let i = 0; i < 6; i++) await pub.peer.publishAsync('lean/topic', `m${i}`, { qos: i % 2 === 0 ? 1 : 2 });
    await until(() => got.length >= 6, scaled(5000), 'six deliveries');
    // a QoS 2 PUBLISH held its slot until PUBREL: the window is free again after each
    assert.equal((pub.side.client as unknown as { _inboundInflight: InboundIds })._inboundInflight.size, 0);
    await new Promise((r) => setTimeout(r, 200));
    assert.deepEqual(got, ['m0', 'm1', 'm2', 'm3', 'm4', 'm5']);
    sub.peer.end(true);
    pub.peer.end(true);
    await closedOnBroker('lean-sub', 'lean-sub closed');
    await closedOnBroker('lean-pub', 'lean-pub closed');
  });

  it('a clean DISCONNECT closes the client without its will', async () => {
    const { peer } = await connect('lean-clean');
    peer.end();
    await closedOnBroker('lean-clean', 'lean-clean closed');
    assert.ok(!wills.includes('will/lean-clean'));
  });

  it("the peer's FIN without DISCONNECT closes the client and sends its will", async () => {
    const { peer } = await connect('lean-fin');
    (peer.stream as net.Socket).end();
    await closedOnBroker('lean-fin', 'lean-fin closed');
    await until(() => wills.includes('will/lean-fin'), scaled(5000), 'will of lean-fin');
  });

  it("the peer's reset closes the client and sends its will", async () => {
    const { peer } = await connect('lean-rst');
    (peer.stream as net.Socket).resetAndDestroy();
    await closedOnBroker('lean-rst', 'lean-rst closed');
    await until(() => wills.includes('will/lean-rst'), scaled(5000), 'will of lean-rst');
  });

  it('the broker destroying the socket (a revoke, a packet too big) closes the client', async () => {
    const { peer, side } = await connect('lean-cut');
    const closed = new Promise<void>((r) => peer.once('close', () => r()));
    side.socket.destroy();
    await closedOnBroker('lean-cut', 'lean-cut closed');
    await until(() => wills.includes('will/lean-cut'), scaled(5000), 'will of lean-cut');
    await withTimeout(closed, scaled(5000), 'the peer sees the close');
  });

  it('a malformed packet is a client error and closes the client', async () => {
    const { peer } = await connect('lean-bad');
    // a PUBLISH header whose remaining length never ends (five continuation bytes): a parser error
    (peer.stream as net.Socket).write(Buffer.from([0x30, 0xff, 0xff, 0xff, 0xff, 0xff]));
    await closedOnBroker('lean-bad', 'lean-bad closed');
    await until(() => errors.some((e) => e.startsWith('lean-bad: ')), scaled(5000), 'the error reported');
  });

  it('InboundIds is the Set aedes uses, made on the first id', () => {
    const ids = new InboundIds();
    assert.equal(ids.size, 0);
    assert.equal(ids.has(7), false);
    assert.equal(ids.delete(7), false);
    assert.equal(ids.add(7).add(7).add(9).size, 2);
    assert.equal(ids.has(7), true);
    assert.equal(ids.delete(7), true);
    assert.equal(ids.size, 1);
  });
});
