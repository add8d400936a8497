import assert from 'node:assert/strict';
import { test } from 'node:test';
import { z } from 'zod';
import type { ModuleProvider } from '../../../core/module.js';
import { BROKER } from '../../../modules/broker/contract/topics.js';
import { BRIDGE, type BridgeStats } from '../../../modules/mqtt-bridge/contract/topics.js';
import { startHost } from '../../helpers/host.js';
import { startTestBroker, type TestBroker } from '../../helpers/mqtt.js';
import { until } from '../../helpers/wait.js';
import { bridgeYaml, FAST, registry, uniqueId } from './fixtures.js';

/** Stands in for the embedded broker module: answers the hub credential from `current`. */
function fakeBroker(current: { password: string }, asked: { n: number }): ModuleProvider<Record<string, never>> {
  return {
    name: 'fake-broker',
    schema: z.object({}).strict(),
    create: (ctx) => ({
      start() {
        ctx.bus.subscribe(BROKER.hubCredential, () => {
          asked.n++;
          return { username: 'hub', password: current.password };
        });
      },
    }),
  };
}

/** Lets in only `user` with the password `current` holds at the time of the CONNECT. */
function requireCredential(b: TestBroker, user: string, current: { password: string }): void {
  b.aedes.authenticate = (_client, username, password, cb) => {
    const ok = username === user && password?.toString() === current.password;
    if (ok) cb(null, true);
    else cb(Object.assign(new Error('bad credential'), { returnCode: 4 }), false);
  };
}

const stats = (h: Awaited<ReturnType<typeof startHost>>) => h.host.bus.request<BridgeStats>(BRIDGE.stats, {});

test('with no credential configured the bridge uses the embedded broker hub credential, and asks again after a refusal', async () => {
  const current = { password: 'pw-1' };
  const asked = { n: 0 };
  const b = await startTestBroker();
  requireCredential(b, 'hub', current);
  const clientId = uniqueId('cred');
  // the module is called `broker` so the bridge's soft dependency orders it first
  const h = await startHost(
    bridgeYaml({ url: b.url, client_id: clientId, username: '', password: '', ...FAST }).replace(
      'modules:\n',
      'modules:\n  broker: { provider: fake-broker }\n',
    ),
    registry().register(fakeBroker(current, asked)),
  );
  try {
    assert.equal((await stats(h)).state, 'connected');
    assert.equal(asked.n, 1);
    // the broker's secret changes and it drops the hub: the old password is refused once, then the new one asked for
    current.password = 'pw-2';
    const conn = [...Object.values((b.aedes as unknown as { clients: Record<string, { close(): void }> }).clients)];
    for (const c of conn) c.close();
    await until(async () => (await stats(h)).connects === 2, 10_000, 'connected again with the new credential');
    assert.ok(asked.n >= 2);
  } finally {
    await h.stop();
    await b.close();
  }
});

test('a configured username and password are used as they are', async () => {
  const b = await startTestBroker();
  requireCredential(b, 'ops', { password: 's3cret' });
  const h = await startHost(
    bridgeYaml({ url: b.url, client_id: uniqueId('cfg'), username: 'ops', password: 's3cret', ...FAST }),
    registry(),
  );
  try {
    assert.equal((await stats(h)).state, 'connected');
  } finally {
    await h.stop();
    await b.close();
  }
});

test('a wrong configured password leaves the bridge offline (start still succeeds), never connected', async () => {
  const b = await startTestBroker();
  requireCredential(b, 'ops', { password: 's3cret' });
  const h = await startHost(
    bridgeYaml({ url: b.url, client_id: uniqueId('bad'), username: 'ops', password: 'nope', ...FAST }),
    registry(),
  );
  try {
    const s = await stats(h);
    assert.equal(s.state, 'offline');
    assert.equal(s.connects, 0);
  } finally {
    await h.stop();
    await b.close();
  }
});
