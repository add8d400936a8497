/**
 * holdWritesPerTurn (modules/shared/write-hold.ts) on a real TCP connection: writes made in one
 * event-loop turn, each in its own tick as mqtt.js and aedes make them, leave in one syscall;
 * nothing is reordered or lost; a write made in a later turn is not held behind the first.
 */
import assert from 'node:assert/strict';
import net from 'node:net';
import { test } from 'node:test';
import { holdWritesPerTurn, releaseSoon } from '../../../modules/shared/write-hold.js';
import { until } from '../../helpers/wait.js';

async function pair(): Promise<{ client: net.Socket; server: net.Socket; received: () => string; close(): void }> {
  let chunks = '';
  const accepted = new Promise<net.Socket>((resolve) => {
    const srv = net.createServer((s) => {
      s.on('data', (d) => {
        chunks += d.toString('utf8');
      });
      resolve(s);
    });
    srv.listen(0, '127.0.0.1', () => {
      const port = (srv.address() as net.AddressInfo).port;
      const client = net.createConnection({ host: '127.0.0.1', port, noDelay: true });
      client.once('connect', () => srv.close());
      pending = client;
    });
  });
  let pending: net.Socket | undefined;
  const server = await accepted;
  await until(() => pending !== undefined && !pending.connecting, 5000, 'connected');
  const client = pending!;
  const close = () => {
    client.destroy();
    server.destroy();
  };
  return { client, server, received: () => chunks, close };
}

/** Counts the socket's writes to the kernel (node:net's `_write` and `_writev`). */
function countSyscalls(client: net.Socket): { n: number } {
  const counted = { n: 0 };
  const sock = client as unknown as { _write: (...a: unknown[]) => void; _writev: (...a: unknown[]) => void };
  for (const k of ['_write', '_writev'] as const) {
    const f = sock[k].bind(client);
    sock[k] = (...a) => {
      counted.n++;
      f(...a);
    };
  }
  return counted;
}

test('the writes of one turn leave in one syscall, in order; the next turn is not held behind it', async () => {
  const { client, received, close } = await pair();
  try {
    holdWritesPerTurn(client);
    const counted = countSyscalls(client);
    // 200 packets, each written in a tick of its own with a cork/nextTick-uncork of its own (as mqtt-packet does)
    const expected: string[] = [];
    await new Promise<void>((resolve) => {
      let i = 0;
      const next = () => {
        if (i === 200) return resolve();
        const line = `p${i++};`;
        expected.push(line);
        client.cork();
        assert.equal(client.write(line), true);
        process.nextTick(() => client.uncork());
        process.nextTick(next);
      };
      next();
    });
    await until(() => received().length === expected.join('').length, 5000, 'all bytes');
    assert.equal(received(), expected.join(''), 'in order, nothing lost');
    assert.ok(counted.n <= 2, `${counted.n} syscalls for 200 writes of one turn`);

    // a later turn: its own write goes out at that turn's end, not held for ever
    const before = counted.n;
    await new Promise((r) => setImmediate(r));
    client.write('late;');
    await until(() => received().endsWith('late;'), 5000, 'the later write');
    assert.equal(counted.n, before + 1);
  } finally {
    close();
  }
});

test('every held socket shares one write function and keeps one small record: no closures per socket', async () => {
  const a = await pair();
  const b = await pair();
  try {
    holdWritesPerTurn(a.client);
    holdWritesPerTurn(b.client);
    assert.equal(a.client.write, b.client.write, 'one function for both sockets');
    assert.notEqual(a.client.write, net.Socket.prototype.write);
    // wrapping again changes nothing (a second hold would be a second cork per turn)
    const w = a.client.write;
    holdWritesPerTurn(a.client);
    assert.equal(a.client.write, w);
    a.client.write('x;');
    b.client.write('y;');
    await until(() => a.received() === 'x;' && b.received() === 'y;', 5000, 'both writes');
  } finally {
    a.close();
    b.close();
  }
});

test('after releaseSoon the next write leaves with this moment microtasks, with the writes made meanwhile', async () => {
  const { client, received, close } = await pair();
  try {
    holdWritesPerTurn(client);
    const counted = countSyscalls(client);
    // a publish something waits on, and a second one made before the microtasks run
    releaseSoon(client);
    client.write('a;');
    client.write('b;');
    await Promise.resolve();
    assert.equal(counted.n, 1, 'out before the turn ends, both in one syscall');

    // the next plain write is held to the turn's end as before
    client.write('c;');
    await Promise.resolve();
    assert.equal(counted.n, 1, 'a plain write still waits for the turn to end');
    await new Promise((r) => setImmediate(r));
    assert.equal(counted.n, 2);

    // a turn already held (a PUBACK written first): releaseSoon's write takes it out early too
    await new Promise((r) => setImmediate(r));
    client.write('d;');
    releaseSoon(client);
    client.write('e;');
    await Promise.resolve();
    assert.equal(counted.n, 3, 'the held write and the soon one leave together, early');
    // the turn's own release finds nothing held: no second uncork, nothing reordered
    await new Promise((r) => setImmediate(r));
    client.write('f;');
    await until(() => received() === 'a;b;c;d;e;f;', 5000, 'every write, in order');
    assert.equal(counted.n, 4);

    // sockets the hold never wrapped, or none: nothing to do
    releaseSoon(undefined);
    releaseSoon(new net.Socket());
  } finally {
    close();
  }
});
