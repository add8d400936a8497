import assert from 'node:assert/strict';
import net from 'node:net';
import { describe, test } from 'node:test';
import type { MqttClient } from 'mqtt';
import { ProviderRegistry } from '../../../core/registry.js';
import { BROKER, type BrokerHubCredential, type BrokerStats } from '../../../modules/broker/contract/topics.js';
import { provider as brokerProvider } from '../../../modules/broker/index.js';
import { deriveMqttPassword } from '../../../modules/shared/credentials.js';
import { startHost } from '../../helpers/host.js';
import { connectClient } from '../../helpers/mqtt.js';
import { deferred, until, withTimeout } from '../../helpers/wait.js';
import {
  A,
  clientId,
  connectAgent,
  connectHub,
  end,
  fakeStatusProvider,
  refusedCode,
  startBroker,
  subscribe,
} from './setup.js';

/** Open handles and requests by type, e.g. { TCPServerWrap: 1, TCPSocketWrap: 2, Timeout: 3 }. */
function resources(): Record<string, number> {
  const out: Record<string, number> = {};
  for (const r of process.getActiveResourcesInfo()) out[r] = (out[r] ?? 0) + 1;
  return out;
}
const grown = (now: Record<string, number>, base: Record<string, number>): string[] =>
  Object.keys(now).filter((k) => now[k] > (base[k] ?? 0) && k !== 'Immediate');

describe('broker lifecycle', () => {
  test('a taken port fails start with HOST_ERR_PORT_IN_USE naming the port and the variable', async () => {
    const blocker = net.createServer();
    await new Promise<void>((r) => blocker.listen(0, '127.0.0.1', () => r()));
    const port = (blocker.address() as net.AddressInfo).port;
    try {
      await assert.rejects(startBroker({ port }), (err: Error & { code?: string }) => {
        assert.equal(err.code, 'HOST_ERR_PORT_IN_USE');
        // the test's file has a literal port: the hint names that key, not a variable the file does not use
        assert.match(
          err.message,
          new RegExp(`^port ${port} is in use \\(change modules\\.broker\\.port in .*config\\.yml\\)$`),
        );
        return true;
      });
      await assert.rejects(startBroker({ port, port_env: 'MY_PORT' }), /set MY_PORT to another port/);
    } finally {
      await new Promise<void>((r) => blocker.close(() => r()));
    }
  });

  test('50 restarts leave no handle behind, and each instance serves (and then drops) a client', async () => {
    const b = await startBroker();
    const clients: MqttClient[] = [];
    try {
      await b.h.host.restartModule('broker'); // warm-up: lazy modules, first-use caches
      const base = resources();
      for (let i = 0; i < 50; i++) {
        await b.h.host.restartModule('broker');
        const { port } = await b.h.host.bus.request<BrokerStats>(BROKER.stats, {});
        const c = await connectAgent(`mqtt://127.0.0.1:${port}`, A);
        assert.deepEqual(await subscribe(c, [`wdd/RDMC/command/down/${A.id}`]), [1]);
        clients.push(c);
      }
      await b.h.host.restartModule('broker');
      await until(() => clients.every((c) => !c.connected), 5000, 'every client to be dropped by its broker');
      await end(...clients);
      await until(() => grown(resources(), base).length === 0, 5000, 'handles back to the baseline');
    } finally {
      await end(...clients);
      await b.stop();
    }
  });

  test('stop closes the port and disconnects every client', async () => {
    const b = await startBroker();
    const hub = await connectHub(b);
    const agent = await connectAgent(b.url, A);
    const closed = Promise.all([hub, agent].map((c) => new Promise<void>((r) => c.once('close', () => r()))));
    await b.stop();
    await withTimeout(closed, 5000, 'both clients to be closed');
    const port = Number(new URL(b.url).port);
    await assert.rejects(
      new Promise<void>((resolve, reject) => {
        const s = net.connect(port, '127.0.0.1', () => {
          s.destroy();
          resolve();
        });
        s.once('error', reject);
      }),
      /ECONNREFUSED/,
    );
    await end(hub, agent);
  });

  test('the generated hub password is stable across restarts; a configured one is used as given', async () => {
    const b = await startBroker();
    try {
      const first = b.cred;
      assert.equal(first.username, 'gmq-hub');
      assert.ok(first.password.length >= 24);
      await b.h.host.restartModule('broker');
      const second = await b.h.host.bus.request<BrokerHubCredential>(BROKER.hubCredential, {});
      assert.deepEqual(second, first);
    } finally {
      await b.stop();
    }
    const c = await startBroker({ hub_username: 'bridge', hub_password: 'configured-pw' });
    try {
      assert.deepEqual(c.cred, { username: 'bridge', password: 'configured-pw' });
      const hub = await connectHub(c);
      assert.deepEqual(await subscribe(hub, ['#']), [1]);
      await end(hub);
    } finally {
      await c.stop();
    }
  });

  test('without an answer from the status module agents are refused (CONNACK 3); the hub still connects', async () => {
    const b = await startBroker({}, { withStatus: false });
    try {
      const opts = { username: A.id, password: deriveMqttPassword(A.id, A.secret), clientId: clientId('a') };
      assert.equal(await refusedCode(b.url, opts), 3);
      assert.equal((await b.stats()).denied_auth, 1);
      const hub = await connectHub(b);
      await end(hub);
    } finally {
      await b.stop();
    }
    // a status module that does not answer in time
    const hold = deferred();
    const probe = { calls: 0, hold: hold.promise };
    const slow = await startBroker({ auth_timeout_ms: 100 }, { probe });
    try {
      const opts = { username: A.id, password: deriveMqttPassword(A.id, A.secret), clientId: clientId('a') };
      assert.equal(await refusedCode(slow.url, opts), 3);
      assert.equal(probe.calls, 1);
    } finally {
      hold.resolve();
      await slow.stop();
    }
  });

  test('max_clients: one more connection is refused with CONNACK 3', async () => {
    const b = await startBroker({ max_clients: 2 });
    try {
      const one = await connectHub(b);
      const two = await connectAgent(b.url, A);
      assert.equal(await refusedCode(b.url, { username: b.cred.username, password: b.cred.password }), 3);
      await end(one, two);
      await until(async () => (await b.stats()).clients === 0, 5000, 'the clients to leave');
      const three = await connectAgent(b.url, A);
      await end(three);
    } finally {
      await b.stop();
    }
  });

  test('a packet over max_packet_bytes closes the connection while it is still arriving', async () => {
    const b = await startBroker({ max_packet_bytes: 64 * 1024 });
    const hub = await connectHub(b);
    try {
      const closed = new Promise<void>((r) => hub.once('close', () => r()));
      // a PUBLISH announcing 10 MB, of which 256 KB are sent: the broker must not wait for the rest
      const announced = 10_000_000;
      const header = [0x30];
      for (let n = announced; ; ) {
        const byte = n % 128;
        n = Math.floor(n / 128);
        header.push(n > 0 ? byte | 0x80 : byte);
        if (n === 0) break;
      }
      hub.stream.write(Buffer.concat([Buffer.from(header), Buffer.alloc(256 * 1024)]));
      await withTimeout(closed, 5000, 'the broker to close the connection');
      assert.equal((await b.stats()).oversized, 1);
    } finally {
      await end(hub);
      await b.stop();
    }
  });

  test('auth: false lets anyone in, anywhere', async () => {
    const registry = new ProviderRegistry().register(brokerProvider).register(fakeStatusProvider({ calls: 0 }));
    const h = await startHost(`modules:\n  broker: { port: 0, host: 127.0.0.1, auth: false }\n`, registry);
    try {
      const { port } = await h.host.bus.request<BrokerStats>(BROKER.stats, {});
      const anon = await connectClient(`mqtt://127.0.0.1:${port}`, { clientId: clientId('anon') });
      assert.deepEqual(await subscribe(anon, ['#']), [1]);
      await end(anon);
    } finally {
      await h.stop();
    }
  });
});
