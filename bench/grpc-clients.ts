/**
 * Child process of the grpc-stream suite: `clients` real grpc-js clients, each on its own
 * connection, each with one WatchEvents stream (`{ all: true }`), counting the messages it
 * receives. The client is generated from the hub's .proto with the hub's proto-loader options,
 * so every message is decoded as a real caller decodes it. Settings come as JSON in argv[2].
 */
import * as grpc from '@grpc/grpc-js';
import { loadSync } from '@grpc/proto-loader';
import { LOADER_OPTIONS, PROTO_FILE, protoRoot } from '../modules/grpc/proto.js';
import { limited, runClientProcess } from './iface.js';

interface Settings {
  target: string;
  clients: number;
  concurrency: number;
}

const s = JSON.parse(process.argv[2]) as Settings;
const pkg = loadSync(PROTO_FILE, { ...LOADER_OPTIONS, includeDirs: [protoRoot()] });
const loaded = grpc.loadPackageDefinition(pkg) as unknown as {
  exchangehub: { v1: { ExchangeHub: grpc.ServiceClientConstructor } };
};
const Client = loaded.exchangehub.v1.ExchangeHub;
type Watch = (req: Record<string, unknown>) => grpc.ClientReadableStream<unknown>;
let closing = false;

await runClientProcess(async (_counts, bump) => {
  const clients: grpc.Client[] = [];
  const streams = await limited(s.clients, s.concurrency, (i) => {
    // each client its own connection (grpc-js would otherwise share one subchannel)
    const client = new Client(s.target, grpc.credentials.createInsecure(), { 'grpc.use_local_subchannel_pool': 1 });
    clients.push(client);
    return new Promise<grpc.ClientReadableStream<unknown>>((resolve, reject) => {
      const stream = (client as unknown as { WatchEvents: Watch }).WatchEvents({ all: true });
      let ready = false;
      // the server sends its initial metadata once the stream is registered with the feed
      stream.once('metadata', () => {
        ready = true;
        resolve(stream);
      });
      stream.on('data', () => bump(i));
      stream.on('error', (err: grpc.ServiceError) => {
        if (!ready) reject(err);
        else if (!closing) console.error(`grpc stream ${i} ended: ${grpc.status[err.code]} ${err.details}`);
      });
    });
  });
  return () => {
    closing = true;
    for (const st of streams) st.cancel();
    for (const c of clients) c.close();
  };
}, s.clients);
