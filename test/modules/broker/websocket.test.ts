/**
 * MQTT over WebSocket on the web module's port (`/mqtt`): the web module hands the stream to the
 * embedded broker over the bus, so the same login and ACL hold as over TCP.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import type { MqttClient } from 'mqtt';
import { ProviderRegistry } from '../../../core/registry.js';
import { BROKER, type BrokerHubCredential, type BrokerStats } from '../../../modules/broker/contract/topics.js';
import { provider as brokerProvider } from '../../../modules/broker/index.js';
import { messageDownTopic, TOPIC_MESSAGE_UP } from '../../../modules/shared/protocol.js';
import { WEB, type WebInfo } from '../../../modules/web/contract/topics.js';
import { provider as webProvider } from '../../../modules/web/index.js';
import { startHost, type TestHost } from '../../helpers/host.js';
import { connectClient } from '../../helpers/mqtt.js';
import { until } from '../../helpers/wait.js';
import {
  A,
  B,
  clientId,
  connectAgent,
  end,
  fakeStatusProvider,
  publish,
  recorder,
  refusedCode,
  subscribe,
  uplink,
} from './setup.js';

const T = 10_000;

async function webUrl(h: TestHost): Promise<string> {
  const info = await h.host.bus.request<WebInfo>(WEB.info('web'), {});
  return info.url.replace(/^http:/, 'ws:');
}

describe('MQTT over WebSocket on the web port', () => {
  let h: TestHost;
  let ws = '';
  let tcp = '';
  let cred: BrokerHubCredential;
  const clients: MqttClient[] = [];

  before(async () => {
    const registry = new ProviderRegistry()
      .register(brokerProvider)
      .register(webProvider)
      .register(fakeStatusProvider({ calls: 0 }));
    h = await startHost(
      [
        'modules:',
        '  status: { provider: fake-status }',
        '  broker: { port: 0, host: 127.0.0.1 }',
        '  web: { port: 0, database: null }',
        '',
      ].join('\n'),
      registry,
    );
    ws = `${await webUrl(h)}/mqtt`;
    const stats = await h.host.bus.request<BrokerStats>(BROKER.stats, {});
    tcp = `mqtt://127.0.0.1:${stats.port}`;
    cred = await h.host.bus.request<BrokerHubCredential>(BROKER.hubCredential, {});
  });

  after(async () => {
    await end(...clients);
    await h?.stop();
  });

  test('an agent logs in over ws:// and its uplink reaches the hub; its own downlink reaches it', async () => {
    const hub = await connectClient(ws, {
      username: cred.username,
      password: cred.password,
      clientId: clientId('hub'),
    });
    clients.push(hub);
    const hubSeen = recorder(hub);
    await subscribe(hub, [TOPIC_MESSAGE_UP]);
    const agent = await connectAgent(ws, A);
    clients.push(agent);
    const agentSeen = recorder(agent);
    assert.deepEqual(await subscribe(agent, [messageDownTopic(A.id)]), [1]);
    await publish(agent, TOPIC_MESSAGE_UP, uplink(A.id, 'up-over-ws'));
    await until(() => hubSeen.seen.some((s) => s.marker === 'up-over-ws'), T, 'the uplink at the hub');
    await publish(hub, messageDownTopic(A.id), uplink(A.id, 'down-over-ws'));
    await until(() => agentSeen.seen.some((s) => s.marker === 'down-over-ws'), T, 'the downlink at the agent');
  });

  test('the ACL holds over WebSocket: another project’s downlink is refused with SUBACK 0x80', async () => {
    const agent = await connectAgent(ws, A);
    clients.push(agent);
    assert.deepEqual(await subscribe(agent, [messageDownTopic(B.id)]), [0x80]);
  });

  test('a wrong password is refused with CONNACK 4 over WebSocket, as over TCP', async () => {
    const bad = { username: A.id, password: 'not-the-password', clientId: clientId('bad') };
    assert.equal(await refusedCode(tcp, bad), 4);
    assert.equal(await refusedCode(ws, bad), 4);
    assert.equal(await refusedCode(ws, { clientId: clientId('anon') }), 5, 'anonymous: not authorized');
  });
});

describe('MQTT over WebSocket without an embedded broker', () => {
  test('the WebSocket is closed (nobody to hand it to) and the hub keeps running', async () => {
    const registry = new ProviderRegistry().register(webProvider);
    const h = await startHost('modules:\n  web: { port: 0, database: null }\n', registry);
    try {
      const ws = `${await webUrl(h)}/mqtt`;
      await assert.rejects(connectClient(ws, { clientId: clientId('x'), username: 'a', password: 'b' }, 3000));
      const info = await h.host.bus.request<WebInfo>(WEB.info('web'), {});
      assert.ok(info.port > 0);
    } finally {
      await h.stop();
    }
  });
});
