/**
 * The agent's own MQTT connection (it is the agent side: it does not use the hub's bridge), on
 * the shared MqttSession: what is the agent's here is its will, its log lines and its errors.
 *
 * `clean: false` with a stable client id: the broker keeps the session and the downlink commands
 * published while the agent was away. The session is up only once the downlink subscription is
 * granted (a refusal reconnects). When a connection closes, every publish still waiting for its
 * PUBACK is failed and the retry queue decides; the backoff is capped exponential with full
 * jitter (seed 002's reconnect loop) and starts over after every connection that was up.
 */
import { HubError } from '../../core/errors.js';
import type { Logger } from '../../core/log.js';
import type { ModuleTimers } from '../../core/module.js';
import { MqttSession } from '../shared/mqtt-session.js';
import { redactUrl } from '../shared/mqtt-session-socket.js';

export interface ConnectionOptions {
  url: string;
  /** The project the agent serves, named in what to check when the broker refuses the login. */
  projectId: string;
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

export class AgentConnection {
  private readonly session: MqttSession;

  constructor(o: ConnectionOptions) {
    this.session = new MqttSession({
      url: o.url,
      client: {
        clientId: o.clientId,
        username: o.username,
        password: o.password,
        clean: false,
        keepalive: o.keepaliveS,
        connectTimeout: o.connectTimeoutMs,
        protocolVersion: 4,
      },
      subscriptions: o.subscriptions,
      requireSubscriptions: true,
      backoff: { minMs: o.reconnectMinMs, maxMs: o.reconnectMaxMs, jitter: 'full', stableMs: 0 },
      offlineError: (message, cause) => new HubError('AGENT_ERR_OFFLINE', message, undefined, { cause }),
      log: o.log,
      timers: o.timers,
      now: () => Date.now(),
      beforeConnect: (options) => {
        o.onConnecting?.();
        const will = o.will();
        options.will = { topic: will.topic, payload: Buffer.from(will.payload), qos: 1, retain: false };
      },
      onUp: () => {
        o.log.info({ url: redactUrl(o.url), client_id: o.clientId }, 'agent connected to the broker');
        o.onUp();
      },
      onDown: (_reason, wasUp) => {
        if (!wasUp) return;
        o.log.warn({ url: redactUrl(o.url) }, 'agent lost the broker connection');
        o.onDown('connection lost');
      },
      explainError: (err) => (isLoginRefused(err) ? { check: loginChecks(redactUrl(o.url), o.projectId) } : undefined),
      onMessage: o.onMessage,
    });
  }

  get connected(): boolean {
    return this.session.up;
  }

  start(): void {
    this.session.start();
  }

  /**
   * Publishes QoS 1 and resolves on the PUBACK. Rejects with AGENT_ERR_OFFLINE when not
   * connected or when the connection closes before the PUBACK.
   */
  publish(topic: string, payload: string): Promise<void> {
    return this.session.publish(topic, payload);
  }

  /**
   * Ends the connection: politely (DISCONNECT after in-flight PUBACKs, so the broker does not send
   * the last will) within `graceMs`, then by force.
   */
  stop(graceMs: number): Promise<void> {
    return this.session.end(graceMs);
  }
}

/** CONNACK 4 / 5 (MQTT 3.1.1): the broker refused the username and password, or the client. */
function isLoginRefused(err: Error): boolean {
  const code = (err as { code?: unknown }).code;
  return code === 4 || code === 5 || /not authori[sz]ed|bad user ?name or password/i.test(err.message);
}

/**
 * What an agent refused at the login should check. The broker is where a hub's provisioning shows
 * (the hub's embedded broker lets in only provisioned, enabled projects with the password derived
 * from their secret), so a refusal is a wrong broker, project or secret (issue 15, item 1).
 */
function loginChecks(url: string, projectId: string): string[] {
  return [
    `that ${url} is the broker of the hub that provisioned ${projectId} (the hub logs "agents connect to …"; the agent's url is HUB_MQTT_URL, or HUB_MQTT_PORT as the hub was started with)`,
    `that ${projectId} is provisioned and enabled on that hub (AGENT_PROJECT_ID)`,
    'that AGENT_SECRET is the secret the hub showed: the broker password is derived from it',
  ];
}
