/**
 * ws-fanout: command results delivered per second to 1 000 WebSocket clients of the web module
 * (/api/exchange-hub/ws, each subscribed to all events), against a bare `ws` server that sends
 * the same JSON text to the same number of clients. Both servers run in this process; the
 * clients of each run in their own child process (bench/ws-clients.ts).
 *
 * The hub's events are those the command module publishes when a result lands, published on the
 * host's bus (no broker or database is involved in this path). The driver keeps at most
 * `credit` events ahead of the slowest client, so the servers run flat out without any client
 * being cut for slowness; deliveries are counted at the clients over a fixed window after a
 * warm-up, and the two sides alternate, run by run.
 *
 * Env: BENCH_WS_CLIENTS (1000), BENCH_RUNS / BENCH_WS_RUNS (3), BENCH_WARMUP_MS / BENCH_WS_WARMUP_MS
 * (1500), BENCH_WINDOW_MS / BENCH_WS_WINDOW_MS (4000), BENCH_WS_CREDIT (50 events),
 * BENCH_OUTPUT_BYTES (256: the result's output text).
 */
import { once } from 'node:events';
import type { AddressInfo } from 'node:net';
import type { Duplex } from 'node:stream';
import WebSocket, { WebSocketServer } from 'ws';
import { parseConfig } from '../core/config.js';
import { Host } from '../core/host.js';
import { silentLogger } from '../core/log.js';
import { ProviderRegistry } from '../core/registry.js';
import { WEB, type WebInfo } from '../modules/web/contract/topics.js';
import { provider as webProvider } from '../modules/web/index.js';
import { WS_PATH } from '../modules/web/ws.js';
import { machine, type SuiteResult } from './harness.js';
import {
  ClientPool,
  defaultClientProcs,
  envInt,
  loadSettings,
  outputText,
  resultEvent,
  sides,
  summarise,
  type WindowResult,
} from './iface.js';

const CLIENT_SCRIPT = new URL('./ws-clients.js', import.meta.url);

/** The hub: a real host with the web module alone (REST/WS on port 0, no database for /readyz). */
async function startHub(): Promise<{ host: Host; url: string }> {
  const host = new Host({
    config: parseConfig('modules:\n  web: { port: 0, database: null }\n', '/bench/config.yml', {}),
    registry: new ProviderRegistry().register(webProvider),
    log: silentLogger(),
  });
  await host.start();
  const info = await host.bus.request<WebInfo>(WEB.info('web'), {});
  return { host, url: `${info.url.replace(/^http/, 'ws')}${WS_PATH}` };
}

/**
 * The raw baseline: a bare ws server broadcasting one JSON text to every client (the ws README's
 * broadcast). `broadcastBatched` is the stricter ceiling: the frame encoded once, and every
 * socket corked until the end of the turn, so a burst of events leaves in one write per client
 * (what the web module does).
 */
async function startRaw() {
  const wss = new WebSocketServer({ host: '127.0.0.1', port: 0, perMessageDeflate: false });
  await once(wss, 'listening');
  const { port } = wss.address() as AddressInfo;
  const socketOf = (ws: WebSocket) => (ws as unknown as { _socket?: Duplex })._socket;
  let corked: Duplex[] | null = null;
  const uncork = () => {
    for (const sock of corked ?? []) sock.uncork();
    corked = null;
  };
  const text = { binary: false };
  return {
    wss,
    url: `ws://127.0.0.1:${port}/`,
    broadcast(frame: string) {
      for (const c of wss.clients) if (c.readyState === WebSocket.OPEN) c.send(frame);
    },
    broadcastBatched(frame: Buffer) {
      if (corked === null) {
        corked = [];
        for (const c of wss.clients) {
          const sock = socketOf(c);
          if (sock) {
            sock.cork();
            corked.push(sock);
          }
        }
        process.nextTick(uncork);
      }
      for (const c of wss.clients) if (c.readyState === WebSocket.OPEN) c.send(frame, text);
    },
  };
}

export async function runWsFanoutSuite(): Promise<SuiteResult> {
  const clients = Math.max(1, envInt('BENCH_WS_CLIENTS', 1000));
  const s = loadSettings('BENCH_WS', { runs: 3, warmupMs: 1500, windowMs: 4000, credit: 50, outputBytes: 256 });
  const output = outputText(s.outputBytes);
  const hub = await startHub();
  const raw = await startRaw();
  const concurrency = 50;
  const procs = envInt('BENCH_CLIENT_PROCS', defaultClientProcs(machine().cores));
  const run = sides();
  // both sets of clients connect at once (each pool opens `concurrency` connections at a time)
  const [hubClients, rawClients] = await Promise.all([
    run.hub ? ClientPool.start(CLIENT_SCRIPT, { url: hub.url, clients, subscribe: true, concurrency }, procs) : null,
    run.raw ? ClientPool.start(CLIENT_SCRIPT, { url: raw.url, clients, subscribe: false, concurrency }, procs) : null,
  ]);

  // The hub: the command module's result event on the bus; the web module's feed numbers it and
  // its WebSocket hub frames it for every subscribed client.
  const hubPublish = (i: number) => {
    const { topic, event } = resultEvent(i, output);
    return hub.host.bus.publish(topic, event);
  };
  // The raw side: the same event, framed as the hub frames it (same JSON text), sent to all.
  const rawFrame = (i: number) => {
    const { event } = resultEvent(i, output);
    if (event.kind !== 'result') throw new Error('unreachable');
    return JSON.stringify({
      op: 'event',
      id: i + 1,
      type: 'command.result',
      project_id: event.command.project_id,
      command_id: event.command.command_id,
      at: event.at,
      data: { command: event.command, result: event.result },
    });
  };
  const rawPublish = (i: number) => raw.broadcast(rawFrame(i));
  const rawBatchedPublish = (i: number) => raw.broadcastBatched(Buffer.from(rawFrame(i)));

  const hubRuns: WindowResult[] = [];
  const rawRuns: WindowResult[] = [];
  const batchedRuns: WindowResult[] = [];
  const opts = { credit: s.credit, warmupMs: s.warmupMs, windowMs: s.windowMs };
  try {
    // interleaved, so drift on a noisy machine hits both sides alike
    for (let r = 0; r < s.runs; r++) {
      if (rawClients) rawRuns.push(await rawClients.drive(rawPublish, opts));
      if (hubClients) hubRuns.push(await hubClients.drive(hubPublish, opts));
      if (rawClients) batchedRuns.push(await rawClients.drive(rawBatchedPublish, opts));
    }
  } finally {
    await Promise.allSettled([hubClients?.close(), rawClients?.close()]);
    raw.wss.close();
    await hub.host.stop();
  }

  const frameBytes = Buffer.byteLength(rawFrame(0));
  return summarise({
    suite: 'ws-fanout',
    what: `hub WebSocket result deliveries, ${clients} clients`,
    rawName: 'raw ws broadcast',
    hubRuns,
    rawRuns,
    ceiling: { name: 'raw ws, encoded once, corked per turn', runs: batchedRuns },
    settings: s,
    notes: [
      `frame ${frameBytes} bytes of JSON text (result output ${s.outputBytes} bytes); ${clients} clients in ${procs} child process(es) per server, perMessageDeflate off`,
    ],
  });
}
