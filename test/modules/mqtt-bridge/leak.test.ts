import assert from 'node:assert/strict';
import net from 'node:net';
import { test } from 'node:test';
import { BRIDGE, type BridgeStats } from '../../../modules/mqtt-bridge/contract/topics.js';
import { startHost } from '../../helpers/host.js';
import { startTestBroker } from '../../helpers/mqtt.js';
import { until } from '../../helpers/wait.js';
import { bridgeYaml, FAST, registry, uniqueId } from './fixtures.js';

/** Waits (bounded) for the handle counts to be back at `base`; fails naming what grew. */
async function backTo(base: Record<string, number>, ms: number): Promise<void> {
  await until(() => grown(handles(), base).length === 0, ms, 'handles back to the baseline').catch(() => {
    assert.fail(`handles grew: ${grown(handles(), base).join(', ')}`);
  });
}

/** Active handles by type, e.g. { TCPSocketWrap: 4, Timeout: 2 }. */
function handles(): Record<string, number> {
  const out: Record<string, number> = {};
  for (const t of process.getActiveResourcesInfo()) out[t] = (out[t] ?? 0) + 1;
  return out;
}

const grown = (now: Record<string, number>, base: Record<string, number>) =>
  Object.entries(now)
    .filter(([t, n]) => n > (base[t] ?? 0))
    .map(([t, n]) => `${t}: ${base[t] ?? 0} → ${n}`);

test('50 restarts of the bridge leave no sockets or timers behind', async () => {
  const b = await startTestBroker();
  const h = await startHost(bridgeYaml({ url: b.url, client_id: uniqueId('leak'), ...FAST }), registry());
  try {
    await h.host.restartModule('bridge'); // warm-up: first-use allocations are not leaks
    await until(() => b.aedes.connectedClients === 1, 5000, 'one client after the warm-up');
    const base = handles();
    for (let i = 0; i < 50; i++) await h.host.restartModule('bridge');
    const stats = await h.host.bus.request<BridgeStats>(BRIDGE.stats, {});
    assert.equal(stats.state, 'connected');
    // the broker side closes its end of each old connection a moment later: wait for that, bounded
    await backTo(base, 10_000);
    assert.equal(b.aedes.connectedClients, 1);
  } finally {
    await h.stop();
    await b.close();
  }
});

test('a bridge that never reached its broker stops without leaving its retry timer', async () => {
  const base = handles();
  const h = await startHost(
    bridgeYaml({ url: 'mqtt://127.0.0.1:1', client_id: uniqueId('nope'), ...FAST }),
    registry(),
  );
  await h.stop();
  await backTo(base, 5000);
});

test('stopping while a connection attempt waits for its CONNACK leaves nothing behind', async () => {
  // accepts TCP, never answers: the attempt is in progress when the host stops
  const sockets = new Set<net.Socket>();
  const silent = net.createServer((s) => {
    sockets.add(s);
    s.resume(); // read (and drop) the CONNECT, so the peer's FIN is seen
    s.on('close', () => sockets.delete(s));
  });
  await new Promise<void>((r) => silent.listen(0, '127.0.0.1', () => r()));
  const { port } = silent.address() as net.AddressInfo;
  try {
    const base = handles();
    const h = await startHost(
      bridgeYaml({
        url: `mqtt://127.0.0.1:${port}`,
        client_id: uniqueId('silent'),
        connect_timeout_ms: 60_000,
        start_wait_ms: 0,
        ...FAST,
      }),
      registry(),
    );
    await until(() => sockets.size === 1, 5000, 'the bridge to open its socket');
    const stats = await h.host.bus.request<BridgeStats>(BRIDGE.stats, {});
    assert.equal(stats.state, 'disconnected', 'no CONNACK yet');
    await h.stop();
    await until(() => sockets.size === 0, 5000, 'the socket closed');
    await backTo(base, 5000);
  } finally {
    for (const s of sockets) s.destroy();
    await new Promise<void>((r) => silent.close(() => r()));
  }
});
