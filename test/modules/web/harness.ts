/**
 * A real host running the web module on port 0 beside `fake-domain`, a test provider that
 * answers the status, command and bridge topics from in-memory state the test owns, and
 * emits the same events the real modules do. Plus small HTTP and WebSocket client helpers.
 */
import { randomUUID } from 'node:crypto';
import WebSocket from 'ws';
import { z } from 'zod';
import type { ModuleBus } from '../../../core/bus.js';
import { HubError } from '../../../core/errors.js';
import { createRootLogger, type Logger } from '../../../core/log.js';
import { type MetricFamily, metricsTopic } from '../../../core/metrics.js';
import type { ModuleProvider } from '../../../core/module.js';
import { ProviderRegistry } from '../../../core/registry.js';
import type {
  CommandDetail,
  CommandEvent,
  CommandView,
  SendCommandRequest,
} from '../../../modules/command/contract/topics.js';
import { COMMAND } from '../../../modules/command/contract/topics.js';
import { StageMetrics } from '../../../modules/command/stage-metrics.js';
import { BRIDGE, type BridgeStats } from '../../../modules/mqtt-bridge/contract/topics.js';
import { bridgeMetrics } from '../../../modules/mqtt-bridge/metrics.js';
import {
  type CreatedProject,
  type PresenceState,
  type ProjectView,
  STATUS,
  type StatusChangedEvent,
} from '../../../modules/status/contract/topics.js';
import { projectsByState } from '../../../modules/status/metrics.js';
import { WEB, type WebInfo } from '../../../modules/web/contract/topics.js';
import { provider as webProvider } from '../../../modules/web/index.js';
import { startHost, type TestHost } from '../../helpers/host.js';
import { withTimeout } from '../../helpers/wait.js';

export const WAIT_MS = 5_000;

// biome-ignore lint/suspicious/noExplicitAny: JSON from the server, read field by field in assertions
export type Json = any;

/** What the fake domain modules hold and do; the test reads and steers it. */
export class FakeDomain {
  readonly projects = new Map<string, ProjectView>();
  readonly commands = new Map<string, CommandDetail>();
  readonly dead = new Set<string>();
  /** Every COMMAND.send request as it reached the bus. */
  readonly sends: SendCommandRequest[] = [];
  bridge: BridgeStats['state'] = 'connected';
  bus?: ModuleBus;
  /** The command module's latency series, observed from the events this fake sends as it would. */
  readonly stages = new StageMetrics();

  addProject(id: string, state: PresenceState = 'offline'): ProjectView {
    const p: ProjectView = {
      project_id: id,
      name: id,
      enabled: true,
      state,
      state_since: new Date().toISOString(),
      last_heartbeat_at: null,
      instance_id: null,
      agent_version: null,
      metrics: null,
      last_alert: null,
      created_at: new Date().toISOString(),
      registration: null,
      rejected_uplinks: 0,
      last_rejected: null,
    };
    this.projects.set(id, p);
    return p;
  }

  /** Changes a project's state and publishes the StatusChangedEvent the status module would. */
  setState(id: string, state: PresenceState, reason = 'test'): StatusChangedEvent {
    const p = this.projects.get(id) ?? this.addProject(id);
    const ev: StatusChangedEvent = { project_id: id, state, previous: p.state, reason, at: Date.now() };
    this.projects.set(id, { ...p, state, state_since: new Date().toISOString() });
    void this.bus!.publish(STATUS.changed(id), ev);
    return ev;
  }

  /** Moves a command on and publishes its state event. */
  advance(id: string, status: CommandView['status']): CommandDetail {
    const c = this.commands.get(id)!;
    const now = new Date().toISOString();
    const next: CommandDetail = {
      ...c,
      status,
      sent_at: status === 'pending' ? c.sent_at : (c.sent_at ?? now),
      acked_at: ['acked', 'completed', 'failed'].includes(status) ? (c.acked_at ?? now) : c.acked_at,
      completed_at: ['completed', 'failed', 'timeout', 'cancelled'].includes(status) ? now : c.completed_at,
    };
    this.commands.set(id, next);
    this.emit({ kind: 'state', command: view(next), at: Date.now() });
    return next;
  }

  /** Completes a command with a result: state event then result event, as the command module does. */
  complete(id: string, output: string, status: 'success' | 'failure' = 'success'): CommandDetail {
    const t = Date.now();
    const result = {
      status,
      exit_code: status === 'success' ? 0 : 1,
      output,
      error: '',
      start_time: t - 5,
      end_time: t,
      duration: 5,
      received_at: new Date(t).toISOString(),
    };
    this.advance(id, 'acked');
    const c = this.advance(id, status === 'success' ? 'completed' : 'failed');
    const done: CommandDetail = {
      ...c,
      result,
      timings: { queue_ms: 1, delivery_ms: 1, execution_ms: 5, total_ms: 7 },
    };
    this.commands.set(id, done);
    this.emit({
      kind: 'result',
      command: view(done),
      result,
      payload: done.payload,
      timings: done.timings,
      at: Date.now(),
    });
    return done;
  }

  log(id: string, seq: number, content: string): void {
    const c = this.commands.get(id)!;
    this.emit({ kind: 'log', command_id: id, project_id: c.project_id, seq, content, at: Date.now() });
  }

  emit(ev: CommandEvent): void {
    this.stages.observe(ev);
    const projectId = ev.kind === 'log' ? ev.project_id : ev.command.project_id;
    const commandId = ev.kind === 'log' ? ev.command_id : ev.command.command_id;
    void this.bus!.publish(COMMAND.event(projectId, commandId), ev);
  }

  send(req: SendCommandRequest): CommandView {
    this.sends.push(req);
    const p = this.projects.get(req.project_id);
    if (!p) throw new HubError('CMD_ERR_UNKNOWN_PROJECT', `project_id: unknown project ${req.project_id}`);
    if (p.state !== 'online' && req.offline_policy !== 'queue') {
      throw new HubError('CMD_ERR_PROJECT_OFFLINE', `project ${req.project_id} is ${p.state}`, {
        project_id: req.project_id,
      });
    }
    const now = new Date().toISOString();
    const c: CommandDetail = {
      command_id: req.command_id ?? randomUUID(),
      project_id: req.project_id,
      command_type: req.command_type,
      module: req.module ?? null,
      operator_id: req.operator_id ?? null,
      status: 'pending',
      is_sync: req.is_sync ?? false,
      offline_policy: req.offline_policy ?? 'fail',
      attempts: 0,
      created_at: now,
      sent_at: null,
      acked_at: null,
      started_at: null,
      completed_at: null,
      timeout_at: new Date(Date.now() + (req.timeout_ms ?? 30_000)).toISOString(),
      schedule_at: null,
      late_result: false,
      error: null,
      job_id: null,
      payload: req.payload ?? {},
      result: null,
      timings: { queue_ms: null, delivery_ms: null, execution_ms: null, total_ms: null },
    };
    this.commands.set(c.command_id, c);
    this.emit({ kind: 'state', command: view(c), at: Date.now() });
    // What the agent would do: `echo` answers with its payload, `hang` is delivered and never answers.
    setImmediate(() => {
      if (req.command_type === 'hang' || req.command_type === 'echo') this.advance(c.command_id, 'sent');
      if (req.command_type === 'echo') this.complete(c.command_id, JSON.stringify(req.payload ?? {}));
    });
    return view(c);
  }
}

export function view(c: CommandDetail): CommandView {
  const { payload: _p, result: _r, timings: _t, ...v } = c;
  return v;
}

function fakeDomainProvider(
  domain: FakeDomain,
): ModuleProvider<{ answer_status: boolean; answer_command: boolean; answer_bridge: boolean }> {
  return {
    name: 'fake-domain',
    schema: z
      .object({
        answer_status: z.boolean().default(true),
        answer_command: z.boolean().default(true),
        answer_bridge: z.boolean().default(true),
      })
      .strict(),
    create(ctx) {
      const bus = ctx.bus;
      const project = (b: unknown) => {
        const id = (b as { project_id?: string })?.project_id ?? '';
        const p = domain.projects.get(id);
        if (!p) throw new HubError('STATUS_ERR_NOT_FOUND', `no project ${JSON.stringify(id)}`);
        return p;
      };
      const command = (b: unknown) => {
        const id = (b as { command_id?: string })?.command_id ?? '';
        const c = domain.commands.get(id);
        if (!c) throw new HubError('CMD_ERR_NOT_FOUND', `no command ${id}`);
        return c;
      };
      return {
        start() {
          domain.bus = bus;
          const families: Array<() => MetricFamily[]> = [];
          if (ctx.config.answer_status) {
            families.push(() => [projectsByState(domain.projects.values(), domain.projects.size)]);
            bus.subscribe(STATUS.create, (b): CreatedProject => {
              const req = (b ?? {}) as { project_id?: string; name?: string };
              const id = req.project_id ?? `p-${randomUUID().slice(0, 8)}`;
              if (domain.projects.has(id)) throw new HubError('STATUS_ERR_EXISTS', `project "${id}" already exists`);
              domain.addProject(id);
              return { project_id: id, secret: 's'.repeat(64), mqtt_username: id, mqtt_password: 'pw' };
            });
            bus.subscribe(STATUS.list, (b) => {
              const r = (b ?? {}) as { include_disabled?: boolean; limit?: number; offset?: number };
              const all = [...domain.projects.values()].filter((p) => r.include_disabled || p.enabled);
              const offset = r.offset ?? 0;
              return { items: all.slice(offset, offset + (r.limit ?? 100)), total: all.length };
            });
            bus.subscribe(STATUS.get, (b) => project(b));
            bus.subscribe(STATUS.online, () => ({
              items: [...domain.projects.values()].filter((p) => p.state === 'online'),
            }));
            for (const [topic, enabled] of [
              [STATUS.enable, true],
              [STATUS.disable, false],
            ] as const) {
              bus.subscribe(topic, (b) => {
                const p = { ...project(b), enabled };
                domain.projects.set(p.project_id, p);
                return p;
              });
            }
            bus.subscribe(STATUS.rotate, (b): CreatedProject => {
              const p = project(b);
              return {
                project_id: p.project_id,
                secret: 'r'.repeat(64),
                mqtt_username: p.project_id,
                mqtt_password: 'pw2',
              };
            });
          }
          if (ctx.config.answer_command) {
            families.push(() => domain.stages.families());
            bus.subscribe(COMMAND.send, (b) => domain.send(b as SendCommandRequest));
            bus.subscribe(COMMAND.get, (b) => command(b));
            bus.subscribe(COMMAND.list, (b) => {
              const r = (b ?? {}) as { project_id?: string; status?: string[]; limit?: number; offset?: number };
              const items = [...domain.commands.values()]
                .filter(
                  (c) => (!r.project_id || c.project_id === r.project_id) && (!r.status || r.status.includes(c.status)),
                )
                .map(view)
                .reverse();
              return { items, total: items.length, limit: r.limit ?? 50, offset: r.offset ?? 0 };
            });
            bus.subscribe(COMMAND.cancel, (b) => {
              const c = command(b);
              if (c.status !== 'pending') {
                throw new HubError('CMD_ERR_NOT_CANCELLABLE', `command ${c.command_id} is ${c.status}`);
              }
              return view(domain.advance(c.command_id, 'cancelled'));
            });
            bus.subscribe(COMMAND.deadList, () => {
              const items = [...domain.dead].map((id) => view(domain.commands.get(id)!));
              return { items, total: items.length };
            });
            bus.subscribe(COMMAND.deadReplay, (b) => {
              const c = command(b);
              if (!domain.dead.delete(c.command_id)) throw new HubError('CMD_ERR_NOT_FOUND', 'not dead');
              return view(domain.advance(c.command_id, 'pending'));
            });
          }
          if (ctx.config.answer_bridge) {
            const stats = (): BridgeStats => ({
              state: domain.bridge,
              connected_since: Date.now(),
              broker: 'mqtt://127.0.0.1:1883',
              client_id: 'hub-test',
              received: 12,
              rejected_by_code: { PROTO_ERR_SIGNATURE: 3 },
              dropped_by_bus: 0,
              published: 7,
              publish_failures: 2,
              publish_in_flight: 0,
              publish_ms_avg: 1,
              publish_ms_max: 2,
              reconnects: 1,
              connects: 1,
            });
            bus.subscribe(BRIDGE.stats, stats);
            // the bridge's series on /metrics, as the bridge registers them from these stats
            families.push(() => bridgeMetrics(stats(), []));
          }
          // the series the modules this one stands in for report, made by their own code
          bus.subscribe(metricsTopic(ctx.name), () => families.flatMap((f) => f()));
        },
      };
    },
  };
}

export interface WebHarness {
  h: TestHost;
  domain: FakeDomain;
  info: WebInfo;
  base: string;
  /** fetch() against the web module; a JSON body is serialised, the token (if given) sent. */
  call(
    method: string,
    path: string,
    body?: unknown,
    opts?: { token?: string; headers?: Record<string, string> },
  ): Promise<{ status: number; json: Json; text: string; headers: Headers }>;
  stop(): Promise<void>;
}

export interface HarnessOptions {
  /** YAML lines added to the web block (indented by the harness). */
  web?: Record<string, unknown>;
  fake?: { answer_status?: boolean; answer_command?: boolean; answer_bridge?: boolean };
  token?: string;
  databases?: string;
  log?: Logger;
  /** Extra modules (YAML text under `modules:`) and their providers. */
  extraYaml?: string;
  registry?: (r: ProviderRegistry) => void;
}

export async function startWeb(opts: HarnessOptions = {}): Promise<WebHarness> {
  const domain = new FakeDomain();
  const registry = new ProviderRegistry().register(webProvider).register(fakeDomainProvider(domain));
  opts.registry?.(registry);
  const web = { port: 0, database: null, ...(opts.token ? { tokens: [opts.token] } : {}), ...opts.web };
  const block = (o: Record<string, unknown>) =>
    Object.entries(o)
      .map(([k, v]) => `    ${k}: ${JSON.stringify(v)}`)
      .join('\n');
  const yaml = `${opts.databases ?? ''}
modules:
  fake:
    provider: fake-domain
${block(opts.fake ?? {})}
  web:
    provider: web
    depends_on: [fake]
${block(web)}
${opts.extraYaml ?? ''}`;
  const h = await startHost(yaml, registry, { log: opts.log });
  const info = await h.host.bus.request<WebInfo>(WEB.info('web'), {});
  const harness: WebHarness = {
    h,
    domain,
    info,
    base: info.url,
    async call(method, path, body, o = {}) {
      const headers: Record<string, string> = { ...o.headers };
      const token = o.token ?? opts.token;
      if (token) headers.authorization = `Bearer ${token}`;
      let payload: string | undefined;
      if (body !== undefined) {
        payload = typeof body === 'string' ? body : JSON.stringify(body);
        headers['content-type'] ??= 'application/json';
      }
      const res = await fetch(harness.base + path, { method, headers, body: payload });
      const text = await res.text();
      let json: unknown;
      try {
        json = JSON.parse(text);
      } catch {
        json = undefined;
      }
      return { status: res.status, json, text, headers: res.headers };
    },
    stop: () => h.stop(),
  };
  return harness;
}

/** A real pino logger whose JSON lines the test can read back. */
export function captureLog(): { log: Logger; lines: Array<Record<string, unknown> & { msg: string; level: number }> } {
  const lines: Array<Record<string, unknown> & { msg: string; level: number }> = [];
  const log = createRootLogger({
    level: 'debug',
    destination: { write: (s: string) => void lines.push(JSON.parse(s)) },
  });
  return { log, lines };
}

/** A WebSocket client that queues what it receives, for `next()` with a bound. */
export class WsClient {
  readonly ws: WebSocket;
  readonly received: Json[] = [];
  /** Binary frames received: the protocol is JSON text frames only, so this stays 0. */
  binaryFrames = 0;
  private waiters: Array<() => void> = [];
  closed: Promise<{ code: number; reason: string }>;

  constructor(url: string, opts: WebSocket.ClientOptions = {}) {
    this.ws = new WebSocket(url, opts);
    this.ws.on('message', (data, isBinary) => {
      if (isBinary) this.binaryFrames++;
      this.received.push(JSON.parse(String(data)));
      for (const w of this.waiters.splice(0)) w();
    });
    this.closed = new Promise((resolve) => {
      this.ws.on('close', (code, reason) => {
        resolve({ code, reason: String(reason) });
        for (const w of this.waiters.splice(0)) w();
      });
    });
    this.ws.on('error', () => undefined);
  }

  static async open(base: string, query = '', opts: WebSocket.ClientOptions = {}): Promise<WsClient> {
    const c = new WsClient(`${base.replace(/^http/, 'ws')}/api/exchange-hub/ws${query}`, opts);
    await c.next((m) => m.op === 'hello');
    return c;
  }

  send(msg: unknown): void {
    this.ws.send(typeof msg === 'string' ? msg : JSON.stringify(msg));
  }

  /** Resolves with the first message (from `from` on) that satisfies `pred`, consuming nothing. */
  async next(pred: (m: Json) => boolean, ms = WAIT_MS): Promise<Json> {
    return withTimeout(
      (async () => {
        for (;;) {
          const found = this.received.find(pred);
          if (found) return found;
          if (this.ws.readyState === WebSocket.CLOSED) throw new Error('websocket closed while waiting');
          await new Promise<void>((r) => this.waiters.push(r));
        }
      })(),
      ms,
      'a websocket message',
    );
  }

  events(): Json[] {
    return this.received.filter((m) => m.op === 'event');
  }

  async until(pred: () => boolean, ms = WAIT_MS): Promise<void> {
    await withTimeout(
      (async () => {
        while (!pred()) {
          if (this.ws.readyState === WebSocket.CLOSED) throw new Error('websocket closed while waiting');
          await new Promise<void>((r) => this.waiters.push(r));
        }
      })(),
      ms,
      'websocket messages',
    );
  }

  close(): Promise<{ code: number; reason: string }> {
    this.ws.close();
    return this.closed;
  }
}
