/**
 * The CLI's REST client: `fetch` with the bearer token, JSON in and out, and every failure turned
 * into one of two errors the entry point prints as a single line: `ApiError` (the hub answered
 * with an error body `{ error: { code, message } }`, modules/web/errors.ts) or `UnreachableError`
 * (no answer at all: refused, unknown host, timed out).
 */

/** The hub answered with an error: its stable code, message and HTTP status. */
export class ApiError extends Error {
  constructor(
    readonly code: string,
    message: string,
    readonly status: number,
    /** The whole answer (the sync timeout's carries command_id and the command's state). */
    readonly body: unknown,
  ) {
    super(message);
    this.name = 'ApiError';
  }
}

/** Nobody answered at the URL. */
export class UnreachableError extends Error {
  constructor(
    readonly url: string,
    reason: string,
  ) {
    super(`cannot reach the hub at ${url}: ${reason} (is it running? set --url or HUB_URL)`);
    this.name = 'UnreachableError';
  }
}

export const API = '/api/exchange-hub';

/** The default base URL: $HUB_URL, else loopback on $HUB_HTTP_PORT (8080), as `npm start` serves it. */
export function defaultUrl(env: NodeJS.ProcessEnv): string {
  if (env.HUB_URL) return env.HUB_URL;
  return `http://127.0.0.1:${env.HUB_HTTP_PORT || '8080'}`;
}

/** A checked base URL without a trailing slash; null when it is not an http(s) URL. */
export function normaliseBase(url: string): string | null {
  try {
    const u = new URL(url);
    if (u.protocol !== 'http:' && u.protocol !== 'https:') return null;
    return u.href.replace(/\/+$/, '');
  } catch {
    return null;
  }
}

export interface CallOptions {
  body?: unknown;
  /** Give up after this long (default 30 s); null: wait as long as the hub takes. */
  timeoutMs?: number | null;
  /** Extra request headers (e.g. Idempotency-Key). */
  headers?: Record<string, string>;
}

export class HubClient {
  constructor(
    readonly base: string,
    readonly token: string | undefined,
  ) {}

  /** Calls `method path` (path under the base URL) and returns the parsed 2xx answer with its status. */
  async call<T = unknown>(
    method: string,
    path: string,
    opts: CallOptions = {},
  ): Promise<{ status: number; body: T; headers: Headers }> {
    const url = this.base + path;
    // `cli` in the audit trail (modules/web/server.ts CLIENT_HEADER): a declaration, the token says who
    const headers: Record<string, string> = { ...opts.headers, accept: 'application/json', 'x-gmq-client': 'cli' };
    if (this.token) headers.authorization = `Bearer ${this.token}`;
    if (opts.body !== undefined) headers['content-type'] = 'application/json';
    const timeoutMs = opts.timeoutMs === undefined ? 30_000 : opts.timeoutMs;
    let res: Response;
    try {
      res = await fetch(url, {
        method,
        headers,
        body: opts.body === undefined ? undefined : JSON.stringify(opts.body),
        signal: timeoutMs === null ? undefined : AbortSignal.timeout(timeoutMs),
      });
    } catch (err) {
      throw new UnreachableError(this.base, reasonOf(err, timeoutMs));
    }
    let text: string;
    try {
      text = await res.text();
    } catch (err) {
      throw new UnreachableError(this.base, reasonOf(err, timeoutMs));
    }
    let body: unknown;
    try {
      body = text === '' ? undefined : JSON.parse(text);
    } catch {
      body = undefined;
    }
    if (res.ok && (body !== undefined || text === ''))
      return { status: res.status, body: body as T, headers: res.headers };
    const error = (body as { error?: { code?: unknown; message?: unknown } } | undefined)?.error;
    if (error && typeof error.code === 'string') {
      throw new ApiError(error.code, String(error.message ?? error.code), res.status, body);
    }
    // not the hub's error shape: a proxy, another server on that port …
    const what = res.ok ? 'an answer that is not JSON' : `HTTP ${res.status} ${res.statusText}`.trim();
    throw new ApiError(`HTTP_${res.status}`, `${what} from ${url} (is this a gmq-hub?)`, res.status, body ?? text);
  }
}

function reasonOf(err: unknown, timeoutMs: number | null): string {
  const e = err as { name?: string; message?: string; cause?: { code?: string; message?: string } };
  if (e.name === 'TimeoutError') return `no answer within ${timeoutMs} ms`;
  const cause = e.cause;
  return cause?.message || cause?.code || e.message || String(err);
}
