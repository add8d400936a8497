import type { IClientOptions, IConnackPacket, IPublishPacket, MqttClient } from 'mqtt';
import { HubError } from '../../core/errors.js';
import type { Logger } from '../../core/log.js';
import type { ModuleTimers } from '../../core/module.js';
import { MqttSession } from '../shared/mqtt-session.js';
import { brokerAddress } from '../shared/mqtt-session-socket.js';
import type { BridgeConfig } from './config.js';
import type { BridgeStateEvent } from './contract/topics.js';

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
  /** Filters subscribed at QoS 1 after every CONNACK (a refusal is logged, the connection stays). */
  subscriptions: readonly string[];
}

/** CONNACK return codes that mean "wrong credential": 3.1.1 §3.2.2.3 (4, 5) and MQTT 5 §3.2.2.2 (134, 135). */
const AUTH_CODES = new Set([4, 5, 134, 135]);

/**
 * The hub's MQTT connection, on the shared MqttSession (TCP_NODELAY socket, reconnect with
 * capped backoff and "equal jitter", subscriptions after every CONNACK). What is the bridge's
 * here: its states (connected / disconnected / reconnecting / offline), the bounded wait of its
 * publishers for a connection, and the embedded broker's credential asked again after a refusal.
 */
export class BridgeConnection {
  readonly client: MqttClient;
  private readonly session: MqttSession;
  private readonly d: ConnectionDeps;
  private readonly address: ReturnType<typeof brokerAddress>;
  private stateNow: BridgeState = 'disconnected';
  private connectedAt: number | null = null;
  /** When the connection was lost (or the bridge started), for waitConnected. */
  private downSince: number;
  private lastError?: Error;
  private authFailed = false;
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
    this.session = new MqttSession({
      url: c.url,
      client: {
        clientId: c.client_id,
        // credentials in the URL count when the config has none (mqtt.js does the same)
        username: credential.username ?? (url.username ? decodeURIComponent(url.username) : undefined),
        password: credential.password ?? (url.password ? decodeURIComponent(url.password) : undefined),
        clean: c.clean_session,
        keepalive: c.keepalive_s,
        protocolVersion: c.protocol_version,
        connectTimeout: c.connect_timeout_ms,
        // publishes wait for a connection in Publisher, bounded; mqtt.js's offline queue is not
        queueQoSZero: false,
        ...(c.protocol_version === 5 && !c.clean_session
          ? { properties: { sessionExpiryInterval: c.session_expiry_s } }
          : {}),
      },
      subscriptions: deps.subscriptions,
      requireSubscriptions: false,
      backoff: { minMs: c.reconnect_min_ms, maxMs: c.reconnect_max_ms, jitter: 'equal', stableMs: c.reconnect_max_ms },
      offlineError: (message, cause) => offline(message, cause),
      log: deps.log,
      timers: deps.timers,
      now: deps.now,
      beforeConnect: (options, retry) => (retry ? this.beforeRetry(options, fromBroker) : undefined),
      onUp: (connack) => this.onConnect(connack),
      onDown: (_reason, wasUp) => this.onClose(wasUp),
      onError: (err) => {
        this.lastError = err;
        const code = (err as { code?: unknown }).code;
        if (typeof code === 'number' && AUTH_CODES.has(code)) this.authFailed = true;
      },
      handleMessage: (packet, done) => deps.handleMessage(packet, done),
    });
    this.client = this.session.client;
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
      this.session.start();
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

  private onClose(wasUp: boolean): void {
    if (this.ending) return;
    if (wasUp) {
      this.connectedAt = null;
      this.downSince = this.d.now();
      this.setState('disconnected', this.lastError);
    } else {
      this.setState('offline', this.lastError ?? new Error('connection closed before CONNACK'));
    }
  }

  /** Before each reconnect attempt: the state says so, and a refused broker credential is asked again. */
  private async beforeRetry(options: IClientOptions, fromBroker: boolean): Promise<void> {
    if (this.stateNow === 'disconnected') this.setState('reconnecting');
    if (this.authFailed && fromBroker) {
      // the embedded broker may have a new hub credential (its secret changed): ask again
      try {
        const cred = await this.d.credential();
        options.username = cred.username;
        options.password = cred.password;
      } catch {
        // keep the old one; the next attempt asks again
      }
    }
    if (!this.ending) this.reconnects++;
  }

  /**
   * Ends the client: graceful DISCONNECT when connected (bounded by `graceMs`), then by force.
   * Waiting publishers are refused. Safe to call twice.
   */
  async end(graceMs: number): Promise<void> {
    if (this.ending) return;
    this.ending = true;
    for (const w of this.waiters) {
      this.d.timers.clear(w.timer);
      w.reject(offline('the bridge is stopping'));
    }
    this.waiters.clear();
    // what is still unacknowledged here outlived its request (Publisher.drain already waited);
    // mqtt.js's end() would otherwise wait for those PUBACKs before it sends the DISCONNECT
    if (this.client.connected && graceMs > 0) {
      for (const id of Object.keys(this.client.outgoing)) this.client.removeOutgoingMessage(Number(id));
    }
    await this.session.end(graceMs);
    if (this.connectedAt !== null) {
      this.connectedAt = null;
      this.setState('disconnected');
    }
  }
}

function offline(message: string, cause?: Error): HubError {
  return new HubError('MQTT_ERR_OFFLINE', message, cause ? { cause: cause.message } : undefined, { cause });
}
