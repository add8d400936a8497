/**
 * `gmq-hub watch`: the live event stream of /api/exchange-hub/ws (protocol in modules/web/ws.ts),
 * one JSON object per line on stdout. After a lost connection it reconnects with backoff and
 * resumes from the last event id it printed, so nothing is missed or printed twice while the
 * hub's replay buffer still holds the gap; when it does not (or the web module restarted, a new
 * epoch), it says so on stderr and goes on live.
 */
import WebSocket from 'ws';
import { UnreachableError } from './client.js';

export const WS_PATH = '/api/exchange-hub/ws';
const RETRY_MIN_MS = 250;
const RETRY_MAX_MS = 5_000;
/** A client-side ping this often; no pong by the next one and the connection is dropped and redialled. */
const PING_MS = 30_000;

export interface WatchOptions {
  base: string;
  token?: string;
  projects: readonly string[];
  commands: readonly string[];
  /** One event line (stdout). */
  out(line: string): void;
  /** A status or warning line (stderr). */
  note(line: string): void;
  /** Aborting ends the watch with exit code 0 (Ctrl-C). */
  signal: AbortSignal;
}

interface ServerMessage {
  op: string;
  id?: number;
  epoch?: string;
  last_event_id?: number;
  count?: number;
  reason?: string;
  code?: string;
  message?: string;
  [k: string]: unknown;
}

/** Watches until aborted (→ 0) or until the first connection or the token is refused (→ 1). */
export function watch(o: WatchOptions): Promise<number> {
  const wsUrl = `${o.base.replace(/^http/, 'ws')}${WS_PATH}`;
  const filter =
    o.projects.length || o.commands.length ? { projects: o.projects, commands: o.commands } : { all: true };
  const what = filter.all
    ? 'all events'
    : [...o.projects.map((p) => `project ${p}`), ...o.commands.map((c) => `command ${c}`)].join(', ');
  let epoch: string | null = null;
  let lastId = 0;
  let everOpened = false;
  let announced = false;
  let delay = RETRY_MIN_MS;
  let current: WebSocket | null = null;
  let retry: NodeJS.Timeout | null = null;

  return new Promise<number>((resolve) => {
    let done = false;
    const finish = (code: number) => {
      if (done) return;
      done = true;
      if (retry) clearTimeout(retry);
      o.signal.removeEventListener('abort', onAbort);
      if (current) {
        current.removeAllListeners();
        current.on('error', () => undefined);
        if (current.readyState === WebSocket.OPEN) current.close(1000, 'bye');
        else current.terminate();
      }
      resolve(code);
    };
    const onAbort = () => finish(0);
    if (o.signal.aborted) return finish(0);
    o.signal.addEventListener('abort', onAbort, { once: true });

    const connect = () => {
      retry = null;
      const sock = new WebSocket(wsUrl, {
        headers: o.token ? { authorization: `Bearer ${o.token}` } : {},
        handshakeTimeout: 10_000,
        perMessageDeflate: false,
      });
      current = sock;
      let lastError: string | null = null;
      let refusal: { line: string; fatal: boolean } | null = null;
      let pinged = false;
      const pinger = setInterval(() => {
        if (pinged) return sock.terminate(); // no pong since the last ping: a dead peer
        pinged = true;
        sock.ping();
      }, PING_MS);
      pinger.unref();

      sock.on('pong', () => {
        pinged = false;
      });
      sock.on('error', (err: Error & { code?: string }) => {
        lastError = err.message || err.code || String(err);
      });
      sock.on('unexpected-response', (_req, res) => {
        // The upgrade was refused with an HTTP answer in the hub's error shape (401, 404, 503 …).
        let text = '';
        res.setEncoding('utf8');
        res.on('data', (c: string) => {
          text += c;
        });
        res.on('end', () => {
          let code = `HTTP_${res.statusCode}`;
          let message = `${res.statusCode} ${res.statusMessage ?? ''}`.trim();
          try {
            const e = (JSON.parse(text) as { error?: { code?: string; message?: string } }).error;
            if (e?.code) code = e.code;
            if (e?.message) message = e.message;
          } catch {
            // not JSON: keep the status line
          }
          // a hub that is stopping or restarting its web module answers 503: worth waiting for
          refusal = { line: `${code}: ${message}`, fatal: res.statusCode !== 503 || !everOpened };
          sock.terminate();
        });
      });
      sock.on('open', () => {
        everOpened = true;
      });
      sock.on('message', (data) => {
        let m: ServerMessage;
        try {
          m = JSON.parse(String(data)) as ServerMessage;
        } catch {
          return;
        }
        onMessage(sock, m);
      });
      sock.on('close', (code, reason) => {
        clearInterval(pinger);
        if (done || current !== sock) return;
        current = null;
        if (refusal?.fatal) {
          o.note(`gmq-hub: ${refusal.line}`);
          return finish(1);
        }
        if (!everOpened) {
          o.note(`gmq-hub: ${new UnreachableError(o.base, lastError ?? `closed (${code})`).message}`);
          return finish(1);
        }
        const why = refusal?.line ?? lastError ?? `${code}${reason.length ? ` ${reason}` : ''}`;
        o.note(`gmq-hub: watch: connection lost (${why}); reconnecting in ${delay} ms`);
        retry = setTimeout(connect, delay);
        delay = Math.min(delay * 2, RETRY_MAX_MS);
      });
    };

    const onMessage = (sock: WebSocket, m: ServerMessage) => {
      switch (m.op) {
        case 'hello': {
          // First time: from the hub's current id (nothing before we came is owed). Later: from
          // the last id printed, in the epoch it belongs to; the hub replays the gap or says resync.
          if (epoch === null) {
            epoch = m.epoch ?? '';
            lastId = m.last_event_id ?? 0;
          }
          sock.send(JSON.stringify({ op: 'subscribe', ...filter, epoch, last_event_id: lastId }));
          return;
        }
        case 'event': {
          if (typeof m.id !== 'number' || m.id <= lastId) return; // already printed
          lastId = m.id;
          const { op: _op, ...ev } = m;
          o.out(JSON.stringify(ev));
          return;
        }
        case 'resumed':
          lastId = Math.max(lastId, m.last_event_id ?? 0);
          delay = RETRY_MIN_MS;
          if (!announced) {
            announced = true;
            o.note(`gmq-hub: watching ${what} at ${wsUrl} (Ctrl-C to stop)`);
          } else {
            o.note(`gmq-hub: watch: reconnected; ${m.count ?? 0} missed event(s) replayed`);
          }
          return;
        case 'resync':
          o.note(
            `gmq-hub: watch: reconnected, but ${
              m.reason === 'unknown_epoch'
                ? 'the hub’s event stream restarted (a new epoch)'
                : `the hub no longer holds the events after ${lastId}`
            }: events may be missing; re-read state over REST`,
          );
          epoch = m.epoch ?? epoch;
          lastId = m.last_event_id ?? lastId;
          delay = RETRY_MIN_MS;
          if (!announced) {
            announced = true;
            o.note(`gmq-hub: watching ${what} at ${wsUrl} (Ctrl-C to stop)`);
          }
          return;
        case 'error':
          o.note(`gmq-hub: watch: ${m.code}: ${m.message}`);
          return;
        default:
          return; // subscribed, pong …
      }
    };

    connect();
  });
}
