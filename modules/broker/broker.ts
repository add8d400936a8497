import type { EventEmitter } from 'node:events';
import net from 'node:net';
import type { Duplex } from 'node:stream';
import { Aedes, type AedesPublishPacket, type Client, type PublishPacket, type Subscription } from 'aedes';
import { LRUCache } from 'lru-cache';
import { HubError } from '../../core/errors.js';
import '../shared/mqtt-packet-lean.js';
import type { ModuleContext } from '../../core/module.js';
import { TokenBucket } from '../shared/token-bucket.js';
import { holdWritesPerTurn } from '../shared/write-hold.js';
import type { CredentialsChangedEvent } from '../status/contract/topics.js';
import { agentMaySubscribe, checkAgentPublish, isOwnDownlink } from './acl.js';
import { Authenticator, hubPasswordFor, type Identity, sameIdentity } from './auth.js';
import type { BrokerConfig } from './config.js';
import { BROKER, type BrokerDeniedEvent, type BrokerStats, type BrokerWsConnection } from './contract/topics.js';
import { BoundedEmitter, type MqLike, SINK_TOPIC } from './emitter.js';
import { KeepaliveSweep } from './keepalive.js';
import { leanConnection, leanOnceConnected } from './lean-connection.js';
import { sessionQueues } from './outgoing-index.js';
import { limitPacketSize, type PacketLimit } from './packet-limit.js';
import { exactFirstTopics } from './topic-matcher.js';

/**
 * One connection's state, its identity included: every field set when it is made, so its object
 * keeps one shape and no property array. One object a connection, not three (an identity, a
 * login and the state: 10 000 agents on the embedded broker held 20 000 more objects of 40 bytes,
 * and a copy of each username).
 */
type ClientState =
  | {
      kind: 'agent';
      projectId: string;
      /** agents only: the hub's own client is not rate limited (it carries every command) */
      bucket: TokenBucket;
      /**
       * The agent's password, kept (in memory only, never logged) to ask again whether its login
       * still authenticates when its project's credentials change: disabled, or the password
       * rotated out. Its username is its project id (Authenticator.check accepts no other).
       */
      password: string;
    }
  | { kind: 'hub' | 'open'; projectId: undefined; bucket: undefined; password: undefined };
type AgentState = Extract<ClientState, { kind: 'agent' }>;

type AuthError = Error & { returnCode: number };
const authError = (returnCode: number, message: string): AuthError => Object.assign(new Error(message), { returnCode });

/** aedes keeps the CONNECT's will here while the connection is being authenticated. */
const pendingWill = (client: Client): PublishPacket | null | undefined =>
  (client as unknown as { _will?: PublishPacket | null })._will;
const activeWill = (client: Client): PublishPacket | null | undefined =>
  (client as unknown as { will?: PublishPacket | null }).will;

/**
 * The embedded MQTT broker: aedes behind a TCP server, with authentication against the status
 * module, a per-project ACL, a per-connection rate limit and a bound on the work in flight.
 *
 * Refusals in MQTT 3.1.1 terms:
 * - CONNECT: CONNACK 4 (bad username or password), 5 (not authorized: anonymous, a will that
 *   breaks the ACL), 3 (server unavailable: auth not answerable, max_clients), 2 (identifier
 *   rejected: the client id is held by another identity, so nobody can take over the hub's or
 *   another project's session [MQTT-3.1.4-2]).
 * - SUBSCRIBE: SUBACK return code 0x80 for that topic [MQTT-3.9.3]; the connection stays.
 * - PUBLISH: 3.1.1 has no negative PUBACK. aedes closes the connection when authorizePublish
 *   fails (and says nothing to the client, [MQTT-3.3.5-2]); an agent's mqtt.js would then
 *   reconnect and resend its unacknowledged QoS 1 message, which is refused again: a loop. So
 *   an ACL-refused publish is accepted on the wire (PUBACK for QoS 1, as Mosquitto does for
 *   3.1.1) and dropped before routing (its topic is rewritten to SINK_TOPIC). Over the rate limit
 *   see `authorizePublish`.
 */

export class EmbeddedBroker {
  private aedes?: Aedes;
  private keepalive?: KeepaliveSweep;
  private server?: net.Server;
  private mq?: BoundedEmitter;
  private readonly sockets = new Set<net.Socket>();
  /** MQTT-over-WebSocket streams the web module handed over (handleStream). */
  private readonly streams = new Set<Duplex>();
  private readonly clients = new WeakMap<Client, ClientState>();
  private readonly auth: Authenticator;
  private readonly reports: TokenBucket;
  private readonly c = {
    connections_total: 0,
    denied_auth: 0,
    denied_publish: 0,
    denied_subscribe: 0,
    shed_rate: 0,
    messages_in: 0,
    messages_out: 0,
    unreported: 0,
    oversized: 0,
    revoked: 0,
  };
  /** Every denial by `kind` and `reason` (BrokerDeniedEvent), reported or not: /metrics shows them all. */
  private readonly denials = new Map<string, { kind: BrokerDeniedEvent['kind']; reason: string; count: number }>();
  /**
   * Per project, bumped on every credentials change: a CONNECT authenticated across one is checked
   * again. An LRU cache of `auth_cache_max` (docs/benchmarks.md "Bounded maps that stay fast when full").
   */
  private readonly credentialGen: LRUCache<string, number>;
  private lastSummary = { shed: 0, unreported: 0 };
  /** One for every connection, TCP or WebSocket (packet-limit.ts). */
  private readonly packetLimit: PacketLimit;
  readonly hubPassword: string;
  port = 0;

  constructor(private readonly ctx: ModuleContext<BrokerConfig>) {
    const cfg = ctx.config;
    this.hubPassword = hubPasswordFor(cfg.hub_password);
    const now = () => ctx.services.clock.now();
    this.auth = new Authenticator(
      ctx.bus,
      {
        hubUsername: cfg.hub_username,
        hubPassword: this.hubPassword,
        timeoutMs: cfg.auth_timeout_ms,
        cacheMs: cfg.auth_cache_ms,
        cacheMax: cfg.auth_cache_max,
        now,
      },
      (err) => ctx.log.error({ err }, 'broker auth unavailable (STATUS.authenticate): refusing connections'),
    );
    this.reports = new TokenBucket(cfg.denial_reports_per_s, cfg.denial_reports_per_s, now());
    this.credentialGen = new LRUCache({ max: cfg.auth_cache_max });
    this.packetLimit = { max: cfg.max_packet_bytes, onTooBig: (client) => this.oversized(client) };
  }

  async start(): Promise<void> {
    const cfg = this.ctx.config;
    // aedes' in-memory persistence, its session queues indexed and fixed (outgoing-index.ts); its
    // forward check drops a stale resend before ours sees the packet
    const queues = sessionQueues((client, packet) => this.authorizeForward(client, packet));
    const aedes = new Aedes({
      persistence: queues.persistence,
      // aedes' mqemitter without its own queue: BoundedEmitter bounds the work (see emitter.ts)
      concurrency: 0,
      queueLimit: cfg.queue_limit,
      maxClientsIdLength: cfg.max_client_id_length,
      maxTopicLevels: cfg.max_topic_levels,
      maxInflightInbound: cfg.max_inflight_inbound,
      heartbeatInterval: cfg.heartbeat_interval_ms,
      connectTimeout: cfg.connect_timeout_ms,
      drainTimeout: cfg.drain_timeout_ms,
      keepaliveLimit: cfg.keepalive_limit_s,
      authenticate: (client, username, password, done) => {
        this.authenticate(client, username ?? undefined, password ?? undefined).then(
          () => done(null, true),
          (err: AuthError) => done(err, false),
        );
      },
      authorizePublish: (client, packet, done) => done(this.authorizePublish(client, packet)),
      authorizeSubscribe: (client, sub, done) => done(null, this.authorizeSubscribe(client, sub)),
      authorizeForward: queues.authorizeForward,
    });
    const holder = aedes as unknown as { mq: MqLike };
    // each client's exact filters in a map, only wildcards in mqemitter's trie (topic-matcher.ts)
    if (!exactFirstTopics(holder.mq))
      this.ctx.log.warn(
        "this aedes version's router has no topic matcher to stand in front of: every subscription stays in its trie (more memory a connection)",
      );
    this.mq = new BoundedEmitter(holder.mq, cfg.max_inflight, cfg.max_waiting);
    holder.mq = this.mq;
    this.aedes = aedes;
    // aedes emits 'error' for persistence failures; unheard, an EventEmitter error would crash us
    (aedes as EventEmitter).on('error', (err: Error) => this.ctx.log.error({ err }, 'broker error'));
    aedes.on('clientError', (client, err) =>
      this.ctx.log.debug({ client_id: client.id, err: err.message }, 'client error'),
    );
    aedes.on('connectionError', (_c, err) => this.ctx.log.debug({ err: err.message }, 'connection error'));
    const keepalive = new KeepaliveSweep(aedes);
    this.keepalive = keepalive;
    aedes.on('clientReady', (client) => {
      // after aedes' own 'connected' listener has gone (aedes emits 'connected' right after this)
      queueMicrotask(() => {
        leanOnceConnected(client);
        // one sweep for every client's keepalive, not a timer and a closure each (keepalive.ts)
        if (keepalive.adopt(client) === 'unlike') this.warnUnlikeAedes('keepalive');
      });
      this.c.connections_total++;
      const st = this.clients.get(client);
      this.ctx.log.debug({ client_id: client.id, project_id: st?.projectId }, 'client connected');
    });
    aedes.on('clientDisconnect', (client) => {
      this.ctx.log.debug({ client_id: client.id, project_id: this.clients.get(client)?.projectId }, 'client gone');
    });
    await aedes.listen();

    // one listener for every socket, not a closure each (lean-connection.ts says why)
    const sockets = this.sockets;
    const forgetSocket = function (this: net.Socket) {
      sockets.delete(this);
    };
    const server = net.createServer({ noDelay: true }, (socket) => {
      // docs/architecture.md#performance-decisions: without TCP_NODELAY a 0.2 ms MQTT round trip becomes 44 ms (Nagle + delayed ACK)
      socket.setNoDelay(true);
      // the packets aedes writes in one turn (PUBACKs, deliveries) leave in one writev
      holdWritesPerTurn(socket);
      sockets.add(socket);
      socket.on('close', forgetSocket);
      const client = aedes.handle(socket);
      if (!limitPacketSize(client, this.packetLimit)) this.warnUnlikeAedes('packetLimit');
      if (!leanConnection(client)) this.warnUnlikeAedes('lean');
    });
    // authenticate refuses past max_clients with CONNACK 3, which tells the client why; Node's own
    // cap, with headroom for those refusals and sockets still in CONNECT, bounds raw sockets
    server.maxConnections = cfg.max_clients + Math.max(16, Math.ceil(cfg.max_clients / 10));
    this.server = server;
    this.ctx.onStop(() => this.stop());
    try {
      await new Promise<void>((resolve, reject) => {
        server.once('error', reject);
        server.listen(cfg.port, cfg.host, () => {
          server.off('error', reject);
          resolve();
        });
      });
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'EADDRINUSE') {
        throw new HubError(
          'HOST_ERR_PORT_IN_USE',
          `port ${cfg.port} is in use (set ${cfg.port_env} to another port or HUB_EMBEDDED_BROKER=false to use an external broker)`,
          { port: cfg.port, env: cfg.port_env },
          { cause: err },
        );
      }
      throw err;
    }
    server.on('error', (err) => this.ctx.log.error({ err }, 'broker server error'));
    this.port = (server.address() as net.AddressInfo).port;
    this.ctx.timers.setInterval(() => this.summary(), cfg.report_interval_ms);
    if (!cfg.auth) this.ctx.log.warn('broker auth is off: any client may connect and publish or subscribe anywhere');
    this.ctx.log.info({ port: this.port, host: cfg.host, auth: cfg.auth }, 'embedded MQTT broker listening');
  }

  /**
   * An MQTT-over-WebSocket connection accepted by the web module on its port (BROKER.wsConnection):
   * the same aedes, so the same CONNECT authentication, ACL, rate and packet limits as over TCP.
   * Throws when the broker is not running (the web module then closes the WebSocket).
   */
  handleStream(req: BrokerWsConnection): { ok: true } {
    const aedes = this.aedes;
    const stream = req?.stream;
    if (!aedes || !this.server) throw new HubError('HOST_ERR_STOPPING', 'the embedded broker is not running');
    if (!stream || typeof stream.pipe !== 'function') {
      throw new TypeError('broker/ws-connection needs a stream');
    }
    this.streams.add(stream);
    stream.once('close', () => this.streams.delete(stream));
    const client = aedes.handle(stream);
    if (!limitPacketSize(client, this.packetLimit)) {
      this.warnUnlikeAedes('packetLimit');
    }
    return { ok: true };
  }

  /** Stops accepting, disconnects every client, closes aedes; safe to call twice. */
  async stop(): Promise<void> {
    const server = this.server;
    const aedes = this.aedes;
    this.server = undefined;
    this.aedes = undefined;
    this.keepalive?.stop();
    const closed = server?.listening ? new Promise<void>((r) => server.close(() => r())) : Promise.resolve();
    if (aedes) await new Promise<void>((r) => aedes.close(() => r()));
    // sockets that never finished CONNECT are not aedes clients yet
    for (const s of this.sockets) s.destroy();
    this.sockets.clear();
    for (const s of this.streams) s.destroy();
    this.streams.clear();
    await closed;
  }

  stats(): BrokerStats {
    const shedOverload = this.mq?.shed ?? 0;
    return {
      port: this.port,
      clients: this.aedes?.connectedClients ?? 0,
      connections_total: this.c.connections_total,
      denied_auth: this.c.denied_auth,
      denied_publish: this.c.denied_publish,
      denied_subscribe: this.c.denied_subscribe,
      shed: this.c.shed_rate + shedOverload,
      shed_rate: this.c.shed_rate,
      shed_overload: shedOverload,
      messages_in: this.c.messages_in,
      messages_out: this.c.messages_out,
      oversized: this.c.oversized,
      keepalive_timeouts: this.keepalive?.ended ?? 0,
      revoked: this.c.revoked,
      denials: [...this.denials.values()].map((d) => ({ ...d })),
      inflight: this.mq?.inflight ?? 0,
      waiting: this.mq?.waitingCount ?? 0,
    };
  }

  /**
   * STATUS.credentialsChanged: the project's cached logins go at once, and each of its connected
   * agents is asked about again with the login it connected with; one that no longer
   * authenticates (project disabled, password rotated out and its overlap over) is disconnected.
   * Its reconnect is then refused at CONNECT.
   */
  async credentialsChanged(ev: CredentialsChangedEvent): Promise<void> {
    if (!ev || typeof ev.project_id !== 'string') return;
    const projectId = ev.project_id;
    this.credentialGen.set(projectId, (this.credentialGen.get(projectId) ?? 0) + 1);
    this.auth.forget(projectId);
    if (ev.change === 'created' || ev.change === 'enabled') return; // nothing connected lost anything
    const clients = (this.aedes as unknown as { clients?: Record<string, Client> } | undefined)?.clients ?? {};
    const mine: Array<[Client, AgentState]> = [];
    for (const client of Object.values(clients)) {
      const st = this.clients.get(client);
      if (st?.kind === 'agent' && st.projectId === projectId) mine.push([client, st]);
    }
    for (const [client, st] of mine) {
      const r = await this.auth.check(st.projectId, Buffer.from(st.password, 'latin1'));
      // no answer (status unavailable, returnCode 3) leaves the session: fail closed applies to new logins
      if (r?.ok || r?.returnCode === 3) continue;
      this.c.revoked++;
      this.report({ client_id: client.id, project_id: projectId, kind: 'auth', reason: `revoked_${ev.change}` });
      client.close();
    }
  }

  // ─── aedes hooks ─────────────────────────────────────────────────────────────────────────

  private async authenticate(client: Client, username?: string, password?: Buffer): Promise<void> {
    const cfg = this.ctx.config;
    const refuse = (returnCode: number, reason: string, projectId?: string, topic?: string): AuthError => {
      this.c.denied_auth++;
      this.report({ client_id: client.id, project_id: projectId, kind: 'auth', reason, topic });
      return authError(returnCode, reason);
    };
    if ((this.aedes?.connectedClients ?? 0) >= cfg.max_clients) throw refuse(3, 'max_clients');
    let identity: Identity;
    if (!cfg.auth) {
      identity = { kind: 'open' };
    } else {
      const gen = username ? this.credentialGen.get(username) : undefined;
      let r = await this.auth.check(username, password);
      // the project's credentials changed while this was being answered: the answer may predate it
      if (r.ok && username && this.credentialGen.get(username) !== gen) r = await this.auth.check(username, password);
      if (!r.ok) throw refuse(r.returnCode, r.reason, username);
      identity = r.identity;
    }
    // [MQTT-3.1.4-2] a second CONNECT with a live client id takes the session over; only the same
    // identity may do that, or any agent could knock the hub (or another project) off the broker
    const holder = (this.aedes as unknown as { clients?: Record<string, Client> } | undefined)?.clients?.[client.id];
    if (holder && holder !== client && !sameIdentity(this.clients.get(holder), identity)) {
      throw refuse(2, 'client_id_in_use', projectOfIdentity(identity));
    }
    if (identity.kind !== 'agent') {
      this.clients.set(client, { kind: identity.kind, projectId: undefined, bucket: undefined, password: undefined });
      return;
    }
    // the will obeys the publish ACL; refusing it here tells the agent now, not when it dies
    const will = pendingWill(client);
    const denial = will && checkAgentPublish(identity.projectId, will.topic, will.payload, cfg.max_payload_bytes);
    if (denial) throw refuse(5, `will_${denial}`, identity.projectId, will.topic);
    this.clients.set(client, {
      kind: 'agent',
      projectId: identity.projectId,
      bucket: new TokenBucket(cfg.rate_limit.msgs_per_s, cfg.rate_limit.burst, this.ctx.services.clock.now()),
      // the password's bytes as latin1 text (any byte, one character each): the Buffer aedes hands
      // over is a view of the read the CONNECT came in, which it would keep alive for the whole
      // connection, and a copy in Node's buffer pool would keep a pool slab (docs/benchmarks.md "The embedded
      // broker's connections")
      password: password ? password.toString('latin1') : '',
    });
  }

  /** Returns an error to make aedes close the connection, null to let the (possibly redirected) packet on. */
  private authorizePublish(client: Client | null, packet: PublishPacket): Error | null {
    if (packet.topic.startsWith('$SYS/')) {
      // aedes#597; the connection closes (an agent has no business there), counted like any denial
      if (client) {
        const st = this.clients.get(client);
        this.c.denied_publish++;
        this.report({ client_id: client.id, project_id: st?.projectId, kind: 'publish', reason: 'sys_topic' });
      }
      return new Error('$SYS/ topics are reserved');
    }
    // a will of a connection gone before this broker started: it passed the ACL at CONNECT
    if (!client) return null;
    const st = this.clients.get(client);
    if (!st) return new Error('not authenticated');
    if (st.kind !== 'agent') {
      this.c.messages_in++;
      return null;
    }
    const projectId = st.projectId;
    const isWill = packet === activeWill(client);
    if (!isWill && !st.bucket.take(this.ctx.services.clock.now())) {
      this.c.shed_rate++;
      if (!packet.qos) {
        sink(packet);
        return null;
      }
      // QoS 1/2 over the limit: no PUBACK and the connection closes. A PUBACK would tell the agent
      // we took responsibility [MQTT-4.3.2] and it would never resend, so dropping after it loses an
      // acknowledged exec_result; without it the agent's session resends after reconnecting
      // [MQTT-4.4.0-1], by which time its bucket has refilled. An honest agent stays far below the
      // limit; a flooding one pays with reconnects, and its will is published like any lost link.
      this.report({ client_id: client.id, project_id: projectId, kind: 'publish', reason: 'rate_limit_disconnect' });
      return new Error('rate limit exceeded');
    }
    const denial = checkAgentPublish(projectId, packet.topic, packet.payload, this.ctx.config.max_payload_bytes);
    if (denial) {
      this.c.denied_publish++;
      this.report({
        client_id: client.id,
        project_id: projectId,
        kind: 'publish',
        reason: isWill ? `will_${denial}` : denial,
        topic: packet.topic,
      });
      sink(packet);
      return null;
    }
    // an agent cannot plant retained messages: they would replay to the hub on every resubscribe
    packet.retain = false;
    this.c.messages_in++;
    return null;
  }

  private authorizeSubscribe(client: Client, sub: Subscription): Subscription | null {
    const st = this.clients.get(client);
    if (!st) return null;
    if (st.kind !== 'agent') return sub;
    if (agentMaySubscribe(st.projectId, sub.topic)) return sub;
    this.c.denied_subscribe++;
    this.report({
      client_id: client.id,
      project_id: st.projectId,
      kind: 'subscribe',
      reason: 'topic',
      topic: sub.topic,
    });
    return null; // SUBACK 0x80 for this topic [MQTT-3.9.3-2]
  }

  private authorizeForward(client: Client, packet: AedesPublishPacket): AedesPublishPacket | null {
    const st = this.clients.get(client);
    // defence in depth: the subscribe ACL already keeps an agent to its own downlinks
    if (st?.kind === 'agent' && !isOwnDownlink(st.projectId, packet.topic)) return null;
    this.c.messages_out++;
    return packet;
  }

  private oversized(client: Client): void {
    this.c.oversized++;
    this.report({
      client_id: client.id ?? '',
      project_id: this.clients.get(client)?.projectId,
      kind: 'publish',
      reason: 'packet_too_large',
    });
    client.conn.destroy();
  }

  /**
   * What this aedes version does not let the broker do, said once each: it then runs as aedes
   * made it (more memory a connection, or no packet limit), which an operator should know of.
   */
  private static readonly UNLIKE_AEDES = {
    packetLimit: 'cannot enforce max_packet_bytes with this aedes version (no client parser found)',
    keepalive:
      "this aedes version keeps its clients' keepalive timers differently: each connection keeps its own timer (more memory each)",
    lean: 'this aedes version builds its clients differently: connections keep its per-connection listeners (more memory each)',
  } as const;
  private readonly warnedUnlike = new Set<keyof typeof EmbeddedBroker.UNLIKE_AEDES>();

  private warnUnlikeAedes(what: keyof typeof EmbeddedBroker.UNLIKE_AEDES): void {
    if (this.warnedUnlike.has(what)) return;
    this.warnedUnlike.add(what);
    this.ctx.log.warn(EmbeddedBroker.UNLIKE_AEDES[what]);
  }

  // ─── reporting ───────────────────────────────────────────────────────────────────────────

  /** Logs a denial and publishes it on the bus, at most denial_reports_per_s; the rest only counted. */
  private report(e: Omit<BrokerDeniedEvent, 'at'>): void {
    const key = `${e.kind}\u0000${e.reason}`;
    const d = this.denials.get(key);
    if (d) d.count++;
    else this.denials.set(key, { kind: e.kind, reason: e.reason, count: 1 });
    const at = this.ctx.services.clock.now();
    if (!this.reports.take(at)) {
      this.c.unreported++;
      return;
    }
    // ids and the topic only, cut short (they come off the wire): never a payload or a password
    const event: BrokerDeniedEvent = {
      client_id: clip(e.client_id),
      ...(e.project_id !== undefined ? { project_id: clip(e.project_id) } : {}),
      kind: e.kind,
      reason: e.reason,
      ...(e.topic !== undefined ? { topic: clip(e.topic) } : {}),
      at,
    };
    this.ctx.log.warn(event, `broker denied ${e.kind}`);
    void this.ctx.bus.publish(BROKER.denied, event);
  }

  private summary(): void {
    const s = this.stats();
    const shed = s.shed - this.lastSummary.shed;
    const unreported = this.c.unreported - this.lastSummary.unreported;
    this.lastSummary = { shed: s.shed, unreported: this.c.unreported };
    if (shed > 0 || unreported > 0) {
      this.ctx.log.warn(
        { shed, unreported_denials: unreported, shed_total: s.shed, clients: s.clients },
        'broker shed load since the last report',
      );
    }
  }
}

const clip = (s: string | null | undefined): string => (s == null ? '' : s.length > 200 ? `${s.slice(0, 200)}…` : s);

/** Redirects a refused publish to the sink: acknowledged on the wire, never routed or stored. */
function sink(packet: PublishPacket): void {
  packet.topic = SINK_TOPIC;
  packet.retain = false;
}

function projectOfIdentity(id: Identity): string | undefined {
  return id.kind === 'agent' ? id.projectId : undefined;
}
