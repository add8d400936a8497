import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { z } from 'zod';
import type { ModuleBus } from '../../../core/bus.js';
import { parseConfig } from '../../../core/config.js';
import { Host } from '../../../core/host.js';
import { silentLogger } from '../../../core/log.js';
import type { ModuleProvider } from '../../../core/module.js';
import { ProviderRegistry } from '../../../core/registry.js';
import type { DbConfig } from '../../../core/services/db.js';
import {
  BRIDGE,
  type BridgeRejectedEvent,
  type MqttPublishRequest,
} from '../../../modules/mqtt-bridge/contract/topics.js';
import { UplinkVerifier } from '../../../modules/mqtt-bridge/verify.js';
import {
  buildCommand,
  buildData,
  type CommandMessage,
  type DataMessage,
  type Downlink,
  newMessageId,
  parseDownlink,
  type RegisterPayload,
  TOPIC_COMMAND_UP,
  TOPIC_MESSAGE_UP,
} from '../../../modules/shared/protocol.js';
import type { StatusStats } from '../../../modules/status/contract/stats.js';
import {
  type CreatedProject,
  type CredentialsChangedEvent,
  STATUS,
  type StatusChangedEvent,
} from '../../../modules/status/contract/topics.js';
import { provider as statusProvider } from '../../../modules/status/index.js';
import { preparePgliteTemplate, tempPgliteConfig, withPgSchema } from '../../helpers/db.js';
import { deferred, scaled, withTimeout } from '../../helpers/wait.js';

export type Driver = 'pglite' | 'pg';
export const DRIVERS: Driver[] = ['pglite', 'pg'];

const WAIT_MS = 5_000;

/** A clock the test moves by hand; the module reads it through ctx.services.clock. */
export class FakeClock {
  t = Date.now();
  now(): number {
    return this.t;
  }
  advance(ms: number): void {
    this.t += ms;
  }
}

/** A database (PGlite data dir or PostgreSQL schema) that outlives hosts, so restarts can be tested. */
export interface TestDb {
  config: DbConfig;
  cleanup(): Promise<void>;
}

export async function newDb(driver: Driver): Promise<TestDb> {
  if (driver === 'pglite') {
    await preparePgliteTemplate();
    const t = tempPgliteConfig();
    return { config: t.config, cleanup: async () => t.cleanup() };
  }
  const s = await withPgSchema();
  return { config: s.config, cleanup: s.drop };
}

interface Waiter<T> {
  pred: (v: T) => boolean;
  resolve: (v: T) => void;
}

/** Records values and lets a test wait (bounded) for one that matches, past or future. */
export class Recorder<T> {
  readonly items: T[] = [];
  private waiters: Waiter<T>[] = [];

  push(v: T): void {
    this.items.push(v);
    this.waiters = this.waiters.filter((w) => {
      if (!w.pred(v)) return true;
      w.resolve(v);
      return false;
    });
  }

  /** The first recorded value from index `from` on that matches, or the next one to arrive. */
  wait(pred: (v: T) => boolean, what: string, from = 0): Promise<T> {
    const found = this.items.slice(from).find(pred);
    if (found !== undefined) return Promise.resolve(found);
    const d = deferred<T>();
    this.waiters.push({ pred, resolve: d.resolve });
    return withTimeout(d.promise, WAIT_MS, what);
  }
}

export interface SentDownlink {
  topic: string;
  qos: number | undefined;
  raw: string;
  parsed: Downlink;
}

/** Stands in for the mqtt-bridge: answers `mqtt/publish` and records every downlink. */
function fakeBridge(sink: Recorder<SentDownlink>): ModuleProvider<Record<string, never>> {
  return {
    name: 'fake-bridge',
    schema: z.object({}).strict() as unknown as z.ZodType<Record<string, never>>,
    create: (ctx) => ({
      start() {
        ctx.bus.subscribe<MqttPublishRequest>(BRIDGE.publish, (req) => {
          const parsed = parseDownlink(req.topic, req.payload);
          if (!parsed.ok) throw new Error(`bad downlink: ${parsed.reason}`);
          sink.push({ topic: req.topic, qos: req.qos, raw: req.payload, parsed: parsed.value });
          return { ok: true };
        });
      },
    }),
  };
}

/** Matches a recorded downlink data message of `type` (and project, when given). */
export function isDown(type: string, pid?: string): (d: SentDownlink) => boolean {
  return (d) =>
    d.parsed.kind === 'data' &&
    d.parsed.msg.data_type === type &&
    (pid === undefined || d.parsed.msg.project_id === pid);
}

export function ackPayload(d: SentDownlink): { accepted: boolean; reason?: string; heartbeat_interval_s: number } {
  return d.parsed.msg.payload as { accepted: boolean; reason?: string; heartbeat_interval_s: number };
}

export interface MonitorEvent {
  project_id: string;
  metrics: Record<string, unknown>;
  at: number;
}
export interface AlertEvent {
  project_id: string;
  alert: Record<string, unknown>;
  at: number;
}

export interface Harness {
  host: Host;
  clock: FakeClock;
  db: TestDb;
  downlinks: Recorder<SentDownlink>;
  events: Recorder<StatusChangedEvent>;
  monitors: Recorder<MonitorEvent>;
  alerts: Recorder<AlertEvent>;
  request<R = unknown>(topic: string, body?: unknown): Promise<R>;
  /** The module's stats answer, once what the test published is handled. */
  stats(): Promise<StatusStats>;
  create(projectId?: string): Promise<CreatedProject>;
  /**
   * Hands a signed register to status as the bridge does: through the bridge's verification step
   * (a refused one goes out as `mqtt/rejected`, which status answers); returns the message.
   */
  register(pid: string, secret: string, opts?: RegisterOptions): object;
  /** The signed register `register` sends, built and not sent (a test that hands it over itself). */
  registerMessage(pid: string, secret: string, opts?: RegisterOptions): CommandMessage;
  data(pid: string, type: string, payload: unknown, opts?: { secret?: string; now?: number }): object;
  /** register → accepted register_ack → register_complete → online. */
  bringOnline(pid: string, secret: string): Promise<void>;
  /** Resolves after a full sweep ran following this call. */
  sweepPassed(): Promise<void>;
  /** Resolves once the pending presence writes reached the database. */
  flushed(): Promise<void>;
  /** Stops the host only; the database stays for a next host. */
  stopHost(): Promise<void>;
  /** Starts another host on the same database and clock (a hub restart). */
  restartHost(): Promise<Harness>;
  close(): Promise<void>;
}

export interface RegisterOptions {
  now?: number;
  messageId?: string;
  instance?: string;
}

/** The real time, for tests through a real broker and bridge (whose messages carry Date.now()). */
export class RealClock extends FakeClock {
  override now(): number {
    return Date.now();
  }
  override advance(): void {
    throw new Error('RealClock cannot be advanced');
  }
}

export interface HarnessOptions {
  settings?: Record<string, unknown>;
  db?: TestDb;
  clock?: FakeClock;
  /** Other module blocks (then no fake bridge unless listed) and the providers they need. */
  modules?: Record<string, unknown>;
  /** The config's `outbox:` section (routes for domain events). */
  outbox?: Record<string, unknown>;
  providers?: ModuleProvider<never>[];
}

function yaml(
  db: DbConfig,
  settings: Record<string, unknown>,
  modules?: Record<string, unknown>,
  outbox?: Record<string, unknown>,
): string {
  return JSON.stringify({
    databases: { default: db },
    ...(outbox ? { outbox } : {}),
    modules: {
      ...(modules ?? { 'fake-bridge': {} }),
      status: { sweep_interval_ms: 10, flush_interval_ms: 20, ...settings },
    },
  });
}

export async function startStatus(driver: Driver, opts: HarnessOptions = {}): Promise<Harness> {
  const db = opts.db ?? (await newDb(driver));
  const clock = opts.clock ?? new FakeClock();
  const downlinks = new Recorder<SentDownlink>();
  const events = new Recorder<StatusChangedEvent>();
  const monitors = new Recorder<MonitorEvent>();
  const alerts = new Recorder<AlertEvent>();
  const registry = new ProviderRegistry().register(statusProvider).register(fakeBridge(downlinks));
  for (const p of opts.providers ?? []) registry.register(p);
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'gmq-status-'));
  const settings = opts.settings ?? {};
  const host = new Host({
    config: parseConfig(yaml(db.config, settings, opts.modules, opts.outbox), path.join(dir, 'config.yml'), {}),
    registry,
    log: silentLogger(),
    clock,
  });
  const observer = host.bus.mailbox('test-observer');
  // The bridge's verification step (mqtt-bridge/verify.ts), the one every uplink passes before
  // the bus hands it to status: status trusts what arrives on `hub/uplink/...`.
  const verifier = new UplinkVerifier({
    bus: { request: (topic, body, o) => host.bus.request(topic, body, o) } as ModuleBus,
    now: () => clock.now(),
    credentialsTtlMs: 60_000,
  });
  observer.subscribe(STATUS.credentialsChanged, (ev) => verifier.onCredentialsChanged(ev as CredentialsChangedEvent));
  /** Uplinks handed over in the order the test sent them (a verification may wait for a lookup). */
  let edge: Promise<void> = Promise.resolve();
  const handOver = (kind: 'command' | 'data', type: string, msg: CommandMessage | DataMessage, topic: string) => {
    edge = edge.then(async () => {
      const v = await verifier.verify(kind, msg);
      if (!v.ok) {
        const rejected: BridgeRejectedEvent = {
          topic,
          code: v.code,
          reason: v.reason,
          at: clock.now(),
          project_id: msg.project_id,
          type,
        };
        void host.bus.publish(BRIDGE.rejected, rejected);
        return;
      }
      await host.bus.publish(BRIDGE.uplink(msg.project_id, kind, type), { msg, topic, received_at: clock.now() });
      verifier.commit(v.replayKey);
    });
  };
  observer.subscribe(STATUS.changedPattern, (ev) => events.push(ev as StatusChangedEvent));
  observer.subscribe('status/monitor/+', (ev) => monitors.push(ev as MonitorEvent));
  observer.subscribe('status/alert/+', (ev) => alerts.push(ev as AlertEvent));
  await host.start();

  const h: Harness = {
    host,
    clock,
    db,
    downlinks,
    events,
    monitors,
    alerts,
    request: (topic, body = {}) => host.bus.request(topic, body, { timeoutMs: scaled(WAIT_MS) }),
    // stats answer on the control lane, ahead of the queue: wait until what the test published is handled
    stats: async () => {
      await edge;
      await host.bus.settled('status');
      return host.bus.request(STATUS.stats, {}, { timeoutMs: scaled(WAIT_MS) });
    },
    create: (projectId) => h.request<CreatedProject>(STATUS.create, projectId ? { project_id: projectId } : {}),
    register(pid, secret, o = {}) {
      const msg = h.registerMessage(pid, secret, o);
      handOver('command', 'register', msg, TOPIC_COMMAND_UP);
      return msg;
    },
    registerMessage(pid, secret, o = {}) {
      const payload: RegisterPayload = {
        node_name: 'wd',
        instance_id: o.instance ?? `wd-host-${pid}`,
        version: '2.1.0',
        pid: 4242,
        start_time: clock.now() - 1000,
        capabilities: ['host_exec'],
        metadata: { site: 'lab' },
        node_version: 'v20.11.0',
      };
      return buildCommand(pid, 'register', payload, secret, { now: o.now ?? clock.now(), messageId: o.messageId });
    },
    data(pid, type, payload, o = {}) {
      const msg = buildData(pid, type, payload, { secret: o.secret, now: o.now ?? clock.now() });
      handOver('data', type, msg, TOPIC_MESSAGE_UP);
      return msg;
    },
    async bringOnline(pid, secret) {
      const from = downlinks.items.length;
      const evFrom = events.items.length;
      h.register(pid, secret, { messageId: newMessageId() });
      const ack = await downlinks.wait(isDown('register_ack', pid), `register_ack for ${pid}`, from);
      const payload = ackPayload(ack);
      if (!payload.accepted) throw new Error(`registration of ${pid} refused: ${payload.reason}`);
      h.data(pid, 'register_complete', {}, { secret });
      await events.wait((e) => e.project_id === pid && e.state === 'online', `${pid} online`, evFrom);
    },
    async sweepPassed() {
      const start = (await h.stats()).sweeps as number;
      const deadline = Date.now() + scaled(WAIT_MS);
      // two increments: the one running at call time may have read the clock before the change
      while (((await h.stats()).sweeps as number) < start + 2) {
        if (Date.now() > deadline) throw new Error('no sweep ran');
        await new Promise((r) => setTimeout(r, 5));
      }
    },
    async flushed() {
      const deadline = Date.now() + scaled(WAIT_MS);
      for (;;) {
        const s = await h.stats();
        if (s.presence.pending_writes === 0 && !s.flush.in_flight) return;
        if (Date.now() > deadline) throw new Error('presence writes not flushed');
        await new Promise((r) => setTimeout(r, 5));
      }
    },
    stopHost: () => host.stop(),
    restartHost: () => startStatus(driver, { ...opts, settings, db, clock }),
    async close() {
      await host.stop();
      fs.rmSync(dir, { recursive: true, force: true });
      if (!opts.db) await db.cleanup();
    },
  };
  return h;
}
