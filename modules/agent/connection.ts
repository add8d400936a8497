/**
 * The agent's own MQTT connection (it is the agent side: it does not use the hub's bridge).
 *
 * One mqtt.js client per connection attempt, with mqtt.js's own reconnect and resend turned off:
 * with `clean: false` mqtt.js would keep unacknowledged QoS 1 publishes to itself forever (their
 * callbacks never fire), while the retry queue needs to know. So when a connection closes, every
 * publish still waiting for its PUBACK is failed here and the queue decides; the next attempt
 * comes after a capped exponential backoff with full jitter (seed 002's reconnect loop).
 * The client id is stable, so the broker keeps the session and the downlink commands published
 * while the agent was away.
 */
import type { Socket } from 'node:net';
import mqtt, { type IClientOptions, type MqttClient } from 'mqtt';
import { HubError } from '../../core/errors.js';
import type { Logger } from '../../core/log.js';
import type { ModuleTimers } from '../../core/module.js';

export interface ConnectionOptions {
  url: string;
  clientId: string;
  username: string;
  password: string;
  keepaliveS: number;
  connectTimeoutMs: number;
  reconnectMinMs: number;
  reconnectMaxMs: number;
  /** Topics subscribed QoS 1 on every connect, before `onUp` runs. */
  subscriptions: string[];
  /** Built fresh for every attempt, so its timestamp is recent when the broker sends it. */
  will: () => { topic: string; payload: string };
  log: Logger;
  timers: ModuleTimers;
  onUp: () => void;
  onDown: (reason: string) => void;
  onMessage: (topic: string, payload: Buffer) => void;
  onConnecting?: () => void;
}

interface Pending {
  reject: (err: Error) => void;
}

/** Capped exponential backoff with full jitter: uniform in [0, min(max, min·2^attempt)]. */
export function backoffDelay(
  attempt: number,
  minMs: number,
  maxMs: number,
  random: () => number = Math.random,
): number {
  const cap = Math.min(maxMs, minMs * 2 ** Math.min(attempt, 30));
  return Math.floor(random() * cap);
}

export class AgentConnection {
  private readonly o: ConnectionOptions;
  private client: MqttClient | null = null;
  private generation = 0;
  private up = false;
  private attempt = 0;
  private reconnectTimer: NodeJS.Timeout | null = null;
  private stopped = false;
  private pending = new Set<Pending>();
  private lastError = '';

  constructor(opts: ConnectionOptions) {
    this.o = opts;
  }

  get connected(): boolean {
    return this.up;
  }

  start(): void {
    this.connect();
  }

  /**
   * Publishes QoS 1 and resolves on the PUBACK. Rejects with AGENT_ERR_OFFLINE when not
   * connected or when the connection closes before the PUBACK.
   */
  publish(topic: string, payload: string): Promise<void> {
    const client = this.client;
    if (!this.up || !client) {
      return Promise.reject(new HubError('AGENT_ERR_OFFLINE', 'not connected to the broker'));
    }
    return new Promise<void>((resolve, reject) => {
      const p: Pending = { reject };
      this.pending.add(p);
      client.publish(topic, payload, { qos: 1 }, (err) => {
        if (!this.pending.delete(p)) return; // already failed by a close
        if (err) reject(new HubError('AGENT_ERR_OFFLINE', `publish failed: ${err.message}`, undefined, { cause: err }));
        else resolve();
      });
    });
  }

  /**
   * Ends the connection: politely (DISCONNECT after in-flight PUBACKs, so the broker does not send
   * the last will) within `graceMs`, then by force.
   */
  async stop(graceMs: number): Promise<void> {
    this.stopped = true;
    if (this.reconnectTimer) this.o.timers.clear(this.reconnectTimer);
    this.reconnectTimer = null;
    const client = this.client;
    this.client = null;
    this.generation++;
    const wasUp = this.up;
    this.up = false;
    if (client) {
      let ended = false;
      if (wasUp && graceMs > 0) {
        let timer: NodeJS.Timeout | undefined;
        await Promise.race([
          new Promise<void>((r) =>
            client.end(false, {}, () => {
              ended = true;
              r();
            }),
          ),
          new Promise<void>((r) => {
            timer = setTimeout(r, graceMs);
          }),
        ]);
        clearTimeout(timer);
      }
      if (!ended) {
        // end(true) does nothing while a polite end is under way, so close the socket ourselves
        client.end(true);
        client.stream?.destroy();
      }
    }
    this.failPending('connection stopped');
  }

  private connect(): void {
    if (this.stopped) return;
    const gen = ++this.generation;
    this.o.onConnecting?.();
    const will = this.o.will();
    const opts: IClientOptions = {
      clientId: this.o.clientId,
      username: this.o.username,
      password: this.o.password,
      clean: false,
      keepalive: this.o.keepaliveS,
      connectTimeout: this.o.connectTimeoutMs,
      reconnectPeriod: 0,
      resubscribe: false,
      protocolVersion: 4,
      will: { topic: will.topic, payload: Buffer.from(will.payload), qos: 1, retain: false },
    };
    let client: MqttClient;
    try {
      client = mqtt.connect(this.o.url, opts);
    } catch (err) {
      this.o.log.error({ err: (err as Error).message }, 'cannot create the MQTT client');
      this.scheduleReconnect();
      return;
    }
    this.client = client;
    // docs/architecture.md#performance-decisions: without TCP_NODELAY a 0.2 ms round trip becomes ~40 ms (Nagle + delayed ACK).
    (client.stream as Partial<Socket> | undefined)?.setNoDelay?.(true);

    client.on('connect', () => {
      if (gen !== this.generation) return;
      const subs = Object.fromEntries(this.o.subscriptions.map((t) => [t, { qos: 1 as const }]));
      client.subscribe(subs, (err, granted) => {
        if (gen !== this.generation) return;
        const refused = granted?.filter((g) => g.qos === 128) ?? [];
        if (err || refused.length > 0) {
          this.o.log.error(
            { err: err?.message, refused: refused.map((g) => g.topic) },
            'downlink subscription refused; reconnecting',
          );
          client.end(true);
          return;
        }
        this.attempt = 0;
        this.lastError = '';
        this.up = true;
        this.o.log.info({ url: redactUrl(this.o.url), client_id: this.o.clientId }, 'agent connected to the broker');
        this.o.onUp();
      });
    });
    client.on('message', (topic, payload) => {
      if (gen !== this.generation) return;
      this.o.onMessage(topic, payload);
    });
    client.on('error', (err) => {
      if (gen !== this.generation) return;
      // one line per distinct error, not one per attempt of a long outage
      if (err.message !== this.lastError) {
        this.lastError = err.message;
        this.o.log.warn({ err: err.message, url: redactUrl(this.o.url) }, 'MQTT connection error');
      }
    });
    client.on('close', () => {
      if (gen !== this.generation) return;
      this.generation++;
      this.client = null;
      const wasUp = this.up;
      this.up = false;
      this.failPending('connection closed before the PUBACK');
      if (wasUp) {
        this.o.log.warn({ url: redactUrl(this.o.url) }, 'agent lost the broker connection');
        this.o.onDown('connection lost');
      }
      this.scheduleReconnect();
    });
  }

  private failPending(reason: string): void {
    const list = [...this.pending];
    this.pending.clear();
    for (const p of list) p.reject(new HubError('AGENT_ERR_OFFLINE', reason));
  }

  private scheduleReconnect(): void {
    if (this.stopped || this.reconnectTimer) return;
    const delay = backoffDelay(this.attempt++, this.o.reconnectMinMs, this.o.reconnectMaxMs);
    this.reconnectTimer = this.o.timers.setTimeout(() => {
      this.reconnectTimer = null;
      this.connect();
    }, delay);
  }
}

/** The URL without credentials, for logs. */
export function redactUrl(url: string): string {
  try {
    const u = new URL(url);
    u.username = '';
    u.password = '';
    return u.toString();
  } catch {
    return '(invalid url)';
  }
}
