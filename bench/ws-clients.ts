/**
 * Child process of the ws-fanout suite: `clients` real `ws` clients on one server, each counting
 * the event frames it receives (a frame is counted, not parsed: the clients' own cost stays
 * small and is the same for the hub and the raw baseline). Settings come as JSON in argv[2].
 */
import WebSocket from 'ws';
import { limited, runClientProcess } from './iface.js';

interface Settings {
  url: string;
  clients: number;
  /** Send the hub's `{ op: 'subscribe', all: true }` and wait for `subscribed`. */
  subscribe: boolean;
  concurrency: number;
}

const s = JSON.parse(process.argv[2]) as Settings;
// `{"op":"event"`: bytes 7 and 8 are `e` and `v` only in event frames (hello, subscribed, pong … differ)
const isEvent = (b: Buffer) => b[7] === 0x65 && b[8] === 0x76 && b[2] === 0x6f;
let closing = false;

await runClientProcess(async (_counts, bump) => {
  const sockets = await limited(s.clients, s.concurrency, (i) => {
    return new Promise<WebSocket>((resolve, reject) => {
      const ws = new WebSocket(s.url, { perMessageDeflate: false });
      let ready = false;
      ws.on('message', (data: Buffer, isBinary) => {
        if (!isBinary && isEvent(data)) bump(i);
        else if (!ready && s.subscribe && data.includes('"op":"subscribed"')) {
          ready = true;
          resolve(ws);
        }
      });
      ws.once('open', () => {
        if (s.subscribe) ws.send(JSON.stringify({ op: 'subscribe', all: true }));
        else {
          ready = true;
          resolve(ws);
        }
      });
      ws.once('error', (err) => {
        if (!ready) reject(err);
      });
      ws.once('close', (code) => {
        if (!ready) reject(new Error(`client ${i} closed with ${code} before it was ready`));
        else if (!closing) console.error(`ws client ${i} closed with ${code}`);
      });
    });
  });
  return async () => {
    closing = true;
    await Promise.all(
      sockets.map(
        (ws) =>
          new Promise<void>((r) => {
            ws.once('close', () => r());
            ws.terminate();
          }),
      ),
    );
  };
}, s.clients);
