/**
 * One MQTT session over one mqtt.js client, shared by the agent and the hub's bridge: connect,
 * reconnect with capped jittered backoff, subscriptions made again on every CONNACK, up/down
 * callbacks, one log line per distinct error, and QoS 1 publishes that fail when the
 * connection closes before their PUBACK.
 *
 * mqtt.js's own reconnect is off (`reconnectPeriod: 0`): it retries at a fixed period, and we
 * want a capped exponential backoff with jitter. Its resubscribe is off too: the session
 * subscribes after every CONNACK itself (a broker that lost the session needs them again; on a
 * resumed session it is a harmless refresh), so a refused subscription is seen and handled.
 * The client is created once (`manualConnect`) and connected again on each attempt, so a caller
 * may hold it (the bridge's manual PUBACKs and flow control work on `client`).
 *
 * @example
 *   const s = new MqttSession({ url, client: { clientId, clean: false }, subscriptions: ['a/#'],
 *     requireSubscriptions: true, backoff: { minMs: 500, maxMs: 30_000, jitter: 'full', stableMs: 0 },
 *     offlineError: (m) => new Error(m), log, timers, now: Date.now,
 *     onMessage: (topic, payload) => …, onUp: () => …, onDown: (reason, wasUp) => … });
 *   s.start();
 *   await s.publish('a/b', 'hello'); // resolves on the PUBACK
 *   await s.end(1000);
 */
import type { Socket } from 'node:net';
import mqtt, { type IClientOptions, type IConnackPacket, type IPublishPacket, MqttClient } from 'mqtt';
import './mqtt-packet-lean.js';
import type { Logger } from '../../core/log.js';
import type { ModuleTimers } from '../../core/module.js';
import { brokerAddress, openSocket, redactUrl } from './mqtt-session-socket.js';

/** full: uniform in [0, cap]; equal: half the delay fixed, half random (never below the minimum). */
export type Jitter = 'full' | 'equal';

export interface BackoffPolicy {
  minMs: number;
  maxMs: number;
  jitter: Jitter;
  /**
   * The backoff starts over only after a connection that lasted this long: one that drops at
   * once (another client with our id, a broker kicking us) must not turn into a tight loop.
   */
  stableMs: number;
}

export interface MqttSessionOptions {
  url: string;
  /** mqtt.js options; `reconnectPeriod`, `resubscribe` and `manualConnect` are the session's. */
  client: IClientOptions;
  /** Filters subscribed at QoS 1 after every CONNACK. */
  subscriptions: readonly string[];
  /**
   * true: the session is up only once every subscription is granted, and a refusal drops the
   * connection and tries again. false: up at the CONNACK, a refusal is logged.
   */
  requireSubscriptions: boolean;
  backoff: BackoffPolicy;
  /** The error a publish rejects with when there is no connection or it closes first. */
  offlineError(message: string, cause?: Error): Error;
  log: Logger;
  timers: ModuleTimers;
  now(): number;
  /**
   * Before every attempt, the first too (`retry` false): may change `options` (a fresh will,
   * a credential asked again). The attempt waits for it.
   */
  beforeConnect?(options: IClientOptions, retry: boolean): void | Promise<void>;
  onUp?(connack: IConnackPacket): void;
  /** A connection closed, or an attempt failed (`wasUp` false); `reason` is the last error seen. */
  onDown?(reason: string, wasUp: boolean): void;
  onError?(err: Error): void;
  /**
   * Fields added to the 'MQTT connection error' line, e.g. what a person should check when the
   * broker refuses the login: the owner knows what its credential is made of, the session does not.
   */
  explainError?(err: Error): Record<string, unknown> | undefined;
  onMessage?(topic: string, payload: Buffer): void;
  /** Replaces mqtt.js's inbound PUBLISH handling: the PUBACK goes out when `done` is called. */
  handleMessage?(packet: IPublishPacket, done: (err?: Error) => void): void;
}

/**
 * mqtt.js logs every packet it reads and writes through `debug`: a call with its arguments
 * gathered even when nobody listens, two or three per uplink (2 % of the hub's CPU and 3 % of
 * the bytes it allocated under bench heartbeat). It is called only when asked for with
 * `DEBUG=mqttjs*`, as the `debug` package reads it.
 */
function mqttjsDebugWanted(): boolean {
  return /mqttjs|(^|[\s,])\*/.test(process.env.DEBUG ?? '');
}
const noDebugLog = (): void => {};

/** Capped exponential backoff: the cap is min·2^attempt up to max, jittered as `jitter` says. */
export function backoffDelay(
  attempt: number,
  minMs: number,
  maxMs: number,
  random: () => number = Math.random,
  jitter: Jitter = 'full',
): number {
  const cap = Math.min(maxMs, minMs * 2 ** Math.min(attempt, 30));
  if (jitter === 'full') return Math.floor(random() * cap);
  return Math.max(minMs, Math.round(cap / 2 + (random() * cap) / 2));
}

type PublishCallback = (err?: Error) => void;

export class MqttSession {
  readonly client: MqttClient;
  private readonly o: MqttSessionOptions;
  private upAt: number | null = null;
  private attempt = 0;
  private retryTimer: NodeJS.Timeout | null = null;
  private ending = false;
  private lastError: Error | undefined;
  /** Publishes waiting for their PUBACK, by their mqtt.js callback (how `client.outgoing` names them). */
  private readonly pending = new Map<PublishCallback, (err: Error) => void>();

  constructor(opts: MqttSessionOptions) {
    this.o = opts;
    const address = brokerAddress(opts.url);
    const options: IClientOptions = { ...opts.client, reconnectPeriod: 0, resubscribe: false, manualConnect: true };
    options.log ??= mqttjsDebugWanted() ? undefined : noDebugLog;
    if (!address.websocket) options.protocol = address.tls ? 'mqtts' : 'mqtt';
    this.client = address.websocket
      ? mqtt.connect(opts.url, options)
      : new MqttClient(() => openSocket(address), options);
    if (opts.handleMessage) this.client.handleMessage = opts.handleMessage;
    if (opts.onMessage) this.client.on('message', opts.onMessage);
    this.client.on('connect', (connack) => this.onConnect(connack));
    this.client.on('close', () => this.onClose());
    this.client.on('error', (err) => this.onError(err));
  }

  /** Connected, and (with `requireSubscriptions`) subscribed. */
  get up(): boolean {
    return this.upAt !== null && this.client.connected;
  }

  /** The first attempt; later ones follow on their own until `end`. */
  start(): void {
    void this.attemptConnect(false);
  }

  /**
   * Publishes QoS 1 and resolves on the PUBACK. Rejects with `offlineError` when not up or when
   * the connection closes before the PUBACK: the message is then dropped from mqtt.js's store,
   * so it is not sent again behind the caller's back (the caller decides whether to retry).
   */
  publish(topic: string, payload: string | Buffer): Promise<void> {
    if (!this.up) return Promise.reject(this.o.offlineError('not connected to the broker'));
    return new Promise<void>((resolve, reject) => {
      const cb: PublishCallback = (err) => {
        if (!this.pending.delete(cb)) return; // already failed by a close
        if (err) reject(this.o.offlineError(`publish failed: ${err.message}`, err));
        else resolve();
      };
      this.pending.set(cb, reject);
      this.client.publish(topic, payload, { qos: 1 }, cb);
    });
  }

  /** Drops the connection now; the next attempt follows the backoff. */
  drop(): void {
    this.client.stream?.destroy();
  }

  /**
   * Ends the session: a DISCONNECT when connected, after the in-flight PUBACKs (mqtt.js waits
   * for them), so the broker does not send the last will; by force once `graceMs` passed.
   * Publishes still waiting are failed. Safe to call twice.
   */
  async end(graceMs: number): Promise<void> {
    if (this.ending) return;
    this.ending = true;
    if (this.retryTimer) this.o.timers.clear(this.retryTimer);
    this.retryTimer = null;
    const client = this.client;
    let ended = false;
    if (client.connected && graceMs > 0) {
      let timer: NodeJS.Timeout | undefined;
      await Promise.race([
        new Promise<void>((r) =>
          client.end(false, {}, () => {
            ended = true;
            r();
          }),
        ),
        new Promise<void>((r) => {
          timer = this.o.timers.setTimeout(r, graceMs);
        }),
      ]);
      if (timer) this.o.timers.clear(timer);
    }
    // end(true) returns at once while a polite end is under way: the socket is closed below
    // (never attempted: mqtt.js has no stream to end)
    if (!ended && client.stream) await new Promise<void>((r) => client.end(true, {}, () => r()));
    // a socket still half open (end() raced a connect in progress) must not outlive the caller
    // (listeners stay: mqtt.js's own 'close' handler clears its CONNACK timer; ours check `ending`)
    client.stream?.destroy();
    this.upAt = null;
    this.failPending('connection stopped');
  }

  private async attemptConnect(retry: boolean): Promise<void> {
    if (this.ending) return;
    try {
      await this.o.beforeConnect?.(this.client.options, retry);
    } catch (err) {
      this.o.log.debug({ err: (err as Error).message }, 'MQTT session: preparing the attempt failed; trying as before');
    }
    if (this.ending) return;
    try {
      this.client.connect();
    } catch (err) {
      this.o.log.error({ err: (err as Error).message }, 'cannot connect the MQTT client');
      this.scheduleRetry();
      return;
    }
    // mqtt.js builds a WebSocket stream itself: the TCP socket under it gets TCP_NODELAY here
    (this.client.stream as Partial<Socket> | undefined)?.setNoDelay?.(true);
  }

  private onConnect(connack: IConnackPacket): void {
    if (this.ending) return;
    if (this.o.subscriptions.length === 0) {
      this.markUp(connack);
      return;
    }
    const stream = this.client.stream;
    const subs = Object.fromEntries(this.o.subscriptions.map((t) => [t, { qos: 1 as const }]));
    this.client.subscribe(subs, (err, granted) => {
      // an answer for a connection that is gone says nothing about the current one
      if (this.ending || stream !== this.client.stream) return;
      const refused = (granted ?? []).filter((g) => g.qos !== 0 && g.qos !== 1 && g.qos !== 2);
      if (err || refused.length > 0) {
        const fields = { err: err?.message, refused: refused.map((g) => g.topic), filters: this.o.subscriptions };
        if (!this.o.requireSubscriptions) {
          this.o.log.error(fields, 'MQTT subscription refused');
          return;
        }
        this.o.log.error(fields, 'MQTT subscription refused; reconnecting');
        this.drop();
        return;
      }
      if (this.o.requireSubscriptions) this.markUp(connack);
    });
    // the SUBSCRIBE is written first: what is published once up goes out behind it
    if (!this.o.requireSubscriptions) this.markUp(connack);
  }

  private markUp(connack: IConnackPacket): void {
    this.upAt = this.o.now();
    this.lastError = undefined;
    this.o.onUp?.(connack);
  }

  private onError(err: Error): void {
    if (this.ending) return;
    // one line per distinct error, not one per attempt of a long outage
    if (err.message !== this.lastError?.message) {
      this.o.log.warn(
        { err: err.message, url: redactUrl(this.o.url), ...this.o.explainError?.(err) },
        'MQTT connection error',
      );
    }
    this.lastError = err;
    this.o.onError?.(err);
  }

  private onClose(): void {
    if (this.ending) return;
    const wasUp = this.upAt !== null;
    if (wasUp && this.o.now() - this.upAt! >= this.o.backoff.stableMs) this.attempt = 0;
    this.upAt = null;
    this.failPending('connection closed before the PUBACK');
    const reason = this.lastError?.message ?? (wasUp ? 'connection lost' : 'connection closed before CONNACK');
    this.o.onDown?.(reason, wasUp);
    this.scheduleRetry();
  }

  /** Fails the publishes still waiting and takes them out of mqtt.js's store (no resend). */
  private failPending(reason: string): void {
    if (this.pending.size === 0) return;
    const outgoing = this.client.outgoing as Record<string, { cb?: unknown }>;
    for (const [id, entry] of Object.entries(outgoing)) {
      if (this.pending.has(entry.cb as PublishCallback)) this.client.removeOutgoingMessage(Number(id));
    }
    const rejects = [...this.pending.values()];
    this.pending.clear();
    for (const reject of rejects) reject(this.o.offlineError(reason));
  }

  private scheduleRetry(): void {
    if (this.ending || this.retryTimer) return;
    const { minMs, maxMs, jitter } = this.o.backoff;
    const delay = backoffDelay(this.attempt++, minMs, maxMs, Math.random, jitter);
    this.o.log.debug({ retry_in_ms: delay, attempt: this.attempt }, 'MQTT reconnect scheduled');
    this.retryTimer = this.o.timers.setTimeout(() => {
      this.retryTimer = null;
      void this.attemptConnect(true);
    }, delay);
  }
}
