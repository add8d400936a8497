/**
 * One side of the `connection-heap` suite (bench/connection-heap.ts), in a process of its own so
 * its heap is only this: an MQTT server on a free loopback port, then N agent connections from
 * a child process (bench/connection-heap-agents.ts), each as the agent module connects
 * (`clean: false`, its two downlink subscriptions at QoS 1). The JS heap is read, collected
 * first, before the connections and after them; the difference over N is what one connection
 * costs.
 *
 * argv: `bare` (aedes as it comes, with this project's session queues: aedes.handle on each
 * socket) or `module` (the broker module in a host: auth, ACL, rate and packet limits, lean
 * connections), then N. Prints one JSON line. Needs `--expose-gc`.
 */
import { fork } from 'node:child_process';
import net from 'node:net';
import path from 'node:path';
import { Aedes } from 'aedes';
import { z } from 'zod';
import type { ModuleProvider } from '../core/module.js';
import { ProviderRegistry } from '../core/registry.js';
import { BROKER, type BrokerStats } from '../modules/broker/contract/topics.js';
import { provider as brokerProvider } from '../modules/broker/index.js';
import { sessionQueues } from '../modules/broker/outgoing-index.js';
import { deriveMqttPassword } from '../modules/shared/credentials.js';
import { STATUS } from '../modules/status/contract/topics.js';
import { startHost } from '../test/helpers/host.js';

const AGENT_SECRET = 'connection-heap';

const gc = (globalThis as { gc?: () => void }).gc;
if (!gc) throw new Error('run with --expose-gc');

/** Stands in for the status module: every `bench-N` project, with AGENT_SECRET. */
const status: ModuleProvider<Record<string, never>> = {
  name: 'bench-status',
  schema: z.object({}).strict() as unknown as z.ZodType<Record<string, never>>,
  create(ctx) {
    return {
      start() {
        ctx.bus.subscribe<{ username: string; password: string }>(STATUS.authenticate, async (p) =>
          deriveMqttPassword(p.username, AGENT_SECRET) === p.password
            ? { ok: true, project_id: p.username }
            : { ok: false },
        );
      },
    };
  },
};

async function serve(kind: string): Promise<{ port: number; stop(): Promise<void> }> {
  if (kind === 'bare') {
    const aedes = await Aedes.createBroker(sessionQueues());
    const server = net.createServer((socket) => {
      socket.setNoDelay(true);
      aedes.handle(socket);
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    return {
      port: (server.address() as net.AddressInfo).port,
      stop: async () => {
        await new Promise<void>((r) => aedes.close(() => r()));
        server.close();
      },
    };
  }
  const registry = new ProviderRegistry().register(brokerProvider).register(status);
  const h = await startHost(
    'modules:\n  status: { provider: bench-status }\n  broker: { port: 0, host: 127.0.0.1, max_clients: 50000 }\n',
    registry,
  );
  const { port } = await h.host.bus.request<BrokerStats>(BROKER.stats, {});
  return { port, stop: () => h.stop() };
}

async function collectedHeap(): Promise<number> {
  for (let i = 0; i < 4; i++) {
    gc?.();
    await new Promise((r) => setTimeout(r, 100));
  }
  return process.memoryUsage().heapUsed;
}

async function main(): Promise<void> {
  const [kind = 'module', n = '3000'] = process.argv.slice(2);
  const N = Number(n);
  const server = await serve(kind);
  await new Promise((r) => setTimeout(r, 1000));
  const before = await collectedHeap();
  const agents = fork(path.join(import.meta.dirname, 'connection-heap-agents.js'), [
    String(server.port),
    String(N),
    AGENT_SECRET,
  ]);
  const ready = await new Promise<{ connected: number }>((resolve, reject) => {
    agents.once('message', (m) => resolve(m as { connected: number }));
    agents.once('exit', (code) => reject(new Error(`agents exited (${code})`)));
  });
  // the last SUBACKs and the brokers' own work settle
  await new Promise((r) => setTimeout(r, 2000));
  const after = await collectedHeap();
  agents.kill();
  await server.stop();
  console.log(JSON.stringify({ kind, connections: ready.connected, before, after }));
  process.exit(0);
}

void main();
