/**
 * grpc-stream: WatchEvents deliveries per second to 100 streams of the grpc module, against a
 * bare grpc-js server-streaming RPC built from the same .proto with the same proto-loader
 * options, whose handler writes the same FeedEvent message to every open stream (the idiomatic
 * `call.write(message)`, which grpc-js serialises per stream). A second raw figure, the same
 * bare server writing one pre-serialised buffer to every stream, is shown as the stricter ceiling.
 * Both servers run in this process; the clients of each run in their own child process
 * (bench/grpc-clients.ts), every client on its own HTTP/2 connection.
 *
 * Events, driver and counting are those of ws-fanout (see bench/iface.ts).
 *
 * Env: BENCH_GRPC_STREAMS (100), BENCH_RUNS / BENCH_GRPC_RUNS (3), BENCH_WARMUP_MS /
 * BENCH_GRPC_WARMUP_MS (2000), BENCH_WINDOW_MS / BENCH_GRPC_WINDOW_MS (4000), BENCH_GRPC_CREDIT
 * (200 events; keep it under the module's stream_buffer_max of 1 000), BENCH_OUTPUT_BYTES (256),
 * BENCH_CLIENT_PROCS, BENCH_SIDES.
 */
import { randomUUID } from 'node:crypto';
import { Metadata, Server, ServerCredentials, type ServerWritableStream, type ServiceDefinition } from '@grpc/grpc-js';
import { loadSync } from '@grpc/proto-loader';
import { parseConfig } from '../core/config.js';
import { Host } from '../core/host.js';
import { silentLogger } from '../core/log.js';
import { ProviderRegistry } from '../core/registry.js';
import { GRPC, type GrpcStats } from '../modules/grpc/contract/topics.js';
import { provider as grpcProvider } from '../modules/grpc/index.js';
import { LOADER_OPTIONS, PROTO_FILE, protoRoot, SERVICE_NAME } from '../modules/grpc/proto.js';
import { machine } from './harness.js';
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

const CLIENT_SCRIPT = new URL('./grpc-clients.js', import.meta.url);

async function startHub(): Promise<{ host: Host; target: string }> {
  const host = new Host({
    config: parseConfig('modules:\n  grpc: { port: 0 }\n', '/bench/config.yml', {}),
    registry: new ProviderRegistry().register(grpcProvider),
    log: silentLogger(),
  });
  await host.start();
  const stats = await host.bus.request<GrpcStats>(GRPC.stats, {});
  return { host, target: `127.0.0.1:${stats.port}` };
}

/**
 * The bare server: the hub's .proto through the same proto-loader options, WatchEvents only.
 * `write(msg)` is the idiomatic broadcast; `writeEncoded(buf)` writes bytes serialised once
 * (the response serializer lets a Buffer through, as the grpc module's does).
 */
async function startRaw() {
  const pkg = loadSync(PROTO_FILE, { ...LOADER_OPTIONS, includeDirs: [protoRoot()] });
  const service = pkg[SERVICE_NAME] as ServiceDefinition;
  const watch = service.WatchEvents;
  const definition: ServiceDefinition = {
    ...service,
    WatchEvents: {
      ...watch,
      responseSerialize: (v: unknown) => (Buffer.isBuffer(v) ? v : watch.responseSerialize(v)),
    },
  };
  const calls = new Set<ServerWritableStream<unknown, unknown>>();
  const server = new Server();
  server.addService(definition, {
    WatchEvents: (call: ServerWritableStream<unknown, unknown>) => {
      calls.add(call);
      const gone = () => calls.delete(call);
      call.on('cancelled', gone);
      call.on('error', gone);
      call.sendMetadata(new Metadata());
    },
  });
  const port = await new Promise<number>((resolve, reject) =>
    server.bindAsync('127.0.0.1:0', ServerCredentials.createInsecure(), (err, p) => (err ? reject(err) : resolve(p))),
  );
  return {
    target: `127.0.0.1:${port}`,
    serialize: (msg: Record<string, unknown>) => watch.responseSerialize(msg) as Buffer,
    write(msg: Record<string, unknown>) {
      for (const c of calls) c.write(msg);
    },
    writeEncoded(buf: Buffer) {
      for (const c of calls) c.write(buf);
    },
    stop: () => server.forceShutdown(),
  };
}

export async function runGrpcStreamSuite() {
  const clients = Math.max(1, envInt('BENCH_GRPC_STREAMS', 100));
  const s = loadSettings('BENCH_GRPC', { runs: 3, warmupMs: 2000, windowMs: 4000, credit: 200, outputBytes: 256 });
  const output = outputText(s.outputBytes);
  const run = sides();
  const procs = envInt('BENCH_CLIENT_PROCS', defaultClientProcs(machine().cores));
  const hub = await startHub();
  const raw = await startRaw();
  const concurrency = 20;
  const [hubClients, rawClients] = await Promise.all([
    run.hub ? ClientPool.start(CLIENT_SCRIPT, { target: hub.target, clients, concurrency }, procs) : null,
    run.raw ? ClientPool.start(CLIENT_SCRIPT, { target: raw.target, clients, concurrency }, procs) : null,
  ]);

  const hubPublish = (i: number) => {
    const { topic, event } = resultEvent(i, output);
    return hub.host.bus.publish(topic, event);
  };
  // the message the grpc module sends for the same event (modules/grpc/convert.ts feedEvent)
  const epoch = randomUUID();
  const rawMessage = (i: number) => {
    const { event } = resultEvent(i, output);
    if (event.kind !== 'result') throw new Error('unreachable');
    return {
      id: i + 1,
      epoch,
      type: 'command.result',
      project_id: event.command.project_id,
      command_id: event.command.command_id,
      at: event.at,
      data_json: JSON.stringify({ command: event.command, result: event.result }),
    };
  };
  const rawPublish = (i: number) => raw.write(rawMessage(i));
  const rawOncePublish = (i: number) => raw.writeEncoded(raw.serialize(rawMessage(i)));

  const hubRuns: WindowResult[] = [];
  const rawRuns: WindowResult[] = [];
  const onceRuns: WindowResult[] = [];
  const opts = { credit: s.credit, warmupMs: s.warmupMs, windowMs: s.windowMs };
  try {
    for (let r = 0; r < s.runs; r++) {
      if (rawClients) rawRuns.push(await rawClients.drive(rawPublish, opts));
      if (hubClients) hubRuns.push(await hubClients.drive(hubPublish, opts));
      if (rawClients) onceRuns.push(await rawClients.drive(rawOncePublish, opts));
    }
  } finally {
    await Promise.allSettled([hubClients?.close(), rawClients?.close()]);
    raw.stop();
    await hub.host.stop();
  }
  const msgBytes = raw.serialize(rawMessage(0)).length;
  return summarise({
    suite: 'grpc-stream',
    what: `hub WatchEvents deliveries, ${clients} streams`,
    rawName: 'raw grpc-js stream',
    hubRuns,
    rawRuns,
    settings: s,
    ceiling: { name: 'raw stream writing pre-serialised bytes', runs: onceRuns },
    notes: [
      `FeedEvent message ${msgBytes} bytes (result output ${s.outputBytes} bytes); ${clients} streams, one connection each, in ${procs} child process(es) per server; clients decode every message (proto-loader, the hub's options)`,
    ],
  });
}
