/**
 * Registration and heartbeat (seed 002, SubNodeSync; docs/wire-protocol.md#registration-and-presence): on every connect the agent sends
 * a signed `register` command with its SubNodeSync fields; the hub answers `register_ack`; an
 * accepted ack is answered with `register_complete` and heartbeats start (the ack's
 * heartbeat_interval_s wins over the setting). A refusal is logged and registration is tried again
 * after `register_retry_ms`, doubling up to `register_retry_max_ms`; so is a register that got no
 * answer. `reregister` starts over.
 *
 * An agent whose register goes unanswered is connected to a broker no hub of its project reads
 * (the wrong port: another Mosquitto on 1883), or the hub does not know it: the MQTT connection
 * alone looks healthy, so every "register sent" is an info line naming the broker, and every
 * attempt left unanswered is a warning that says what to check (issue 15, item 1).
 *
 * This agent is the reference implementation of the wire contract, so it sends the seed's shapes
 * (seed 002, 消息格式), not the ms-integer shorthand the hub also accepts: `start_time` and the
 * heartbeat's `timestamp` as RFC 3339 strings, `node_version` as the seed's object, `uptime` in
 * seconds, plus `hostname`, `status`, `pid`, `version` and `node_name` on every heartbeat.
 */
import os from 'node:os';
import type { Logger } from '../../core/log.js';
import type { ModuleTimers } from '../../core/module.js';
import {
  buildCommand,
  buildData,
  type DownlinkDataMessage,
  type RegisterPayloadInput,
  TOPIC_COMMAND_UP,
  TOPIC_MESSAGE_UP,
  toWire,
} from '../shared/protocol.js';
import { ReplayCache, type SentText, verifyInbound } from '../shared/signing.js';
import type { AgentConfig } from './config.js';
import type { AgentState } from './contract/topics.js';
import type { ProcessMetrics } from './metrics.js';

export interface RegistrarDeps {
  cfg: AgentConfig;
  /** The broker URL without credentials, for the log lines a person reads to find the wrong broker. */
  brokerUrl: string;
  instanceId: string;
  version: string;
  startTime: number;
  log: Logger;
  timers: ModuleTimers;
  metrics: ProcessMetrics;
  publish: (topic: string, payload: string) => Promise<void>;
  capabilities: () => Promise<string[]>;
  setState: (state: AgentState, reason?: string) => void;
  /** A downlink data message failed its signature, clock or replay check. */
  rejected: () => void;
}

export class Registrar {
  private readonly d: RegistrarDeps;
  private registeredFlag = false;
  private connected = false;
  private stopped = false;
  private retryTimer: NodeJS.Timeout | null = null;
  private heartbeatTimer: NodeJS.Timeout | null = null;
  private intervalS: number;
  private readonly replay: ReplayCache;
  /** Registers sent since the last accepted ack or fresh connection; drives the retry backoff. */
  private attempts = 0;
  /** When the first register of the current unanswered run went out. */
  private firstSentAt = 0;
  /** Whether the hub answered (accepted or refused) the register sent last. */
  private answered = false;

  constructor(deps: RegistrarDeps) {
    this.d = deps;
    this.intervalS = deps.cfg.heartbeat_interval_s;
    this.replay = new ReplayCache({ ttlMs: Math.max(600_000, 2 * deps.cfg.clock_window_ms + 1) });
  }

  get registered(): boolean {
    return this.registeredFlag;
  }

  get heartbeatIntervalS(): number {
    return this.intervalS;
  }

  /** The connection is up (downlink subscribed): register. Resolves once the register is published or failed. */
  async onConnected(): Promise<void> {
    this.connected = true;
    this.attempts = 0;
    await this.register();
  }

  onDisconnected(): void {
    this.connected = false;
    this.registeredFlag = false;
    this.clearRetry();
    this.stopHeartbeat();
  }

  stop(): void {
    this.stopped = true;
    this.onDisconnected();
  }

  /** `register_ack` or `reregister` from `wdd/RDMC/message/down/{project_id}`. */
  onData(msg: DownlinkDataMessage, sent?: SentText): void {
    if (this.stopped) return;
    // Signed downlink data is checked like a command; the hub may also send it unsigned.
    if (msg.signature !== undefined) {
      const v = verifyInbound(msg, this.d.cfg.secret, this.replay, Date.now(), this.d.cfg.clock_window_ms, sent);
      if (!v.ok) {
        this.d.rejected();
        if (v.code === 'PROTO_ERR_SIGNATURE' && msg.data_type === 'register_ack' && !this.registeredFlag) {
          this.warnUnverifiableAck(v.reason);
          return;
        }
        this.d.log.warn({ code: v.code, reason: v.reason, data_type: msg.data_type }, 'downlink message rejected');
        return;
      }
    } else if (this.registeredFlag) {
      // A hub that knows the project signs what it sends; only one that does not know it (another
      // hub on a shared broker, answering our uplinks) or anyone else allowed to publish on our
      // downlink sends unsigned data. Such a message must not end the session our hub accepted
      // with a signed register_ack; before that, an unsigned refusal is still shown to the operator.
      this.d.rejected();
      this.d.log.warn({ data_type: msg.data_type }, 'unsigned downlink message ignored while registered');
      return;
    }
    if (msg.data_type === 'reregister') {
      this.d.log.info({ reason: msg.payload.reason }, 'hub asked the agent to register again');
      this.registeredFlag = false;
      this.attempts = 0;
      this.stopHeartbeat();
      void this.register();
      return;
    }
    const ack = msg.payload;
    this.answered = true;
    if (!ack.accepted) {
      this.registeredFlag = false;
      this.stopHeartbeat();
      const reason = ack.reason ?? 'no reason given';
      const retryMs = this.retryDelayMs();
      this.d.log.warn(
        { reason, url: this.d.brokerUrl, project_id: this.d.cfg.project_id, retry_ms: retryMs },
        `registration refused by the hub: ${reason}`,
      );
      this.d.setState('refused', reason);
      this.scheduleRetry(retryMs);
      return;
    }
    this.attempts = 0;
    this.intervalS = ack.heartbeat_interval_s;
    if (this.registeredFlag) {
      // an answer to a register we repeated: only the interval may have changed
      this.startHeartbeat();
      return;
    }
    this.registeredFlag = true;
    this.clearRetry();
    void this.send('register_complete', { instance_id: this.d.instanceId });
    this.d.log.info({ instance_id: this.d.instanceId, heartbeat_interval_s: this.intervalS }, 'agent registered');
    this.d.setState('registered');
    this.heartbeat();
    this.startHeartbeat();
  }

  /** Sends a signed `register` and arms the retry for a missing or refused answer. */
  async register(): Promise<void> {
    if (this.stopped || !this.connected) return;
    this.clearRetry();
    this.d.setState('registering');
    const { cfg } = this.d;
    const payload: RegisterPayloadInput = {
      node_name: cfg.node_name,
      instance_id: this.d.instanceId,
      version: this.d.version,
      pid: process.pid,
      start_time: new Date(this.d.startTime).toISOString(),
      capabilities: await this.d.capabilities(),
      metadata: {
        hostname: os.hostname(),
        platform: process.platform,
        arch: process.arch,
        runtime: 'node',
      },
      node_version: nodeVersion(this.d.version),
    };
    if (this.stopped || !this.connected) return;
    if (this.attempts === 0) this.firstSentAt = Date.now();
    this.attempts++;
    this.answered = false;
    this.scheduleRetry(this.retryDelayMs());
    try {
      const msg = buildCommand(cfg.project_id, 'register', payload, cfg.secret);
      await this.d.publish(TOPIC_COMMAND_UP, toWire(msg));
      this.d.log.info(
        {
          url: this.d.brokerUrl,
          project_id: cfg.project_id,
          instance_id: this.d.instanceId,
          message_id: msg.message_id,
          attempt: this.attempts,
        },
        'register sent',
      );
    } catch (err) {
      this.d.log.warn({ err: (err as Error).message }, 'register not sent; will try again');
    }
  }

  private async send(dataType: string, payload: unknown): Promise<void> {
    try {
      const msg = buildData(this.d.cfg.project_id, dataType, payload, { secret: this.d.cfg.secret });
      await this.d.publish(TOPIC_MESSAGE_UP, toWire(msg));
    } catch (err) {
      this.d.log.debug({ err: (err as Error).message, data_type: dataType }, 'uplink not sent');
    }
  }

  private heartbeat(): void {
    if (!this.registeredFlag || !this.connected) return;
    const m = this.d.metrics.sample();
    void this.send('heartbeat', {
      instance_id: this.d.instanceId,
      node_name: this.d.cfg.node_name,
      timestamp: new Date().toISOString(),
      status: 'running',
      pid: process.pid,
      uptime: m.uptime_s,
      version: this.d.version,
      hostname: os.hostname(),
      metrics: m,
    });
  }

  private startHeartbeat(): void {
    this.stopHeartbeat();
    this.heartbeatTimer = this.d.timers.setInterval(() => this.heartbeat(), this.intervalS * 1000);
  }

  private stopHeartbeat(): void {
    if (this.heartbeatTimer) this.d.timers.clear(this.heartbeatTimer);
    this.heartbeatTimer = null;
  }

  /** The wait after the current attempt. */
  private retryDelayMs(): number {
    return registerRetryDelay(this.d.cfg, this.attempts);
  }

  private scheduleRetry(delayMs: number): void {
    this.clearRetry();
    if (this.stopped || !this.connected) return;
    this.retryTimer = this.d.timers.setTimeout(() => {
      this.retryTimer = null;
      if (this.registeredFlag) return;
      if (!this.answered) this.warnUnanswered();
      void this.register();
    }, delayMs);
  }

  /**
   * Nothing answered: the broker takes our publishes, but no hub that knows this project reads
   * them. Say so, with the broker we are on and what to check, at every unanswered attempt (the
   * backoff keeps that to one line a minute at most by default).
   */
  private warnUnanswered(): void {
    const waited = Date.now() - this.firstSentAt;
    this.d.log.warn(
      {
        url: this.d.brokerUrl,
        project_id: this.d.cfg.project_id,
        attempts: this.attempts,
        waited_ms: waited,
        next_retry_ms: registerRetryDelay(this.d.cfg, this.attempts + 1),
        check: [
          `that a gmq-hub uses the broker at ${this.d.brokerUrl} (the agent's url: HUB_MQTT_URL, or HUB_MQTT_PORT as the hub was started with)`,
          'that the project id and secret are the ones the hub provisioned',
          'the hub log for this project (registration refused, unknown project)',
        ],
      },
      `no register_ack from a hub within ${waited} ms on ${this.d.brokerUrl}; registering again`,
    );
  }

  /**
   * A hub that knows the project signs its answer with the project's secret, refusals included
   * (a register signed with the wrong secret is refused with "bad signature"). An agent holding
   * another secret cannot verify that answer, so without this line it would only see "no
   * register_ack" and blame the broker. The answer is still not trusted (nothing changes but the
   * log and the count of rejected messages); the scheduled retry goes on, and the unanswered
   * warning is not repeated for this attempt: something did answer.
   */
  private warnUnverifiableAck(reason: string): void {
    this.answered = true;
    this.d.log.warn(
      {
        url: this.d.brokerUrl,
        project_id: this.d.cfg.project_id,
        code: 'PROTO_ERR_SIGNATURE',
        reason,
        check: [
          `that AGENT_SECRET is the secret the hub showed when ${this.d.cfg.project_id} was provisioned (or last rotated)`,
          `that no other party answers for ${this.d.cfg.project_id} on ${this.d.brokerUrl}`,
        ],
      },
      `a register_ack came on ${this.d.brokerUrl} but its signature does not verify with this agent's secret; the secret is likely not the one the hub provisioned`,
    );
  }

  private clearRetry(): void {
    if (this.retryTimer) this.d.timers.clear(this.retryTimer);
    this.retryTimer = null;
  }
}

/**
 * The wait after the `attempt`-th register (1-based) of an unanswered run: `register_retry_ms`
 * doubling per attempt, capped at `register_retry_max_ms` (never below the first wait).
 */
export function registerRetryDelay(
  cfg: Pick<AgentConfig, 'register_retry_ms' | 'register_retry_max_ms'>,
  attempt: number,
): number {
  const base = cfg.register_retry_ms;
  const max = Math.max(base, cfg.register_retry_max_ms);
  return Math.min(max, base * 2 ** Math.min(30, Math.max(0, attempt - 1)));
}

/**
 * Seed 002's `node_version` object. Its field names come from a Go agent; here `go_version`
 * carries this runtime's version (`v20.11.0`) and `runtime` says which runtime that is; the
 * package carries no build metadata, so the commit and build date say `unknown`.
 */
export function nodeVersion(version: string): Record<string, string> {
  return {
    git_version: version.startsWith('v') ? version : `v${version}`,
    git_commit: 'unknown',
    build_date: 'unknown',
    go_version: process.version,
    platform: `${process.platform}/${process.arch}`,
    runtime: 'node',
  };
}
