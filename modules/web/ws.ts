/**
 * The live WebSocket at /api/exchange-hub/ws. Protocol (JSON text frames):
 *
 *   server → { op: 'hello', epoch, last_event_id }                       on connect
 *   client → { op: 'subscribe', all?, projects?: [...], commands?: [...], epoch?, last_event_id? }
 *   server → { op: 'subscribed', all, projects, commands, last_event_id }
 *   client → { op: 'unsubscribe', all?, projects?, commands? }            → { op: 'unsubscribed', … }
 *   client → { op: 'resume', epoch, last_event_id }                       → replayed events, then
 *            { op: 'resumed', count, last_event_id } — or { op: 'resync', reason } when the
 *            epoch is unknown or the id is older than the replay buffer (re-read over REST)
 *   client → { op: 'ping' }                                               → { op: 'pong' }
 *   server → { op: 'event', id, type, project_id, command_id?, job_id?, at, data }   (job.progress: to `all` subscribers)
 *   server → { op: 'error', code, message }   a bad client message; the connection stays open
 *
 * Permissions (permissions.ts): opening the socket is the `read` action. A token limited to some
 * projects only ever receives events of those projects (`all` included); subscribing to another
 * project by name answers { op: 'error', code: 'AUTH_ERR_FORBIDDEN' } and is not taken. When a
 * config edit takes the token away, or its role no longer grants `read`, the socket gets that
 * error frame (AUTH_ERR_TOKEN or AUTH_ERR_FORBIDDEN) and is closed with 1008; a changed
 * `projects` applies to the open socket at once.
 *
 * Resuming replays, under the current filter, exactly the events after `last_event_id` that
 * this connection has not received live: sent with the first subscribe (or before it) the
 * replay and the start of live delivery happen in one synchronous step, so nothing is missed
 * or repeated. A client that does not read fast enough (unsent bytes over max_buffered_bytes)
 * is closed with 1013 instead of growing the server's memory; keepalive pings find dead peers.
 */
import type { IncomingMessage } from 'node:http';
import type { Duplex } from 'node:stream';
import { type WebSocket, WebSocketServer } from 'ws';
import { z } from 'zod';
import type { Logger } from '../../core/log.js';
import type { ModuleTimers } from '../../core/module.js';
import type { EventFeed, FeedEvent, FeedFilter } from '../shared/interface-kit/event-feed.js';
import { forbiddenAction, grants, seesProject } from '../shared/interface-kit/permissions.js';
import type { Principal, TokenGate } from '../shared/interface-kit/token-gate.js';
import { presentedToken } from './auth.js';
import type { WebConfig } from './config.js';
import type { WebMetrics } from './metrics.js';
import { projectId } from './schemas.js';

export const WS_PATH = '/api/exchange-hub/ws';
const MAX_FILTER_IDS = 1000;
/** A client closed for slowness gets this long to take the close frame before its socket is destroyed. */
const SLOW_CLOSE_GRACE_MS = 5_000;
/** ws sends a Buffer as a binary frame unless told otherwise; events are JSON text frames. */
const TEXT_FRAME = { binary: false } as const;

const ids = z.array(projectId).max(MAX_FILTER_IDS);
const commandIds = z.array(z.string().min(1).max(64)).max(MAX_FILTER_IDS);
const lastEventId = z.number().int().min(0);
const clientMessage = z.discriminatedUnion('op', [
  z
    .object({
      op: z.literal('subscribe'),
      all: z.boolean().optional(),
      projects: ids.optional(),
      commands: commandIds.optional(),
      epoch: z.string().max(64).optional(),
      last_event_id: lastEventId.optional(),
    })
    .strict(),
  z
    .object({
      op: z.literal('unsubscribe'),
      all: z.boolean().optional(),
      projects: ids.optional(),
      commands: commandIds.optional(),
    })
    .strict(),
  z.object({ op: z.literal('resume'), epoch: z.string().max(64), last_event_id: lastEventId }).strict(),
  z.object({ op: z.literal('ping') }).strict(),
]);
type ClientMessage = z.infer<typeof clientMessage>;

interface Client {
  readonly ws: WebSocket;
  readonly id: number;
  /** Who opened it; replaced in place when a config edit changes its token's role or projects. */
  principal: Principal;
  all: boolean;
  projects: Set<string>;
  commands: Set<string>;
  filter: FeedFilter;
  unwatch: (() => void) | null;
  /** Lets go of the feed: told its position in `hello`, the client may resume from it later. */
  release: () => void;
  /** The feed's last id when live delivery began: later events reach the client live. */
  liveFrom: number;
  pendingResume: { epoch: string; last: number } | null;
  alive: boolean;
  closing: boolean;
  /** Its socket is corked until the end of this turn of the event loop (see `coalesce`). */
  corked: boolean;
  /** Its unsent bytes when it was corked: what it had not read before this turn. */
  unsentAtCork: number;
}

/** The TCP socket under a `ws` WebSocket (`_socket`: not in ws's typings, present since ws 1). */
function socketOf(ws: WebSocket): Duplex | undefined {
  return (ws as unknown as { _socket?: Duplex })._socket;
}

export interface WsDeps {
  feed: EventFeed;
  cfg: WebConfig['ws'];
  gate: TokenGate;
  metrics: WebMetrics;
  log: Logger;
  timers: ModuleTimers;
}

export class WsHub {
  private readonly wss: WebSocketServer;
  private readonly clients = new Set<Client>();
  /**
   * Each event is serialised and UTF-8 encoded once, whatever the number of clients that get it:
   * a string frame would be measured (Buffer.byteLength) and encoded again for every client.
   */
  private readonly frames = new WeakMap<FeedEvent, Buffer>();
  private nextId = 1;
  private stopping = false;
  /** Clients whose socket is corked until `uncorkAll` runs at the end of this turn. */
  private corked: Client[] = [];
  private readonly uncorkAll = () => {
    const list = this.corked;
    this.corked = [];
    for (const c of list) {
      c.corked = false;
      socketOf(c.ws)?.uncork();
    }
  };

  constructor(private readonly d: WsDeps) {
    this.wss = new WebSocketServer({
      noServer: true,
      maxPayload: d.cfg.max_payload_bytes,
      perMessageDeflate: false,
      clientTracking: false,
    });
  }

  get size(): number {
    return this.clients.size;
  }

  /** Pings every client each interval; one that did not answer the previous ping is dropped. */
  startKeepalive(): void {
    this.d.timers.setInterval(() => {
      for (const c of this.clients) {
        if (!c.alive) {
          this.d.log.debug({ client: c.id }, 'websocket client missed a ping; dropping it');
          c.ws.terminate();
          continue;
        }
        c.alive = false;
        c.ws.ping();
      }
    }, this.d.cfg.ping_interval_ms);
  }

  /** The HTTP server's 'upgrade' event. Only WS_PATH upgrades; auth as for REST (header or ?token=). */
  onUpgrade(req: IncomingMessage, socket: Duplex, head: Buffer): void {
    socket.on('error', () => socket.destroy());
    // an upgrade refused is a refusal like any HTTP one: counted by code in hub_http_refusals_total
    const refuse = (status: number, code: string, message: string) => {
      if (status < 500) this.d.metrics.httpRefusals.inc({ code });
      refuseUpgrade(socket, status, code, message);
    };
    const path = (req.url ?? '').split('?')[0];
    if (path !== WS_PATH) {
      refuse(404, 'WEB_ERR_NOT_FOUND', `no WebSocket at ${path}`);
      return;
    }
    if (this.stopping) {
      refuse(503, 'HOST_ERR_STOPPING', 'the hub is stopping');
      return;
    }
    const who = this.d.gate.admit(presentedToken(req, true), 'read');
    if (!who) {
      refuse(401, 'AUTH_ERR_TOKEN', 'a valid token is required (Authorization: Bearer or ?token=)');
      return;
    }
    if (!grants(who.role, 'read')) {
      const err = forbiddenAction(who, 'read', 'open the event WebSocket');
      this.d.log.info({ token_id: who.token_id, role: who.role, code: err.code }, err.message);
      refuse(403, err.code, err.message);
      return;
    }
    // Cross-site WebSocket hijacking: a page from another origin must not read the feed.
    const origin = req.headers.origin;
    if (origin && req.headers.host && !sameHost(origin, req.headers.host)) {
      refuse(403, 'AUTH_ERR_TOKEN', `origin ${origin} may not open this WebSocket`);
      return;
    }
    this.wss.handleUpgrade(req, socket, head, (ws) => this.accept(ws, who));
  }

  private accept(ws: WebSocket, principal: Principal): void {
    if (this.stopping) {
      ws.close(1001, 'server stopping');
      return;
    }
    const c: Client = {
      ws,
      id: this.nextId++,
      principal,
      all: false,
      projects: new Set(),
      commands: new Set(),
      filter: {},
      unwatch: null,
      release: this.d.feed.hold(),
      liveFrom: 0,
      pendingResume: null,
      alive: true,
      closing: false,
      corked: false,
      unsentAtCork: 0,
    };
    this.scope(c);
    this.clients.add(c);
    ws.on('pong', () => {
      c.alive = true;
    });
    ws.on('message', (data, isBinary) => this.onMessage(c, data as Buffer, isBinary));
    ws.on('error', (err) => this.d.log.debug({ client: c.id, err: err.message }, 'websocket error'));
    ws.on('close', () => {
      c.closing = true;
      c.unwatch?.();
      c.unwatch = null;
      c.release();
      this.clients.delete(c);
    });
    this.send(c, { op: 'hello', epoch: this.d.feed.epoch, last_event_id: this.d.feed.lastId });
  }

  private onMessage(c: Client, data: Buffer, isBinary: boolean): void {
    let parsed: unknown;
    try {
      if (isBinary) throw new Error('binary frame');
      parsed = JSON.parse(data.toString('utf8'));
    } catch {
      this.reject(c, 'json', 'malformed message: expected a JSON text frame');
      return;
    }
    const r = clientMessage.safeParse(parsed);
    if (!r.success) {
      const issue = r.error.issues[0];
      const where = issue.path.join('.') || '(message)';
      const extra = issue.code === 'unrecognized_keys' ? ` ${(issue as { keys: string[] }).keys.join(', ')}` : '';
      this.reject(c, 'invalid', `${where}: ${issue.message}${extra}`);
      return;
    }
    this.handle(c, r.data);
  }

  private reject(c: Client, reason: string, message: string): void {
    this.d.metrics.wsRejected.inc({ reason });
    // a caller's mistake is an answer: one info line with its code, as REST's `request refused`
    this.d.log.info({ client: c.id, reason, code: 'WEB_ERR_WS_MESSAGE' }, 'websocket message refused');
    this.send(c, { op: 'error', code: 'WEB_ERR_WS_MESSAGE', message });
  }

  private handle(c: Client, m: ClientMessage): void {
    switch (m.op) {
      case 'ping':
        this.send(c, { op: 'pong' });
        return;
      case 'resume':
        if (c.unwatch) this.resume(c, m.epoch, m.last_event_id);
        else c.pendingResume = { epoch: m.epoch, last: m.last_event_id };
        return;
      case 'unsubscribe':
        if (m.all) c.all = false;
        for (const p of m.projects ?? []) c.projects.delete(p);
        for (const id of m.commands ?? []) c.commands.delete(id);
        this.refilter(c);
        this.send(c, { op: 'unsubscribed', ...this.describe(c) });
        return;
      case 'subscribe': {
        const refused = (m.projects ?? []).filter((p) => !seesProject(c.principal, p));
        if (refused.length > 0) {
          this.forbid(c, `token ${c.principal.token_id} may not follow project(s) ${refused.slice(0, 5).join(', ')}`);
          return;
        }
        if (m.all) c.all = true;
        for (const p of m.projects ?? []) c.projects.add(p);
        for (const id of m.commands ?? []) c.commands.add(id.toLowerCase());
        if (c.projects.size > MAX_FILTER_IDS || c.commands.size > MAX_FILTER_IDS) {
          for (const p of m.projects ?? []) c.projects.delete(p);
          for (const id of m.commands ?? []) c.commands.delete(id.toLowerCase());
          this.reject(c, 'invalid', `a connection may follow at most ${MAX_FILTER_IDS} projects and commands`);
          return;
        }
        this.refilter(c);
        if (m.epoch !== undefined && m.last_event_id !== undefined) {
          c.pendingResume = { epoch: m.epoch, last: m.last_event_id };
        }
        this.send(c, { op: 'subscribed', ...this.describe(c) });
        if (!c.unwatch) {
          // One synchronous step: replay up to now, then live from the next event on.
          c.liveFrom = this.d.feed.lastId;
          const pending = c.pendingResume;
          c.pendingResume = null;
          if (pending) this.resume(c, pending.epoch, pending.last);
          if (c.closing) return;
          c.unwatch = this.d.feed.watch({ filter: c.filter, deliver: (ev) => this.deliver(c, ev) });
        }
        return;
      }
    }
  }

  /** The client's project limit, applied to every event it could receive (live and replayed). */
  private scope(c: Client): void {
    const who = c.principal;
    if (who.projects === null) delete c.filter.allow;
    else c.filter.allow = (p) => seesProject(who, p);
  }

  /** A subscription the token may not have: an error frame, counted and logged (a client mistake). */
  private forbid(c: Client, message: string): void {
    this.d.metrics.wsRejected.inc({ reason: 'forbidden' });
    this.d.log.info(
      { client: c.id, token_id: c.principal.token_id, role: c.principal.role, code: 'AUTH_ERR_FORBIDDEN' },
      message,
    );
    this.send(c, { op: 'error', code: 'AUTH_ERR_FORBIDDEN', message });
  }

  /**
   * After the gate's token table was swapped (config edit): each client's token is checked again.
   * Gone → AUTH_ERR_TOKEN, no longer granted `read` → AUTH_ERR_FORBIDDEN, both closed with 1008
   * (policy violation); a new role or `projects` applies in place, the connection stays.
   */
  recheckPrincipals(): void {
    for (const c of this.clients) {
      if (c.closing) continue;
      const now = this.d.gate.recheck(c.principal);
      if (now === c.principal) continue;
      const code = now === null ? 'AUTH_ERR_TOKEN' : grants(now.role, 'read') ? null : 'AUTH_ERR_FORBIDDEN';
      if (code === null) {
        c.principal = now!;
        this.scope(c);
        // followed projects outside the new limit are dropped (nothing of them is delivered anyway)
        for (const p of [...c.projects]) if (!seesProject(now!, p)) c.projects.delete(p);
        this.refilter(c);
        this.d.log.info({ client: c.id, token_id: now!.token_id, role: now!.role }, 'websocket token changed; applied');
        continue;
      }
      const message =
        code === 'AUTH_ERR_TOKEN'
          ? `token ${c.principal.token_id} is no longer accepted`
          : `token ${c.principal.token_id} may no longer read the event feed`;
      this.d.log.info({ client: c.id, token_id: c.principal.token_id, code }, `${message}; closing the websocket`);
      this.send(c, { op: 'error', code, message });
      c.closing = true;
      c.unwatch?.();
      c.unwatch = null;
      c.ws.close(1008, code);
    }
  }

  private refilter(c: Client): void {
    // The feed reads `filter` on every event, so it is changed in place.
    c.filter.all = c.all;
    c.filter.projects = [...c.projects];
    c.filter.commands = [...c.commands];
  }

  private describe(c: Client) {
    return { all: c.all, projects: [...c.projects], commands: [...c.commands], last_event_id: this.d.feed.lastId };
  }

  /** Replays what the client missed up to the start of its live delivery, or tells it to resync. */
  private resume(c: Client, epoch: string, last: number): void {
    const r = this.d.feed.since(epoch, last, c.filter);
    if (!r.ok) {
      this.send(c, { op: 'resync', reason: r.reason, epoch: this.d.feed.epoch, last_event_id: this.d.feed.lastId });
      return;
    }
    let count = 0;
    for (const ev of r.events) {
      if (ev.id > c.liveFrom) break;
      if (!this.deliver(c, ev)) return;
      count++;
    }
    this.send(c, { op: 'resumed', count, last_event_id: Math.min(this.d.feed.lastId, c.liveFrom) });
  }

  /** The feed's watcher callback: false (and the client closed with 1013) when it reads too slowly. */
  private deliver(c: Client, ev: FeedEvent): boolean {
    if (c.closing || c.ws.readyState !== c.ws.OPEN) return false;
    // Bytes corked this turn have not been offered to the client yet: it is slow when what it
    // had not taken before this turn passes the limit.
    const unsent = c.corked ? c.unsentAtCork : c.ws.bufferedAmount;
    if (unsent > this.d.cfg.max_buffered_bytes) {
      this.cutSlow(c);
      return false;
    }
    let frame = this.frames.get(ev);
    if (frame === undefined) {
      frame = Buffer.from(`{"op":"event",${JSON.stringify(ev).slice(1)}`);
      this.frames.set(ev, frame);
    }
    this.coalesce(c);
    c.ws.send(frame, TEXT_FRAME);
    this.d.metrics.wsSent.inc();
    return true;
  }

  /**
   * Corks the client's socket until the end of the current turn, so the frames of every event
   * the web mailbox handles in one slice leave in one write per client instead of one write per
   * frame. Measured with 1 000 clients (bench ws-fanout): the write syscall per frame was half of
   * the server's time, and coalescing cut its CPU per delivery ~2.5x. Order is unchanged (one
   * socket, one queue); the frames are the shared per-event buffers, so a corked turn costs
   * little memory; the slow-client check uses the bytes unsent before the turn (see deliver).
   */
  private coalesce(c: Client): void {
    if (c.corked) return;
    const socket = socketOf(c.ws);
    if (!socket) return;
    c.unsentAtCork = c.ws.bufferedAmount;
    socket.cork();
    c.corked = true;
    this.corked.push(c);
    if (this.corked.length === 1) process.nextTick(this.uncorkAll);
  }

  private cutSlow(c: Client): void {
    c.closing = true;
    c.unwatch?.();
    c.unwatch = null;
    this.d.metrics.wsSlow.inc();
    this.d.log.warn(
      { client: c.id, buffered_bytes: c.ws.bufferedAmount, limit: this.d.cfg.max_buffered_bytes },
      'websocket client too slow; closing it with 1013',
    );
    c.ws.close(1013, 'too slow: try again later');
    // The close frame waits behind what the client has not read; do not hold that for long.
    const t = this.d.timers.setTimeout(() => c.ws.terminate(), SLOW_CLOSE_GRACE_MS);
    c.ws.once('close', () => this.d.timers.clear(t));
  }

  private send(c: Client, msg: Record<string, unknown>): void {
    if (c.ws.readyState === c.ws.OPEN) c.ws.send(JSON.stringify(msg));
  }

  /** host/stopping: refuse new upgrades and tell every client to go (1001 going away). */
  beginStop(): void {
    this.stopping = true;
    for (const c of this.clients) {
      c.closing = true;
      c.unwatch?.();
      c.unwatch = null;
      c.ws.close(1001, 'server stopping');
    }
  }

  /** Final release: whatever is still open is destroyed. */
  close(): void {
    this.stopping = true;
    for (const c of this.clients) {
      c.unwatch?.();
      c.ws.terminate();
    }
    this.clients.clear();
    this.wss.close();
  }
}

function refuseUpgrade(socket: Duplex, status: number, code: string, message: string): void {
  const body = JSON.stringify({ error: { code, message } });
  const reason = { 401: 'Unauthorized', 403: 'Forbidden', 404: 'Not Found', 503: 'Service Unavailable' }[status];
  socket.end(
    `HTTP/1.1 ${status} ${reason ?? 'Error'}\r\nConnection: close\r\nContent-Type: application/json\r\n` +
      `Content-Length: ${Buffer.byteLength(body)}\r\n${status === 401 ? 'WWW-Authenticate: Bearer\r\n' : ''}\r\n${body}`,
  );
}

function sameHost(origin: string, host: string): boolean {
  try {
    return new URL(origin).host === host;
  } catch {
    return false;
  }
}
