/**
 * A real hub for hostile-input tests: the web module in front of the real status and command
 * modules on a fresh PostgreSQL schema of the test server, the MQTT bridge on an in-process
 * broker, and (when asked) the gRPC module, all with an API token. Plus a raw HTTP client that
 * sends the request line exactly as written (fetch() would normalise `%61`, `..` and `#`).
 */

import net from 'node:net';
import type { Logger } from '../../../core/log.js';
import { ProviderRegistry } from '../../../core/registry.js';
import { provider as auditProvider } from '../../../modules/audit/index.js';
import { provider as commandProvider } from '../../../modules/command/index.js';
import { GRPC, type GrpcStats } from '../../../modules/grpc/contract/topics.js';
import { provider as grpcProvider } from '../../../modules/grpc/index.js';
import { provider as jobsProvider } from '../../../modules/jobs/index.js';
import { provider as bridgeProvider } from '../../../modules/mqtt-bridge/index.js';
import { provider as statusProvider } from '../../../modules/status/index.js';
import { WEB, type WebInfo } from '../../../modules/web/contract/topics.js';
import { provider as webProvider } from '../../../modules/web/index.js';
import { withPgSchema } from '../../helpers/db.js';
import { startHost, type TestHost } from '../../helpers/host.js';
import { startTestBroker, type TestBroker } from '../../helpers/mqtt.js';

export const HUB_TOKEN = 'fuzz-token-0123456789abcdef';

export interface RealHub {
  th: TestHost;
  base: string;
  port: number;
  /** The gRPC port, when the hub was started with `grpc: true`. */
  grpcPort?: number;
  /** The PostgreSQL schema the hub's tables live in (for state snapshots). */
  schema: string;
  stop(): Promise<void>;
}

export interface RealHubOptions {
  grpc?: boolean;
  /** Extra keys of the web block (YAML flow values). */
  web?: Record<string, unknown>;
  /** The host's logger (default: silent). */
  log?: Logger;
}

export async function startRealHub(opts: RealHubOptions = {}): Promise<RealHub> {
  const db = await withPgSchema();
  let broker: TestBroker | undefined;
  let th: TestHost | undefined;
  try {
    broker = await startTestBroker();
    const registry = new ProviderRegistry()
      .register(statusProvider)
      .register(commandProvider)
      .register(bridgeProvider)
      .register(auditProvider)
      .register(jobsProvider)
      .register(webProvider);
    if (opts.grpc) registry.register(grpcProvider);
    const web = { port: 0, tokens: [HUB_TOKEN], host: '127.0.0.1', ...opts.web };
    const yaml = [
      'databases:',
      `  default: ${JSON.stringify(db.config)}`,
      'modules:',
      '  status: {}',
      '  command: {}',
      // the shipped config's audit trail: operator actions are recorded before they are answered
      '  audit: {}',
      // and its jobs: /jobs answers, not 503 for want of a module
      '  jobs: {}',
      `  mqtt-bridge: { url: ${JSON.stringify(broker.url)}, username: hub, password: hub }`,
      `  web: ${JSON.stringify(web)}`,
      ...(opts.grpc ? [`  grpc: { port: 0, host: "127.0.0.1", tokens: [${JSON.stringify(HUB_TOKEN)}] }`] : []),
    ].join('\n');
    th = await startHost(yaml, registry, { log: opts.log });
    const info = await th.host.bus.request<WebInfo>(WEB.info('web'), {});
    const grpcPort = opts.grpc ? (await th.host.bus.request<GrpcStats>(GRPC.stats, {})).port : undefined;
    const started = th;
    const b = broker;
    return {
      th,
      base: info.url,
      port: info.port,
      grpcPort,
      schema: (db.config as { schema: string }).schema,
      async stop() {
        await started.stop();
        await b.close();
        await db.drop();
      },
    };
  } catch (err) {
    await th?.stop().catch(() => undefined);
    await broker?.close().catch(() => undefined);
    await db.drop().catch(() => undefined);
    throw err;
  }
}

export interface RawResponse {
  status: number;
  headers: Record<string, string>;
  body: string;
  /** The body as JSON, or undefined when it is not JSON. */
  json: unknown;
}

/**
 * One HTTP/1.1 request written byte for byte (`Connection: close`), so the path reaches the
 * server as given: percent-encoding, `..`, `//`, `#`, even bytes node's client refuses to send.
 * Bodies are read to the end of the connection; chunked answers are de-chunked.
 */
export function rawRequest(
  port: number,
  method: string,
  path: string,
  headers: Record<string, string> = {},
  body?: string | Buffer,
  timeoutMs = 30_000,
): Promise<RawResponse> {
  return new Promise((resolve, reject) => {
    const sock = net.connect(port, '127.0.0.1');
    const chunks: Buffer[] = [];
    const timer = setTimeout(() => {
      sock.destroy();
      reject(new Error(`no answer to ${method} ${JSON.stringify(path)} within ${timeoutMs} ms`));
    }, timeoutMs);
    sock.on('data', (c) => chunks.push(c));
    sock.on('error', (err) => {
      clearTimeout(timer);
      reject(err);
    });
    sock.on('close', () => {
      clearTimeout(timer);
      try {
        resolve(parseResponse(Buffer.concat(chunks)));
      } catch (err) {
        reject(new Error(`${method} ${JSON.stringify(path)}: ${(err as Error).message}`));
      }
    });
    const payload = body === undefined ? undefined : Buffer.isBuffer(body) ? body : Buffer.from(body, 'utf8');
    const lines = [`${method} ${path} HTTP/1.1`, 'Host: 127.0.0.1', 'Connection: close'];
    for (const [k, v] of Object.entries(headers)) lines.push(`${k}: ${v}`);
    if (payload) lines.push(`Content-Length: ${payload.length}`);
    const head = Buffer.from(`${lines.join('\r\n')}\r\n\r\n`, 'latin1');
    sock.write(payload ? Buffer.concat([head, payload]) : head);
  });
}

function parseResponse(raw: Buffer): RawResponse {
  const end = raw.indexOf('\r\n\r\n');
  if (end < 0) throw new Error(`no complete response head (${raw.length} bytes)`);
  const [statusLine, ...headerLines] = raw.subarray(0, end).toString('latin1').split('\r\n');
  const m = /^HTTP\/1\.[01] (\d{3})/.exec(statusLine);
  if (!m) throw new Error(`bad status line ${JSON.stringify(statusLine)}`);
  const headers: Record<string, string> = {};
  for (const l of headerLines) {
    const i = l.indexOf(':');
    if (i > 0) headers[l.slice(0, i).trim().toLowerCase()] = l.slice(i + 1).trim();
  }
  let bodyBuf = raw.subarray(end + 4);
  if (headers['transfer-encoding']?.includes('chunked')) bodyBuf = dechunk(bodyBuf);
  else if (headers['content-length'] !== undefined) bodyBuf = bodyBuf.subarray(0, Number(headers['content-length']));
  const body = bodyBuf.toString('utf8');
  let json: unknown;
  try {
    json = JSON.parse(body);
  } catch {
    json = undefined;
  }
  return { status: Number(m[1]), headers, body, json };
}

function dechunk(b: Buffer): Buffer {
  const out: Buffer[] = [];
  let i = 0;
  for (;;) {
    const nl = b.indexOf('\r\n', i);
    if (nl < 0) break;
    const size = Number.parseInt(b.subarray(i, nl).toString('latin1'), 16);
    if (!size) break;
    out.push(b.subarray(nl + 2, nl + 2 + size));
    i = nl + 2 + size + 2;
  }
  return Buffer.concat(out);
}
