import type { MqttClient } from 'mqtt';
import { HubError } from '../../core/errors.js';
import type { Logger } from '../../core/log.js';
import type { ModuleTimers } from '../../core/module.js';
import { releaseSoon } from '../shared/write-hold.js';
import type { MqttPublishReply, MqttPublishRequest } from './contract/topics.js';

export interface PublisherDeps {
  client: MqttClient;
  /** Resolves when connected; rejects MQTT_ERR_OFFLINE after `ms`. */
  waitConnected(ms: number): Promise<void>;
  timers: ModuleTimers;
  log: Logger;
  timeoutMs: number;
}

export interface PublishCounters {
  published: number;
  publish_failures: number;
  /** Request → PUBACK (or write, QoS 0), milliseconds. */
  publish_ms_total: number;
  publish_ms_max: number;
}

const OK: MqttPublishReply = Object.freeze({ ok: true as const });

/**
 * Answers `mqtt/publish`: waits (bounded) for a connection, publishes, and resolves after the
 * broker's PUBACK (QoS 1). A PUBACK is the broker's word, not the agent's (docs/wire-protocol.md#commands-and-acknowledgements).
 */
export class Publisher {
  readonly counters: PublishCounters = { published: 0, publish_failures: 0, publish_ms_total: 0, publish_ms_max: 0 };
  private readonly d: PublisherDeps;
  private readonly inflight = new Set<Promise<unknown>>();
  private accepting = true;

  constructor(deps: PublisherDeps) {
    this.d = deps;
  }

  get inFlight(): number {
    return this.inflight.size;
  }

  publish(req: MqttPublishRequest): Promise<MqttPublishReply> {
    const bad = invalid(req);
    if (bad) return Promise.reject(new HubError('MQTT_ERR_INVALID', `mqtt/publish: ${bad}`));
    if (!this.accepting) return Promise.reject(new HubError('MQTT_ERR_OFFLINE', 'the mqtt bridge is stopping'));
    const p = this.run(req);
    this.inflight.add(p);
    const forget = () => this.inflight.delete(p);
    p.then(forget, forget);
    return p;
  }

  private async run(req: MqttPublishRequest): Promise<MqttPublishReply> {
    const t0 = performance.now();
    const deadline = Date.now() + this.d.timeoutMs;
    try {
      await this.d.waitConnected(this.d.timeoutMs);
      await this.send(req, Math.max(1, deadline - Date.now()));
    } catch (err) {
      this.counters.publish_failures++;
      this.d.log.debug({ topic: req.topic, code: (err as HubError).code }, 'mqtt publish failed');
      throw err;
    }
    const ms = performance.now() - t0;
    this.counters.published++;
    this.counters.publish_ms_total += ms;
    if (ms > this.counters.publish_ms_max) this.counters.publish_ms_max = ms;
    return OK;
  }

  private send(req: MqttPublishRequest, ms: number): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      let settled = false;
      const timer = this.d.timers.setTimeout(() => {
        settled = true;
        // mqtt.js keeps the message and retries it on the next connection; the caller (the
        // outbox) retries with the same message_id anyway, and agents drop duplicates
        reject(new HubError('MQTT_ERR_PUBLISH', `no PUBACK for a publish on ${req.topic} within ${ms} ms`));
      }, ms);
      // a command waits on this publish: out with this moment's microtasks, not at the turn's end
      // (write-hold.ts; docs/benchmarks.md "A sync call leg by leg")
      releaseSoon(this.d.client.stream);
      this.d.client.publish(req.topic, req.payload, { qos: req.qos ?? 1, retain: req.retain ?? false }, (err) => {
        if (settled) return;
        settled = true;
        this.d.timers.clear(timer);
        if (err) {
          reject(
            new HubError(
              'MQTT_ERR_PUBLISH',
              `publish on ${req.topic} failed: ${err.message}`,
              { topic: req.topic },
              { cause: err },
            ),
          );
        } else resolve();
      });
    });
  }

  /** Refuses new publishes and waits up to `ms` for those in flight; returns whether all finished. */
  async drain(ms: number): Promise<boolean> {
    this.accepting = false;
    if (this.inflight.size === 0) return true;
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<false>((r) => {
      timer = this.d.timers.setTimeout(() => r(false), ms);
    });
    const all = Promise.allSettled([...this.inflight]).then(() => true as const);
    try {
      return await Promise.race([all, timeout]);
    } finally {
      if (timer) this.d.timers.clear(timer);
    }
  }
}

/** Why a request is malformed, or undefined. Topics are checked like a broker would ([MQTT-3.3.2-2]). */
function invalid(req: MqttPublishRequest): string | undefined {
  if (req === null || typeof req !== 'object') return 'the request must be an object';
  if (typeof req.topic !== 'string' || req.topic.length === 0) return 'topic must be a non-empty string';
  if (req.topic.includes('+') || req.topic.includes('#') || req.topic.includes('\0'))
    return 'topic must not hold wildcards or NUL';
  if (Buffer.byteLength(req.topic, 'utf8') > 65_535) return 'topic is longer than 65535 bytes';
  if (typeof req.payload !== 'string') return 'payload must be a string (JSON text)';
  if (req.qos !== undefined && req.qos !== 0 && req.qos !== 1) return 'qos must be 0 or 1';
  if (req.retain !== undefined && typeof req.retain !== 'boolean') return 'retain must be a boolean';
  return undefined;
}
