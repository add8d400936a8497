/**
 * Runs inside the worker_thread of a `type: worker` module. It loads the module file and gives
 * it a context whose bus calls cross to the host as messages (see remote-peer.ts for the ops).
 *
 * The module file exports (default or named) `start(ctx)` and optionally `stop()`:
 *   export async function start(ctx) { ctx.bus.subscribe('greet/ask', (p) => `hello ${p.name}`); }
 */
import { pathToFileURL } from 'node:url';
import { parentPort, workerData } from 'node:worker_threads';
import { serializeError } from './errors.js';
import { compilePattern } from './topics.js';

type Handler = (payload: unknown, msg: { topic: string; payload: unknown }) => unknown;

const port = parentPort!;
const { file, name, config } = workerData as { file: string; name: string; config: unknown };
const handlers: Array<{ pattern: string; match: (t: string) => boolean; fn: Handler }> = [];
const pending = new Map<number, { resolve: (v: unknown) => void; reject: (e: unknown) => void }>();
let nextRequest = 1;

const log = (level: string) => (msg: string, fields?: object) => port.postMessage({ op: 'log', level, msg, ...fields });

const ctx = Object.freeze({
  name,
  config,
  log: { debug: log('debug'), info: log('info'), warn: log('warn'), error: log('error') },
  bus: {
    subscribe(pattern: string, fn: Handler): () => void {
      const h = { pattern, match: compilePattern(pattern), fn };
      handlers.push(h);
      port.postMessage({ op: 'subscribe', topic: pattern });
      return () => {
        const i = handlers.indexOf(h);
        if (i < 0) return;
        handlers.splice(i, 1);
        // the host holds one subscription per pattern: release it with the last local handler
        if (!handlers.some((o) => o.pattern === pattern)) port.postMessage({ op: 'unsubscribe', topic: pattern });
      };
    },
    publish(topic: string, payload: unknown) {
      port.postMessage({ op: 'publish', topic, payload });
    },
    request(topic: string, payload: unknown, opts: { timeoutMs?: number } = {}) {
      const id = nextRequest++;
      return new Promise((resolve, reject) => {
        pending.set(id, { resolve, reject });
        port.postMessage({ op: 'request', id, topic, payload, timeout_ms: opts.timeoutMs });
      });
    },
  },
});

const mod = await import(pathToFileURL(file).href);
const api = (mod.default && typeof mod.default === 'object' ? mod.default : mod) as {
  start?: (c: typeof ctx) => unknown;
  stop?: () => unknown;
};

port.on(
  'message',
  async (m: { op: string; id: number; topic: string; payload: unknown; error?: { code: string; message: string } }) => {
    if (m.op === 'event') {
      let value: unknown;
      try {
        for (const h of handlers) {
          if (!h.match(m.topic)) continue;
          const r = await h.fn(m.payload, { topic: m.topic, payload: m.payload });
          if (value === undefined) value = r;
        }
        port.postMessage({ op: 'reply', id: m.id, payload: value });
      } catch (err) {
        port.postMessage({ op: 'reply', id: m.id, error: serializeError(err) });
      }
    } else if (m.op === 'response') {
      const slot = pending.get(m.id);
      pending.delete(m.id);
      if (m.error) slot?.reject(Object.assign(new Error(m.error.message), { code: m.error.code }));
      else slot?.resolve(m.payload);
    } else if (m.op === 'stop') {
      try {
        await api.stop?.();
      } finally {
        process.exit(0);
      }
    }
  },
);

await api.start?.(ctx);
port.postMessage({ op: 'ready' });
