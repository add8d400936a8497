/**
 * A lean keep-alive HTTP/1.1 JSON client for the REST suites (node:http: fetch costs the
 * caller several times more CPU per request, which on 2 cores is taken from the hub).
 */
import http from 'node:http';

export interface JsonResponse {
  status: number;
  // biome-ignore lint/suspicious/noExplicitAny: JSON from the hub, read field by field
  json: any;
}

/** How long a free keep-alive connection is kept: below the server's 72 s. */
const FREE_SOCKET_MS = 60_000;

export class JsonClient {
  private readonly agent: http.Agent;
  private readonly url: URL;

  constructor(base: string, maxSockets: number) {
    this.url = new URL(base);
    // A connection left free for a minute is closed here first: the hub (Fastify) closes one idle
    // for 72 s, and a request written on it as the server's FIN arrives fails with "socket hang
    // up" (bench `soak`: 24 of 600 000 in one burst after a stall, each on a connection idle since
    // the burst 72 s before).
    this.agent = new http.Agent({ keepAlive: true, maxSockets, maxFreeSockets: maxSockets, timeout: FREE_SOCKET_MS });
  }

  request(method: 'GET' | 'POST', path: string, body?: unknown): Promise<JsonResponse> {
    const data = body === undefined ? undefined : JSON.stringify(body);
    return new Promise((resolve, reject) => {
      const req = http.request(
        {
          host: this.url.hostname,
          port: this.url.port,
          method,
          path,
          agent: this.agent,
          headers: data ? { 'content-type': 'application/json', 'content-length': Buffer.byteLength(data) } : undefined,
        },
        (res) => {
          const chunks: Buffer[] = [];
          res.on('data', (c: Buffer) => chunks.push(c));
          res.on('end', () => {
            const text = Buffer.concat(chunks).toString('utf8');
            let json: unknown;
            try {
              json = JSON.parse(text);
            } catch {
              json = text;
            }
            resolve({ status: res.statusCode ?? 0, json });
          });
          res.on('error', reject);
        },
      );
      req.setNoDelay(true);
      req.on('error', reject);
      req.end(data);
    });
  }

  /**
   * Opens `n` keep-alive connections before a measured window (`n` requests of `path` at once,
   * each answered on its own connection, then kept free for the window), and says how long that
   * took. A window that starts with every caller on a new connection measures how fast the
   * server accepts a burst of connections in its first seconds, not its steady state: in the
   * async suite the first requests on 255 new connections waited up to 4.8 s at the hub, all
   * of it before the hub saw the connection (docs/benchmarks.md, "The first burst's stragglers").
   */
  async open(path: string, n: number): Promise<{ ms: number; sockets: number }> {
    const t0 = performance.now();
    await Promise.all(Array.from({ length: n }, () => this.request('GET', path)));
    const free = Object.values(this.agent.freeSockets).reduce((k, list) => k + (list?.length ?? 0), 0);
    return { ms: performance.now() - t0, sockets: free };
  }

  close(): void {
    this.agent.destroy();
  }
}
