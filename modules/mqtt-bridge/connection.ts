import net from 'node:net';
import tls from 'node:tls';
import { type IClientOptions, type IConnackPacket, type IPublishPacket, MqttClient } from 'mqtt';
import { HubError } from '../../core/errors.js';
import type { Logger } from '../../core/log.js';
import type { ModuleTimers } from '../../core/module.js';
import type { BridgeStateEvent } from '../shared/topics.js';
import type { BridgeConfig } from './config.js';

export type BridgeState = BridgeStateEvent['state'];

export interface Credential {
  username?: string;
  password?: string;
}

export interface ConnectionDeps {
  config: BridgeConfig;
  log: Logger;
  timers: ModuleTimers;
  now(): number;
  /** Called on every state change (never twice in a row with the same state). */
  onState(ev: BridgeStateEvent): void;
  /** Called after each CONNACK, before waiting publishers are released. */
  onConnect(connack: IConnackPacket): void;
  /** mqtt.js calls this for each inbound PUBLISH; the PUBACK goes out when `done` is called. */
  handleMessage(packet: IPublishPacket, done: (err?: Error) => void): void;
  /** The credential to use when the config has none (asked again after the broker refused one). */
  credential(): Promise<Credential>;
}

/** CONNACK return codes that mean "wrong credential": 3.1.1 §3.2.2.3 (4, 5) and MQTT 5 §3.2.2.2 (134, 135). */
const AUTH_CODES = new Set([4, 5, 134, 135]);

/** Where the bridge connects, without credentials: safe to log. */
export function brokerAddress(url: string): { scheme: string; host: string; port: number; tls: boolean } {
  const u = new URL(url);
  const secure = u.protocol === 'mqtts:' || u.protocol === 'tls:' || u.protocol === 'ssl:';
  // URL keeps IPv6 literals in brackets; net wants them bare
  const host = u.hostname.replace(/^\[(.*)\]$/, '$1') || 'localhost';
  return { scheme: u.protocol.slice(0, -1), host, port: u.port ? Number(u.port) : secure ? 8883 : 1883, tls: secure };
}

/**
 * The hub's MQTT connection: an mqtt.js client on a socket we open ourselves (TCP_NODELAY,
 * docs/architecture.md#performance-decisions: mqtt.js's own TCP builder leaves Nagle on), reconnected by us with capped
 * exponential backoff and jitter (mqtt.js only knows a fixed `reconnectPeriod`), reporting
 * connected / disconnected / reconnecting / offline.
 */
export class BridgeConnection {
  readonly client: MqttClient;
  private readonly d: ConnectionDeps;
  private readonly address: ReturnType<typeof brokerAddress>;
  private stateNow: BridgeState = 'disconnected';
  private connectedAt: number | null = null;
  /** When the connection was lost (or the bridge started), for waitConnected. */
  private downSince: number;
  private attempt = 0;
  private retryTimer?: NodeJS.Timeout;
  private lastError?: Error;
  private authFailed = false;
  private usesBrokerCredential = false;
  private ending = false;
  private readonly waiters = new Set<{ resolve(): void; reject(e: unknown): void; timer: NodeJS.Timeout }>();
  /** Reconnect attempts made (each try after a loss or a failed attempt). */
  reconnects = 0;
  connects = 0;

  constructor(deps: ConnectionDeps, credential: Credential, fromBroker: boolean) {
    this.d = deps;
    this.downSince = deps.now();
    const c = deps.config;
    this.address = brokerAddress(c.url);
    const url = new URL(c.url);
    this.usesBrokerCredential = fromBroker;
    const options: IClientOptions = {
      protocol: this.address.tls ? 'mqtts' : 'mqtt',
      clientId: c.client_id,
      // credentials in the URL count when the config has none (mqtt.js does the same)
      username: credential.username ?? (url.username ? decodeURIComponent(url.username) : undefined),
      password: credential.password ?? (url.password ? decodeURIComponent(url.password) : undefined),
      clean: c.clean_session,
      keepalive: c.keepalive_s,
      protocolVersion: c.protocol_version,
      connectTimeout: c.connect_timeout_ms,
      // we reconnect ourselves (capped backoff with jitter); mqtt.js would retry at a fixed period
      reconnectPeriod: 0,
      // the bridge subscribes on every CONNACK itself (see onConnect in index.ts)
      resubscribe: false,
      // publishes wait for a connection in Publisher, bounded; mqtt.js's offline queue is not
      queueQoSZero: false,
      manualConnect: true,
      ...(c.protocol_version === 5 && !c.clean_session
        ? { properties: { sessionExpiryInterval: c.session_expiry_s } }
        : {}),
    };
    this.client = new MqttClient(() => this.openSocket(), options);
    this.client.handleMessage = (packet, done) => deps.handleMessage(packet, done);
    this.client.on('connect', (connack) => this.onConnect(connack));
    this.client.on('close', () => this.onClose());
    this.client.on('error', (err) => {
      this.lastError = err;
      const code = (err as { code?: unknown }).code;
      if (typeof code === 'number' && AUTH_CODES.has(code)) this.authFailed = true;
      this.d.log.debug({ err: err.message, code }, 'mqtt client error');
    });
  }

  get state(): BridgeState {
    return this.stateNow;
  }

  get connected(): boolean {
    return this.stateNow === 'connected' && this.client.connected;
  }

  get connectedSince(): number | null {
    return this.connectedAt;
  }

  /** host:port without credentials, for logs and stats. */
  get broker(): string {
    return `${this.address.scheme}://${this.address.host}:${this.address.port}`;
  }

  private openSocket(): net.Socket {
    const { host, port } = this.address;
    if (this.address.tls) {
      const socket = tls.connect({ host, port, servername: net.isIP(host) ? undefined : host });
      socket.setNoDelay(true);
      return socket;
    }
    return net.createConnection({ host, port, noDelay: true });
  }

  /**
   * Opens the first connection; resolves true once connected, false when the first attempt failed
   * or `waitMs` passed first (the attempt then goes on in the background). Never rejects.
   */
  start(waitMs: number): Promise<boolean> {
    return new Promise<boolean>((resolve) => {
      let timer: NodeJS.Timeout | undefined;
      const finish = (up: boolean) => {
        this.client.off('connect', onConnect);
        this.client.off('close', onClose);
        if (timer) this.d.timers.clear(timer);
        resolve(up);
      };
      const onConnect = () => finish(true);
      const onClose = () => finish(false);
      this.client.once('connect', onConnect);
      this.client.once('close', onClose);
      timer = this.d.timers.setTimeout(() => finish(this.connected), waitMs);
      this.client.connect();
    });
  }

  /**
   * Resolves once connected; rejects with MQTT_ERR_OFFLINE when the bridge stops or when the
   * connection has been down for `ms` (counted from the loss, not from this call). The bus hands
   * the bridge one request at a time, so a wait counted per request would make the N-th publish of
   * a long outage wait N × `ms`; this way a short blip is ridden out and a long outage fails fast.
   */
  waitConnected(ms: number): Promise<void> {
    if (this.connected) return Promise.resolve();
    if (this.ending) return Promise.reject(offline('the bridge is stopping'));
    const downFor = this.d.now() - this.downSince;
    const left = ms - downFor;
    if (left <= 0) {
      return Promise.reject(
        offline(`the MQTT broker connection has been down for ${downFor} ms (state ${this.stateNow})`, this.lastError),
      );
    }
    return new Promise<void>((resolve, reject) => {
      const w = {
        resolve,
        reject,
        timer: this.d.timers.setTimeout(() => {
          this.waiters.delete(w);
          reject(offline(`not connected to the MQTT broker within ${ms} ms (state ${this.stateNow})`, this.lastError));
        }, ms),
      };
      this.waiters.add(w);
    });
  }

  private setState(state: BridgeState, error?: Error): void {
    if (state === this.stateNow) return;
    const previous = this.stateNow;
    this.stateNow = state;
    const ev: BridgeStateEvent = { state, at: this.d.now(), ...(error ? { error: error.message } : {}) };
    const fields = { broker: this.broker, client_id: this.d.config.client_id, previous, state };
    if (state === 'connected' || state === 'reconnecting') this.d.log.info(fields, `mqtt bridge ${state}`);
    else this.d.log.warn({ ...fields, error: error?.message }, `mqtt bridge ${state}`);
    this.d.onState(ev);
  }

  private onConnect(connack: IConnackPacket): void {
    if (this.ending) return;
    this.connects++;
    this.connectedAt = this.d.now();
    this.lastError = undefined;
    this.authFailed = false;
    this.d.onConnect(connack);
    this.setState('connected');
    for (const w of this.waiters) {
      this.d.timers.clear(w.timer);
      w.resolve();
    }
    this.waiters.clear();
  }

  private onClose(): void {
    if (this.ending) return;
    const wasUp = this.connectedAt !== null;
    if (wasUp) {
      // a connection that dropped at once (another client with our id, a broker kicking us) must not
      // turn into a tight loop: the backoff only starts over after a connection that lasted
      if (this.d.now() - this.connectedAt! >= this.d.config.reconnect_max_ms) this.attempt = 0;
      this.connectedAt = null;
      this.downSince = this.d.now();
      this.setState('disconnected', this.lastError);
    } else {
      this.setState('offline', this.lastError ?? new Error('connection closed before CONNACK'));
    }
    this.scheduleRetry();
  }

  /** Capped exponential backoff with "equal jitter": half the delay fixed, half random. */
  private nextDelay(): number {
    const { reconnect_min_ms: min, reconnect_max_ms: max } = this.d.config;
    const capped = Math.min(max, min * 2 ** Math.min(this.attempt, 30));
    this.attempt++;
    return Math.max(min, Math.round(capped / 2 + (Math.random() * capped) / 2));
  }

  private scheduleRetry(): void {
    if (this.ending || this.retryTimer) return;
    const delay = this.nextDelay();
    this.d.log.debug({ retry_in_ms: delay, attempt: this.attempt }, 'mqtt bridge reconnect scheduled');
    this.retryTimer = this.d.timers.setTimeout(() => {
      this.retryTimer = undefined;
      void this.retry();
    }, delay);
  }

  private async retry(): Promise<void> {
    if (this.ending) return;
    if (this.stateNow === 'disconnected') this.setState('reconnecting');
    if (this.authFailed && this.usesBrokerCredential) {
      // the embedded broker may have a new hub credential (its secret changed): ask again
      try {
        const cred = await this.d.credential();
        if (this.ending) return;
        this.client.options.username = cred.username;
        this.client.options.password = cred.password;
      } catch {
        // keep the old one; the next attempt asks again
      }
    }
    this.reconnects++;
    this.client.connect();
  }

  /**
   * Ends the client: graceful DISCONNECT when connected (bounded by `graceMs`), then by force.
   * Waiting publishers are refused. Safe to call twice.
   */
  async end(graceMs: number): Promise<void> {
    if (this.ending) return;
    this.ending = true;
    if (this.retryTimer) this.d.timers.clear(this.retryTimer);
    this.retryTimer = undefined;
    for (const w of this.waiters) {
      this.d.timers.clear(w.timer);
      w.reject(offline('the bridge is stopping'));
    }
    this.waiters.clear();
    const client = this.client;
    const wasConnected = client.connected;
    await new Promise<void>((resolve) => {
      let timer: NodeJS.Timeout | undefined;
      const done = () => {
        if (timer) this.d.timers.clear(timer);
        resolve();
      };
      if (wasConnected && graceMs > 0) {
        timer = this.d.timers.setTimeout(() => {
          // the DISCONNECT did not go out in time (or end() still waits for in-flight PUBACKs): drop the socket
          client.stream?.destroy();
          resolve();
        }, graceMs);
        // what is still unacknowledged here outlived its request (Publisher.drain already waited);
        // mqtt.js's end() would otherwise wait for those PUBACKs before it sends the DISCONNECT
        for (const id of Object.keys(client.outgoing)) client.removeOutgoingMessage(Number(id));
        client.end(false, {}, done); // DISCONNECT first [MQTT-3.14]
      } else {
        client.end(true, {}, done);
      }
    });
    // a socket still half open (end() raced a connect in progress) must not outlive the module
    // (listeners stay: mqtt.js's own 'close' handler clears its CONNACK timer; ours check `ending`)
    client.stream?.destroy();
    if (this.connectedAt !== null) {
      this.connectedAt = null;
      this.setState('disconnected');
    }
  }
}

function offline(message: string, cause?: Error): HubError {
  return new HubError('MQTT_ERR_OFFLINE', message, cause ? { cause: cause.message } : undefined, { cause });
}
