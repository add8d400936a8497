/**
 * Lean simulated agents for the hub benchmarks: mqtt.js clients that speak the wire protocol
 * (modules/shared/protocol.ts, signing.ts) the way modules/agent does, without its retry queue,
 * disk, metrics sampler or handler bus:
 *  - registration: signed `register` → wait for `register_ack` → `register_complete`;
 *  - commands: verify the signature, clock and replay (a duplicate is acked again, never run
 *    twice), then `command_ack` and an `echo` `exec_result` (the payload back), both QoS 1;
 *  - heartbeats: signed, with a SubNodeSync-like payload.
 * Every socket has TCP_NODELAY (docs/architecture.md#performance-decisions), as the hub's own clients do.
 */
import { randomUUID } from 'node:crypto';
import net from 'node:net';
import { performance } from 'node:perf_hooks';
import { type IClientOptions, MqttClient } from 'mqtt';
import {
  buildCommand,
  type CommandMessage,
  commandDownTopic,
  messageDownTopic,
  parseDownlink,
  TOPIC_COMMAND_UP,
  TOPIC_MESSAGE_UP,
  toWire,
} from '../modules/shared/protocol.js';
import {
  CLOCK_WINDOW_MS,
  ReplayCache,
  type SentText,
  signedWireText,
  verifyInbound,
} from '../modules/shared/signing.js';
import type { Provisioned } from './env.js';

/** An mqtt.js client on a TCP_NODELAY socket; resolves at CONNACK. */
export async function connectMqtt(url: string, opts: IClientOptions = {}, ms = 10_000): Promise<MqttClient> {
  const u = new URL(url);
  const host = u.hostname;
  const port = Number(u.port || 1883);
  const client = new MqttClient(() => net.createConnection({ host, port, noDelay: true }), {
    protocol: 'mqtt',
    protocolVersion: 4,
    reconnectPeriod: 0,
    connectTimeout: ms,
    keepalive: 60,
    clean: true,
    ...opts,
  });
  await new Promise<void>((resolve, reject) => {
    const t = setTimeout(() => {
      client.end(true);
      reject(new Error(`no CONNACK from ${url} within ${ms} ms`));
    }, ms);
    client.once('connect', () => {
      clearTimeout(t);
      resolve();
    });
    client.once('error', (err) => {
      clearTimeout(t);
      client.end(true);
      reject(err);
    });
  });
  return client;
}

export function publishQos1(client: MqttClient, topic: string, payload: string | Buffer): Promise<void> {
  return new Promise((resolve, reject) =>
    client.publish(topic, payload, { qos: 1 }, (err) => (err ? reject(err) : resolve())),
  );
}

export function endClient(client: MqttClient): Promise<void> {
  return new Promise((r) => client.end(true, {}, () => r()));
}

/** The signed `exec_result` of an `echo` command run at once: its payload back as the output. */
export function echoResult(projectId: string, secret: string, commandId: string, payload: unknown): string {
  const start = Date.now();
  return signedData(projectId, secret, 'exec_result', {
    command_id: commandId,
    status: 'success',
    exit_code: 0,
    output: JSON.stringify(payload ?? null),
    error: '',
    start_time: start,
    end_time: start,
    duration: 0,
  });
}

/**
 * A signed data message as wire text: what buildData(..., { secret }) makes, without its
 * build-time payload schema check and defensive copy (the generator builds its own payloads,
 * and at 50 000 messages/s those checks would be the generator's bottleneck, not the hub's).
 */
export function signedData(projectId: string, secret: string, dataType: string, payload: unknown, now = Date.now()) {
  const unsigned = {
    message_id: randomUUID(),
    type: 'message',
    project_id: projectId,
    timestamp: now,
    version: '1.0',
    data_type: dataType,
    payload,
    encrypted: false,
  };
  // as the agent writes it (protocol toWire): the signed text with the signature added last
  return signedWireText(unsigned, secret);
}

let hbSeq = 0;
/** A heartbeat payload shaped like modules/agent/registration.ts sends (with its metrics sample). */
export function heartbeatPayload(projectId: string, probe?: number): Record<string, unknown> {
  const now = Date.now();
  return {
    instance_id: `${projectId}-bench-1`,
    node_name: projectId,
    timestamp: now,
    status: 'running',
    pid: 4242,
    uptime_s: 3600,
    version: 'bench',
    hostname: 'bench-host',
    metrics: {
      cpu_percent: (hbSeq++ % 100) / 4,
      load_1m: 0.42,
      mem_total_bytes: 8_589_934_592,
      mem_free_bytes: 4_294_967_296,
      uptime_s: 3600,
      rss_bytes: 52_428_800,
      ...(probe !== undefined ? { probe } : {}),
    },
  };
}

/** Server-side outcome of a command as the simulated agent saw it. */
export interface AgentCounters {
  commands: number;
  duplicates: number;
  rejected: number;
  results_sent: number;
}

/**
 * One agent: one project on its own connection (as modules/agent), answering `echo`-style
 * commands at once. `onResultSent` fires when the broker acknowledged the exec_result.
 */
export class SimAgent {
  readonly counters: AgentCounters = { commands: 0, duplicates: 0, rejected: 0, results_sent: 0 };
  private readonly replay = new ReplayCache({ ttlMs: 600_000, maxEntries: 200_000 });
  private readonly results = new Map<string, string>();
  private registered?: { resolve(): void; reject(e: Error): void };
  onResultSent?: (commandId: string) => void;
  /** When set, each new command's arrival (performance.now()) by command id: the sync suite's split. */
  arrivals?: Map<string, number>;

  private constructor(
    readonly client: MqttClient,
    readonly project: Provisioned,
  ) {
    client.on('message', (topic, payload) => this.onMessage(topic, payload));
  }

  /**
   * `persistent`: a session the broker keeps (`clean: false`), as the agent module's agents connect
   * (modules/agent/connection.ts), so their stored subscriptions are what a broker holds for a real
   * fleet; the default is a clean session.
   */
  static async connect(url: string, project: Provisioned, auth: boolean, persistent = false): Promise<SimAgent> {
    const client = await connectMqtt(url, {
      clientId: `agent-${project.project_id}`,
      clean: !persistent,
      ...(auth ? { username: project.project_id, password: project.password } : {}),
    });
    const a = new SimAgent(client, project);
    await client.subscribeAsync([commandDownTopic(project.project_id), messageDownTopic(project.project_id)], {
      qos: 1,
    });
    return a;
  }

  /** The registration handshake; resolves once `register_complete` is acknowledged by the broker. */
  async register(ms = 30_000): Promise<void> {
    const p = this.project;
    const done = new Promise<void>((resolve, reject) => {
      this.registered = { resolve, reject };
    });
    const msg = buildCommand(
      p.project_id,
      'register',
      {
        node_name: p.project_id,
        instance_id: `${p.project_id}-bench-1`,
        version: 'bench',
        pid: 4242,
        start_time: Date.now(),
        capabilities: ['echo'],
        metadata: { hostname: 'bench-host', platform: 'linux', runtime: 'node' },
        node_version: process.version,
      },
      p.secret,
    );
    await publishQos1(this.client, TOPIC_COMMAND_UP, toWire(msg));
    let t: NodeJS.Timeout | undefined;
    try {
      await Promise.race([
        done,
        new Promise((_, rej) => {
          t = setTimeout(() => rej(new Error(`no register_ack for ${p.project_id} within ${ms} ms`)), ms);
        }),
      ]);
    } finally {
      clearTimeout(t);
    }
  }

  heartbeat(): Promise<void> {
    const p = this.project;
    return publishQos1(
      this.client,
      TOPIC_MESSAGE_UP,
      signedData(p.project_id, p.secret, 'heartbeat', heartbeatPayload(p.project_id)),
    );
  }

  private onMessage(topic: string, payload: Buffer): void {
    const r = parseDownlink(topic, payload);
    if (!r.ok) {
      this.counters.rejected++;
      return;
    }
    const p = this.project;
    if (r.value.kind === 'data') {
      const m = r.value.msg;
      if (m.data_type === 'register_ack' && this.registered) {
        const reg = this.registered;
        if (!m.payload.accepted) {
          this.registered = undefined;
          reg.reject(new Error(`registration of ${p.project_id} refused: ${m.payload.reason}`));
          return;
        }
        this.registered = undefined;
        publishQos1(
          this.client,
          TOPIC_MESSAGE_UP,
          signedData(p.project_id, p.secret, 'register_complete', { instance_id: `${p.project_id}-bench-1` }),
        ).then(reg.resolve, reg.reject);
      }
      return;
    }
    this.onCommand(r.value.msg, r.value.sent);
  }

  private onCommand(msg: CommandMessage, sent: SentText | undefined): void {
    const p = this.project;
    const id = msg.message_id;
    const v = verifyInbound(msg, p.secret, this.replay, Date.now(), CLOCK_WINDOW_MS, sent);
    if (!v.ok) {
      if (v.code !== 'PROTO_ERR_REPLAY') {
        this.counters.rejected++;
        return;
      }
      // the hub re-published before our ack landed: ack again (and the result), never run twice
      this.counters.duplicates++;
      void publishQos1(
        this.client,
        TOPIC_MESSAGE_UP,
        signedData(p.project_id, p.secret, 'command_ack', { command_id: id }),
      );
      const res = this.results.get(id);
      if (res) void publishQos1(this.client, TOPIC_MESSAGE_UP, res);
      return;
    }
    this.counters.commands++;
    this.arrivals?.set(id, performance.now());
    void publishQos1(
      this.client,
      TOPIC_MESSAGE_UP,
      signedData(p.project_id, p.secret, 'command_ack', { command_id: id }),
    );
    const result = echoResult(p.project_id, p.secret, id, msg.payload);
    if (this.results.size > 50_000) this.results.clear();
    this.results.set(id, result);
    publishQos1(this.client, TOPIC_MESSAGE_UP, result).then(
      () => {
        this.counters.results_sent++;
        this.onResultSent?.(id);
      },
      () => undefined,
    );
  }

  close(): Promise<void> {
    return endClient(this.client);
  }
}

/** Connects agents `concurrency` at a time. */
export async function connectAgents(
  url: string,
  projects: Provisioned[],
  auth: boolean,
  concurrency = 64,
  persistent = false,
): Promise<SimAgent[]> {
  const out: SimAgent[] = new Array(projects.length);
  let next = 0;
  await Promise.all(
    Array.from({ length: Math.min(concurrency, projects.length) }, async () => {
      while (next < projects.length) {
        const i = next++;
        out[i] = await SimAgent.connect(url, projects[i], auth, persistent);
      }
    }),
  );
  return out;
}

/** Runs `fn` over `items`, `concurrency` at a time. */
export async function pool<T>(items: T[], concurrency: number, fn: (item: T, i: number) => Promise<void>) {
  let next = 0;
  await Promise.all(
    Array.from({ length: Math.min(concurrency, items.length) }, async () => {
      while (next < items.length) {
        const i = next++;
        await fn(items[i], i);
      }
    }),
  );
}

/**
 * Heartbeats per agent, each from the moment `start(agent)` is called (right after its own
 * registration, as modules/agent does: an agent registered early and silent until the whole
 * fleet has registered is, by the hub's rules, gone once its heartbeat timeout passes).
 */
export function heartbeats(intervalMs = 5000): { start(a: SimAgent, delayMs?: number): void; stop(): void } {
  const timers: NodeJS.Timeout[] = [];
  let stopped = false;
  return {
    start(a, delayMs = 0) {
      if (stopped) return;
      const first = setTimeout(() => {
        void a.heartbeat().catch(() => undefined);
        if (!stopped) timers.push(setInterval(() => void a.heartbeat().catch(() => undefined), intervalMs));
      }, delayMs);
      timers.push(first);
    },
    stop() {
      stopped = true;
      for (const t of timers) clearTimeout(t);
    },
  };
}

/** Every agent heartbeats every `intervalMs` (spread over the interval), as modules/agent does; returns a stop function. */
export function startHeartbeats(agents: SimAgent[], intervalMs = 5000): () => void {
  const beats = heartbeats(intervalMs);
  agents.forEach((a, i) => {
    beats.start(a, Math.floor((i / agents.length) * intervalMs));
  });
  return () => beats.stop();
}
