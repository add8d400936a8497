/**
 * The `agent` module: this host acting as a project's field agent ("watchdog", seeds 002 and
 * 004). It keeps its own MQTT connection to the hub's broker, registers and heartbeats, runs the
 * signed commands it receives through bus handlers (`agent/handler/{command_type}`, answered by
 * its built-ins or by any other module), and sends acks, log chunks and results through a retry
 * queue that survives a broker outage and a restart.
 *
 * Note: the built-in handlers answer in this module's own mailbox, which the bus handles in
 * order; a long `host_exec` therefore runs one at a time and `agent/stats` waits behind it.
 */
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { CONTROL } from '../../core/bus.js';
import type { ModuleInfo } from '../../core/host.js';
import { HOST_TOPICS } from '../../core/host-topics.js';
import type { ModuleContext, ModuleInstance, ModuleProvider } from '../../core/module.js';
import { redactUrl } from '../shared/mqtt-session-socket.js';
import {
  buildData,
  COMMAND_TYPE_RE,
  commandDownTopic,
  messageDownTopic,
  parseDownlink,
  TOPIC_MESSAGE_UP,
  toWire,
} from '../shared/protocol.js';
import { CommandRunner, type RunnerCounters } from './commands.js';
import { type AgentConfig, AgentConfigSchema, resolveAgentConfig } from './config.js';
import { AgentConnection } from './connection.js';
import {
  AGENT,
  type AgentOutputEvent,
  type AgentState,
  type AgentStateEvent,
  type AgentStats,
  type AgentTaskRequest,
} from './contract/topics.js';
import { echo, HostExec } from './handlers.js';
import { LogBuffers } from './log-buffer.js';
import { ProcessMetrics } from './metrics.js';
import { Registrar } from './registration.js';
import { RetryQueue, type UplinkSender } from './retry-queue.js';
import { SeenJournal } from './seen-journal.js';

const OUTPUT_PREFIX = 'agent/output/';
const HANDLER_PREFIX = 'agent/handler/';
/** Private to one agent instance: a request queued behind the output events already in its mailbox. */
const barrierTopic = (name: string) => `agent/barrier/${name}`;
const BARRIER_TIMEOUT_MS = 2000;
/** Beside the queue files; not a queue entry (those end in .json). */

class AgentModule implements ModuleInstance {
  private readonly ctx: ModuleContext<AgentConfig>;
  private readonly cfg: AgentConfig;
  private readonly instanceId: string;
  private readonly counters: RunnerCounters & { messages_rejected: number } = {
    commands_run: 0,
    commands_rejected: 0,
    duplicates: 0,
    result_barrier_waits: 0,
    messages_rejected: 0,
  };
  private state: AgentState = 'disconnected';
  /** The command types this module's own handlers run (subscribeBus): capabilities, and results without a barrier. */
  private readonly ownHandlers = new Set<string>();
  private queue!: RetryQueue;
  private conn!: AgentConnection;
  private registrar!: Registrar;
  private runner!: CommandRunner;
  private logs!: LogBuffers;
  private readonly metrics = new ProcessMetrics();
  private stopping = false;
  private seen!: SeenJournal;
  private readonly warnRejected: (fields: Record<string, unknown>, msg: string) => void;

  constructor(ctx: ModuleContext<AgentConfig>) {
    this.ctx = ctx;
    this.cfg = ctx.config;
    this.instanceId = `${this.cfg.node_name}-${os.hostname()}-${process.pid}`;
    this.warnRejected = throttledWarn(ctx, 1000);
  }

  start(): void {
    const { ctx, cfg } = this;
    const resolved = resolveAgentConfig(cfg);
    const dir = path.join(resolved.queueDir, projectFolder(cfg.project_id));
    this.queue = new RetryQueue({
      dir,
      memoryMax: cfg.queue.memory_max,
      diskMax: cfg.queue.disk_max,
      ttlMs: cfg.queue.ttl_ms,
      maxRetries: cfg.queue.max_retries,
      window: cfg.queue.window,
      retryDelayMs: cfg.queue.retry_delay_ms,
      log: ctx.log,
      timers: ctx.timers,
    });
    const fromDisk = this.queue.load();
    this.seen = new SeenJournal(dir, ctx.log);
    this.logs = new LogBuffers({
      flushBytes: cfg.log_flush_bytes,
      flushMs: cfg.log_flush_ms,
      timers: ctx.timers,
      emit: (chunk) => this.queue.enqueue('log_result', chunk),
    });
    this.runner = new CommandRunner({
      cfg,
      bus: ctx.bus,
      log: ctx.log,
      logs: this.logs,
      enqueue: (type, payload, durable) => this.queue.enqueue(type, payload, durable),
      barrier: () => this.barrier(),
      ownHandler: (type) => this.ownHandlers.has(type),
      counters: this.counters,
      rejectedLog: this.warnRejected,
      accepted: (id, at) => this.seen.append({ id, at }),
      finished: (id, at) => this.seen.append({ id, at, done: true }),
    });
    // what the last process accepted, even if it was killed: acknowledged again, never re-run
    const seen = this.runner.importSeen(this.seen.load());
    this.seen.compact(this.runner.exportSeen());
    this.registrar = new Registrar({
      cfg,
      brokerUrl: redactUrl(cfg.url),
      instanceId: this.instanceId,
      version: packageVersion(),
      startTime: Date.now(),
      log: ctx.log,
      timers: ctx.timers,
      metrics: this.metrics,
      publish: (topic, payload) => this.conn.publish(topic, payload),
      capabilities: () => this.capabilities(),
      setState: (s, reason) => this.setState(s, reason),
      rejected: () => this.counters.messages_rejected++,
    });

    this.subscribeBus();
    this.metrics.start();
    ctx.timers.setInterval(() => this.queue.sweep(), Math.min(cfg.queue.ttl_ms, 60_000));

    const sender: UplinkSender = (e) => {
      let text: string;
      try {
        // signed now, not when queued: the timestamp must pass the hub's clock window (docs/wire-protocol.md#timestamps-and-the-clock-window)
        text = toWire(
          buildData(cfg.project_id, e.data_type, e.payload, { secret: cfg.secret, messageId: e.message_id }),
        );
      } catch (err) {
        return Promise.reject(err);
      }
      return this.conn.publish(TOPIC_MESSAGE_UP, text);
    };
    this.conn = new AgentConnection({
      url: cfg.url,
      projectId: cfg.project_id,
      clientId: resolved.clientId,
      username: resolved.username,
      password: resolved.password,
      keepaliveS: cfg.keepalive_s,
      connectTimeoutMs: cfg.connect_timeout_ms,
      reconnectMinMs: cfg.reconnect_min_ms,
      reconnectMaxMs: cfg.reconnect_max_ms,
      subscriptions: [commandDownTopic(cfg.project_id), messageDownTopic(cfg.project_id)],
      will: () => ({
        topic: TOPIC_MESSAGE_UP,
        payload: toWire(
          buildData(
            cfg.project_id,
            'disconnect',
            { reason: 'last_will', instance_id: this.instanceId },
            { secret: cfg.secret },
          ),
        ),
      }),
      log: ctx.log,
      timers: ctx.timers,
      onConnecting: () => this.setState('connecting'),
      onUp: () => {
        void this.registrar
          .onConnected()
          .catch((err) => ctx.log.warn({ err }, 'registration step failed'))
          .then(() => {
            if (this.conn.connected && !this.stopping) this.queue.online(sender);
          });
      },
      onDown: (reason) => {
        this.registrar.onDisconnected();
        this.queue.offline();
        this.setState('disconnected', reason);
      },
      onMessage: (topic, payload) => this.onMessage(topic, payload),
    });
    ctx.log.info(
      {
        project_id: cfg.project_id,
        instance_id: this.instanceId,
        queue_dir: dir,
        queued_on_disk: fromDisk,
        commands_remembered: seen.remembered,
        commands_interrupted: seen.interrupted,
        host_exec: cfg.handlers.host_exec.enabled,
      },
      'agent starting',
    );
    this.conn.start();
  }

  async stop(): Promise<void> {
    if (this.stopping || !this.conn) return;
    this.stopping = true;
    const { cfg } = this;
    const deadline = Date.now() + cfg.stop_drain_ms;
    const left = () => Math.max(0, deadline - Date.now());
    this.registrar.stop();
    this.runner.stop();
    this.logs.flushAll();
    if (this.conn.connected) {
      // what is queued gets its chance while the connection is still up, then the goodbye
      await this.queue.settle(left());
      try {
        const bye = buildData(
          cfg.project_id,
          'disconnect',
          { reason: 'shutdown', instance_id: this.instanceId },
          { secret: cfg.secret },
        );
        await raceTimeout(this.conn.publish(TOPIC_MESSAGE_UP, toWire(bye)), left());
      } catch {
        // the broker is gone: the last will says it for us
      }
    }
    this.queue.offline();
    await this.conn.stop(left());
    await this.queue.close();
    const persisted = this.queue.persist();
    this.seen.compact(this.runner.exportSeen());
    this.seen.close();
    this.metrics.stop();
    this.setState('stopped');
    this.ctx.log.info({ persisted, queued_on_disk: this.queue.diskCount }, 'agent stopped');
  }

  private subscribeBus(): void {
    const { ctx, cfg } = this;
    ctx.bus.subscribe(AGENT.stats, () => this.stats(), CONTROL);
    ctx.bus.subscribe(barrierTopic(ctx.name), () => true);
    ctx.bus.subscribe<AgentOutputEvent>(`${OUTPUT_PREFIX}+`, (p, msg) => {
      // our own handlers hand their output over directly (this mailbox is busy while they run)
      if (msg.from === ctx.name || p === null || typeof p !== 'object') return undefined;
      this.runner.onOutput(msg.topic.slice(OUTPUT_PREFIX.length), p.content);
      return undefined;
    });
    if (cfg.handlers.echo) {
      ctx.bus.subscribe<AgentTaskRequest>(AGENT.handler('echo'), (req) => echo(req));
      this.ownHandlers.add('echo');
    }
    if (cfg.handlers.host_exec.enabled) {
      this.ownHandlers.add('host_exec');
      const resolved = resolveAgentConfig(cfg);
      const hostExec = new HostExec({
        cfg: cfg.handlers.host_exec,
        secretValues: [cfg.secret, resolved.password],
        emit: (commandId, content) => {
          this.runner.onOutput(commandId, content);
          void ctx.bus.publish(AGENT.output(commandId), { command_id: commandId, content } satisfies AgentOutputEvent);
        },
        timers: ctx.timers,
        log: ctx.log,
        signal: ctx.signal,
      });
      ctx.bus.subscribe<AgentTaskRequest>(AGENT.handler('host_exec'), (req) => hostExec.run(req));
    }
  }

  private onMessage(topic: string, payload: Buffer): void {
    if (this.stopping) return;
    const r = parseDownlink(topic, payload);
    if (!r.ok) {
      if (topic === commandDownTopic(this.cfg.project_id)) this.counters.commands_rejected++;
      else this.counters.messages_rejected++;
      this.warnRejected({ topic, code: r.code, reason: r.reason }, 'downlink message refused by the parser');
      return;
    }
    if (r.value.kind === 'command') this.runner.onCommand(r.value.msg, r.value.sent);
    else this.registrar.onData(r.value.msg, r.value.sent);
  }

  private async barrier(): Promise<void> {
    if (this.stopping) return;
    await this.ctx.bus.request(barrierTopic(this.ctx.name), null, { timeoutMs: BARRIER_TIMEOUT_MS }).then(
      () => undefined,
      () => undefined,
    );
  }

  /** Command types some module answers on the bus (`agent/handler/{type}`), built-ins included. */
  private async capabilities(): Promise<string[]> {
    const set = new Set<string>(this.ownHandlers);
    try {
      const list = await this.ctx.bus.request<ModuleInfo[]>(HOST_TOPICS.listModules, {}, { timeoutMs: 1000 });
      for (const m of Array.isArray(list) ? list : []) {
        if (m.state !== 'running' && m.state !== 'starting') continue;
        for (const s of m.mailbox?.subscriptions ?? []) {
          if (!s.startsWith(HANDLER_PREFIX)) continue;
          const type = s.slice(HANDLER_PREFIX.length);
          if (COMMAND_TYPE_RE.test(type)) set.add(type);
        }
      }
    } catch {
      // no host answering (or busy): the built-ins are what we know
    }
    return [...set].sort();
  }

  private setState(state: AgentState, reason?: string): void {
    if (state === this.state && reason === undefined) return;
    const changed = state !== this.state;
    this.state = state;
    if (!changed && state !== 'refused') return;
    const ev: AgentStateEvent = { state, at: Date.now(), ...(reason !== undefined ? { reason } : {}) };
    void this.ctx.bus.publish(AGENT.state, ev);
  }

  private stats(): AgentStats & Record<string, unknown> {
    const q = this.queue.stats();
    return {
      registered: this.registrar.registered,
      state: this.state,
      queue_memory: q.queue_memory,
      queue_disk: q.queue_disk,
      sent: q.sent,
      retried: q.retried,
      expired: q.expired,
      dropped: q.dropped,
      commands_run: this.counters.commands_run,
      commands_rejected: this.counters.commands_rejected,
      duplicates: this.counters.duplicates,
      result_barrier_waits: this.counters.result_barrier_waits,
      messages_rejected: this.counters.messages_rejected,
      running: this.runner.running,
      connected: this.conn.connected,
      instance_id: this.instanceId,
      heartbeat_interval_s: this.registrar.heartbeatIntervalS,
    };
  }
}

/** One sub-folder per project, readable and safe on any file system. */
export function projectFolder(projectId: string): string {
  const readable = projectId.replace(/[^A-Za-z0-9_-]/g, '_').slice(0, 40);
  const hash = createHash('sha256').update(projectId).digest('hex').slice(0, 12);
  return `${readable}-${hash}`;
}

let cachedVersion: string | undefined;
/** The version in the nearest package.json above this file (src or dist). */
function packageVersion(): string {
  cachedVersion ??= findPackageVersion();
  return cachedVersion;
}

function findPackageVersion(): string {
  let dir = path.dirname(fileURLToPath(import.meta.url));
  for (let i = 0; i < 6; i++) {
    try {
      const pkg = JSON.parse(fs.readFileSync(path.join(dir, 'package.json'), 'utf8')) as { version?: unknown };
      if (typeof pkg.version === 'string') return pkg.version;
    } catch {
      // not here
    }
    dir = path.dirname(dir);
  }
  return '0.0.0';
}

/** At most one warning per interval; the ones held back are counted in the next. */
function throttledWarn(ctx: ModuleContext<unknown>, intervalMs: number) {
  let last = 0;
  let suppressed = 0;
  return (fields: Record<string, unknown>, msg: string) => {
    const now = Date.now();
    if (now - last < intervalMs) {
      suppressed++;
      ctx.log.debug(fields, msg);
      return;
    }
    last = now;
    ctx.log.warn({ ...fields, ...(suppressed > 0 ? { suppressed } : {}) }, msg);
    suppressed = 0;
  };
}

function raceTimeout<T>(p: Promise<T>, ms: number): Promise<T | undefined> {
  let timer: NodeJS.Timeout | undefined;
  return Promise.race([
    p,
    new Promise<undefined>((r) => {
      timer = setTimeout(() => r(undefined), ms);
    }),
  ]).finally(() => clearTimeout(timer));
}

export const provider: ModuleProvider<AgentConfig> = {
  name: 'agent',
  description: 'this host as a field agent: registration, heartbeat, signed commands, retry queue',
  schema: AgentConfigSchema,
  // commands come from the hub and are answered by handler modules on this host: they start first
  ingress: true,
  create: (ctx) => new AgentModule(ctx),
};
