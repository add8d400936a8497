/**
 * One real hub in this process — the embedded broker, status, command, mqtt-bridge and web, on a
 * PostgreSQL schema of its own — and agents that log in to its broker with their project's MQTT
 * credentials and speak the wire protocol by hand. Shared by the uplink fuzz suite
 * (uplink.test.ts, uplink-run.ts) and the hostile-input regressions (test/regressions/).
 */
import { randomBytes, randomUUID } from 'node:crypto';
import os from 'node:os';
import type { Knex } from 'knex';
import type { MqttClient } from 'mqtt';
import { createRootLogger, type Logger, silentLogger } from '../../core/log.js';
import { type DbConfig, DbPool } from '../../core/services/db.js';
import { builtinProviders } from '../../modules/index.js';
import {
  buildCommand,
  buildData,
  commandDownTopic,
  messageDownTopic,
  type RegisterPayload,
  TOPIC_COMMAND_UP,
  TOPIC_MESSAGE_UP,
} from '../../modules/shared/protocol.js';
import type { CreatedProject } from '../../modules/status/contract/topics.js';
import { WEB, type WebInfo } from '../../modules/web/contract/topics.js';
import { withPgSchema } from '../helpers/db.js';
import { startHost, type TestHost } from '../helpers/host.js';
import { connectClient } from '../helpers/mqtt.js';
import { freePort } from '../helpers/process.js';
import { withTimeout } from '../helpers/wait.js';

export const API = '/api/exchange-hub';
/** Every wait's bound: the machine is shared, so generous. */
export const WAIT_MS = 20_000;

// biome-ignore lint/suspicious/noExplicitAny: JSON answers read field by field
export type Json = any;

export interface FullHubOptions {
  status?: Record<string, unknown>;
  command?: Record<string, unknown>;
  broker?: Record<string, unknown>;
  /** Where the hub logs (default: nowhere). */
  log?: Logger;
}

export class FullHub {
  /** The test's own connection to the hub's schema (to read what was stored). */
  private readonly pool: DbPool;

  private constructor(
    readonly th: TestHost,
    readonly base: string,
    readonly brokerUrl: string,
    dbConfig: DbConfig,
    private readonly drop: () => Promise<void>,
  ) {
    this.pool = new DbPool({ default: dbConfig }, silentLogger());
  }

  get db(): Knex {
    return this.pool.get();
  }

  static async start(opts: FullHubOptions = {}): Promise<FullHub> {
    const db = await withPgSchema();
    const port = await freePort();
    const brokerUrl = `mqtt://127.0.0.1:${port}`;
    const config = {
      databases: { default: db.config },
      modules: {
        broker: { port, host: '127.0.0.1', ...opts.broker },
        status: {
          heartbeat_interval_s: 1,
          heartbeat_timeout_ms: 60_000,
          sweep_interval_ms: 200,
          flush_interval_ms: 100,
          ...opts.status,
        },
        command: { retry_base_ms: 400, retry_max_ms: 3_200, relay_interval_ms: 100, ...opts.command },
        'mqtt-bridge': {
          url: brokerUrl,
          client_id: `fuzz-hub-${randomBytes(4).toString('hex')}`,
          reconnect_min_ms: 100,
          reconnect_max_ms: 500,
        },
        web: { port: 0 },
      },
    };
    let th: TestHost;
    try {
      // YAML is a superset of JSON
      th = await startHost(JSON.stringify(config), builtinProviders(), { log: opts.log ?? silentLogger() });
    } catch (err) {
      await db.drop();
      throw err;
    }
    const info = await th.host.bus.request<WebInfo>(WEB.info('web'), {});
    return new FullHub(th, info.url, brokerUrl, db.config, db.drop);
  }

  get bus() {
    return this.th.host.bus;
  }

  async stop(): Promise<void> {
    await this.th.stop();
    await this.pool.close();
    await this.drop();
  }

  async api(method: 'GET' | 'POST', path: string, body?: unknown): Promise<{ status: number; json: Json }> {
    const res = await fetch(this.base + API + path, {
      method,
      headers: body === undefined ? {} : { 'content-type': 'application/json' },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    const text = await res.text();
    let json: Json = null;
    try {
      json = text ? JSON.parse(text) : null;
    } catch {
      json = text;
    }
    return { status: res.status, json };
  }

  async provision(what: string): Promise<CreatedProject> {
    const project_id = `fz-${what}-${randomBytes(4).toString('hex')}`;
    const r = await this.api('POST', '/projects', { project_id, name: what });
    if (r.status !== 201) throw new Error(`provisioning failed: ${r.status} ${JSON.stringify(r.json)}`);
    return r.json as CreatedProject;
  }

  async metrics(): Promise<string> {
    const res = await fetch(`${this.base}/metrics`);
    return res.text();
  }

  /** Polls until `pred` holds (bounded). */
  async until(pred: () => Promise<boolean> | boolean, what: string, ms = WAIT_MS): Promise<void> {
    const end = Date.now() + ms;
    for (;;) {
      if (await pred()) return;
      if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
      await new Promise((r) => setTimeout(r, 50));
    }
  }

  async waitState(projectId: string, state: string): Promise<Json> {
    let last: Json;
    await this.until(async () => {
      last = (await this.api('GET', `/project/${projectId}/status`)).json;
      return last?.state === state;
    }, `${projectId} ${state}`);
    return last;
  }
}

/** The sum of every series of a counter family in Prometheus text (labels ignored). */
export function metricSum(text: string, name: string): number {
  let sum = 0;
  for (const line of text.split('\n')) {
    if (!line.startsWith(name)) continue;
    const rest = line.slice(name.length);
    if (rest[0] !== ' ' && rest[0] !== '{') continue;
    const v = Number(line.slice(line.lastIndexOf(' ') + 1));
    if (Number.isFinite(v)) sum += v;
  }
  return sum;
}

/** One series' value (`name{labels}` exactly as exposed), 0 when absent. */
export function metricValue(text: string, series: string): number {
  for (const line of text.split('\n')) {
    if (line.startsWith(`${series} `)) return Number(line.slice(series.length + 1));
  }
  return 0;
}

/**
 * An agent by hand: logs in with its project's MQTT credentials, subscribes to its downlinks,
 * registers (signed) and completes the handshake, and publishes whatever a test gives it.
 */
export class HandAgent {
  readonly downlinks: Json[] = [];

  private constructor(
    readonly client: MqttClient,
    readonly project: CreatedProject,
  ) {
    client.on('message', (_topic, payload) => {
      try {
        this.downlinks.push(JSON.parse(payload.toString('utf8')));
      } catch {
        // not ours to judge
      }
    });
  }

  static async connect(hub: FullHub, project: CreatedProject): Promise<HandAgent> {
    const client = await connectClient(hub.brokerUrl, {
      clientId: `fz-agent-${randomBytes(4).toString('hex')}`,
      username: project.mqtt_username,
      password: project.mqtt_password,
      protocolVersion: 4,
      clean: true,
    });
    await client.subscribeAsync({
      [commandDownTopic(project.project_id)]: { qos: 1 },
      [messageDownTopic(project.project_id)]: { qos: 1 },
    });
    return new HandAgent(client, project);
  }

  get projectId(): string {
    return this.project.project_id;
  }

  /** register → register_ack → register_complete: the project goes online. */
  async goOnline(hub: FullHub): Promise<void> {
    const payload: RegisterPayload = {
      node_name: 'fuzz',
      instance_id: `fuzz-${os.hostname()}-${process.pid}-${randomBytes(2).toString('hex')}`,
      version: '0.0.0-fuzz',
      pid: process.pid,
      start_time: Date.now(),
      capabilities: ['echo'],
      metadata: {},
      node_version: process.version,
    };
    const from = this.downlinks.length;
    await this.publishRaw(TOPIC_COMMAND_UP, buildCommand(this.projectId, 'register', payload, this.project.secret));
    await withTimeout(
      (async () => {
        while (!this.downlinks.slice(from).some((m) => m?.data_type === 'register_ack' && m.payload?.accepted)) {
          await new Promise((r) => setTimeout(r, 20));
        }
      })(),
      WAIT_MS,
      `register_ack for ${this.projectId}`,
    );
    await this.data('register_complete', {});
    await hub.waitState(this.projectId, 'online');
  }

  /** A signed data message of this project. */
  async data(type: string, payload: unknown): Promise<void> {
    await this.publishRaw(TOPIC_MESSAGE_UP, buildData(this.projectId, type, payload, { secret: this.project.secret }));
  }

  /** Anything, as JSON (or as given when a string or bytes), QoS 1. */
  async publishRaw(topic: string, msg: unknown): Promise<void> {
    const body = typeof msg === 'string' || Buffer.isBuffer(msg) ? msg : JSON.stringify(msg);
    await this.client.publishAsync(topic, body, { qos: 1 });
  }

  async close(): Promise<void> {
    await this.client.endAsync(true);
  }
}

/** A command id nobody made. */
export const strayId = (): string => randomUUID();

/** A hub logger (info and up) that keeps its raw JSON lines, for "what was logged" assertions. */
export function capturingLogger(lines: string[]): Logger {
  return createRootLogger({ level: 'info', destination: { write: (s: string) => void lines.push(s) } });
}

export { TOPIC_COMMAND_UP, TOPIC_MESSAGE_UP };
