/**
 * A real host with the grpc module and small stand-ins for the command and status modules, and a
 * real @grpc/grpc-js client built from the same .proto.
 */
import { randomUUID } from 'node:crypto';
import * as grpc from '@grpc/grpc-js';
import { loadSync } from '@grpc/proto-loader';
import { z } from 'zod';
import { HubError } from '../../../core/errors.js';
import type { Logger } from '../../../core/log.js';
import type { ModuleProvider } from '../../../core/module.js';
import { ProviderRegistry } from '../../../core/registry.js';
import {
  COMMAND,
  type CommandDetail,
  type CommandEvent,
  type CommandView,
  type ListCommandsRequest,
  type SendCommandRequest,
} from '../../../modules/command/contract/topics.js';
import { GRPC, type GrpcStats } from '../../../modules/grpc/contract/topics.js';
import { provider as grpcProvider } from '../../../modules/grpc/index.js';
import { LOADER_OPTIONS, PROTO_FILE, protoRoot } from '../../../modules/grpc/proto.js';
import {
  type CreateProjectRequest,
  type ProjectView,
  STATUS,
  type StatusChangedEvent,
} from '../../../modules/status/contract/topics.js';
import { startHost, type TestHost } from '../../helpers/host.js';
import { scaled } from '../../helpers/wait.js';

/** What the fake modules saw, for asserting that refused input never reached a topic. */
export interface Seen {
  sends: SendCommandRequest[];
  creates: CreateProjectRequest[];
  gets: string[];
  /** Requests the fakes answered on the project and dead-command admin topics. */
  admin: { topic: string; req: unknown }[];
}

function view(req: SendCommandRequest, id: string): CommandView {
  const now = new Date().toISOString();
  return {
    command_id: id,
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
    timeout_at: new Date(Date.now() + 60_000).toISOString(),
    schedule_at: null,
    late_result: false,
    error: null,
    job_id: null,
  };
}

/** The real modules' paging rule (limit 1-max, offset ≥ 0), with their error format. */
function paging(req: { limit?: number; offset?: number }, max: number, code: 'CMD_ERR_INVALID' | 'STATUS_ERR_INVALID') {
  const limit = req.limit ?? 50;
  const offset = req.offset ?? 0;
  if (!Number.isInteger(limit) || limit < 1 || limit > max) {
    throw new HubError(code, `limit: expected an integer from 1 to ${max}, got ${limit}`, { field: 'limit' });
  }
  return { limit, offset };
}

/**
 * `fake-command`: answers the command topics from memory. Projects named `offline-*` are
 * offline; type `echo` completes with the payload as output, `fail` fails, `never` stays sent;
 * type `dead` fails `undeliverable` at once with a dead outbox row (ListDeadCommands, replay);
 * type `bad` is refused the way the real module refuses a field.
 */
export function fakeCommand(seen: Seen): ModuleProvider<Record<string, never>> {
  return {
    name: 'fake-command',
    schema: z.object({}).strict(),
    create(ctx) {
      const store = new Map<string, CommandDetail>();
      /** command_id → the outbox's last_error, newest last */
      const dead = new Map<string, string>();
      const emit = (ev: CommandEvent, d: CommandDetail) =>
        ctx.bus.publish(COMMAND.event(d.project_id, d.command_id), ev);
      return {
        start() {
          ctx.bus.subscribe<SendCommandRequest>(COMMAND.send, (req) => {
            seen.sends.push(req);
            if (req.command_type === 'bad') {
              throw new HubError('CMD_ERR_INVALID', 'command_type: must match /^[a-z0-9_.-]{1,64}$/', {
                field: 'command_type',
              });
            }
            if (req.project_id.startsWith('offline-')) {
              throw new HubError('CMD_ERR_PROJECT_OFFLINE', `project ${req.project_id} is offline`);
            }
            const id = req.command_id ?? randomUUID();
            const existing = store.get(id);
            if (existing) return existing;
            const d: CommandDetail = {
              ...view(req, id),
              payload: req.payload ?? {},
              result: null,
              timings: { queue_ms: null, delivery_ms: null, execution_ms: null, total_ms: null },
            };
            store.set(id, d);
            void emit({ kind: 'state', command: d, at: Date.now() }, d);
            if (req.command_type === 'dead') {
              const failed: CommandDetail = { ...d, status: 'failed', attempts: 8, error: 'undeliverable' };
              store.set(id, failed);
              dead.set(id, 'no agent ack after 8 publishes');
              return failed;
            }
            if (req.command_type === 'echo' || req.command_type === 'fail') {
              ctx.timers.setTimeout(() => {
                const ok = req.command_type === 'echo';
                const now = Date.now();
                const result = {
                  status: ok ? ('success' as const) : ('failure' as const),
                  exit_code: ok ? 0 : 2,
                  output: JSON.stringify(req.payload ?? {}),
                  error: ok ? '' : 'it failed',
                  start_time: now - 5,
                  end_time: now,
                  duration: 5,
                  received_at: new Date(now).toISOString(),
                };
                const done: CommandDetail = {
                  ...d,
                  status: ok ? 'completed' : 'failed',
                  sent_at: d.created_at,
                  acked_at: d.created_at,
                  completed_at: new Date(now).toISOString(),
                  result,
                  timings: { queue_ms: 1, delivery_ms: 2, execution_ms: 5, total_ms: 9 },
                };
                store.set(id, done);
                void emit(
                  { kind: 'result', command: done, result, payload: done.payload, timings: done.timings, at: now },
                  done,
                );
              }, 10);
            }
            return view(req, id);
          });
          ctx.bus.subscribe<{ command_id: string }>(COMMAND.get, (req) => {
            seen.gets.push(req.command_id);
            const d = store.get(req.command_id);
            if (!d) throw new HubError('CMD_ERR_NOT_FOUND', `no command ${req.command_id}`);
            return d;
          });
          ctx.bus.subscribe<ListCommandsRequest>(COMMAND.list, (req) => {
            const statuses = req.status ? [req.status].flat() : null;
            const items = [...store.values()]
              .filter((d) => !req.project_id || d.project_id === req.project_id)
              .filter((d) => !statuses || statuses.includes(d.status))
              .reverse();
            const limit = req.limit ?? 50;
            const offset = req.offset ?? 0;
            return { items: items.slice(offset, offset + limit), total: items.length, limit, offset };
          });
          ctx.bus.subscribe<{ command_id: string }>(COMMAND.cancel, (req) => {
            const d = store.get(req.command_id);
            if (!d) throw new HubError('CMD_ERR_NOT_FOUND', `no command ${req.command_id}`);
            if (d.status !== 'pending') {
              throw new HubError('CMD_ERR_NOT_CANCELLABLE', `command ${d.command_id} is ${d.status}`);
            }
            const c: CommandDetail = { ...d, status: 'cancelled', error: 'cancelled by caller' };
            store.set(d.command_id, c);
            return c;
          });
          ctx.bus.subscribe<{ limit?: number; offset?: number }>(COMMAND.deadList, (req) => {
            seen.admin.push({ topic: COMMAND.deadList, req });
            const { limit, offset } = paging(req, 500, 'CMD_ERR_INVALID');
            const items = [...dead].reverse().map(([id, last_error]) => ({ ...strip(store.get(id)!), last_error }));
            return { items: items.slice(offset, offset + limit), total: items.length, limit, offset };
          });
          ctx.bus.subscribe<{ command_id: string }>(COMMAND.deadReplay, (req) => {
            seen.admin.push({ topic: COMMAND.deadReplay, req });
            const d = store.get(req.command_id);
            if (!d) throw new HubError('CMD_ERR_NOT_FOUND', `no command ${req.command_id}`);
            if (!dead.delete(req.command_id)) {
              throw new HubError('CMD_ERR_INVALID', `command_id: command ${d.command_id} is not dead`, {
                field: 'command_id',
              });
            }
            const again: CommandDetail = { ...d, status: 'pending', attempts: 0, error: null };
            store.set(d.command_id, again);
            return strip(again);
          });
        },
      };
    },
  };
}

/** A CommandView out of a CommandDetail, as the real module answers list and replay. */
function strip(d: CommandDetail): CommandView {
  const { payload: _p, result: _r, timings: _t, ...v } = d;
  return v;
}

export function projectView(id: string, state: ProjectView['state'] = 'online'): ProjectView {
  return {
    project_id: id,
    name: `name of ${id}`,
    enabled: true,
    state,
    state_since: new Date().toISOString(),
    last_heartbeat_at: null,
    instance_id: state === 'online' ? `node-host-1` : null,
    agent_version: '1.2.3',
    metrics: state === 'online' ? { cpu: 0.5 } : null,
    last_alert: null,
    created_at: new Date().toISOString(),
    registration: null,
    rejected_uplinks: 0,
    last_rejected: null,
  };
}

/** `fake-status`: projects in memory; `p-online` is online, `p-quiet` offline. */
export function fakeStatus(seen: Seen): ModuleProvider<Record<string, never>> {
  return {
    name: 'fake-status',
    schema: z.object({}).strict(),
    create(ctx) {
      const projects = new Map<string, ProjectView>([
        ['p-online', projectView('p-online')],
        ['p-quiet', projectView('p-quiet', 'offline')],
      ]);
      return {
        start() {
          ctx.bus.subscribe<CreateProjectRequest>(STATUS.create, (req) => {
            seen.creates.push(req);
            const id = req.project_id ?? `p-${randomUUID().slice(0, 8)}`;
            if (projects.has(id)) throw new HubError('STATUS_ERR_EXISTS', `project "${id}" already exists`);
            projects.set(id, { ...projectView(id, 'offline'), name: req.name ?? null });
            return { project_id: id, secret: 's3cret', mqtt_username: id, mqtt_password: 'pw' };
          });
          ctx.bus.subscribe<{ project_id: string }>(STATUS.get, (req) => {
            const p = projects.get(req.project_id);
            if (!p) throw new HubError('STATUS_ERR_NOT_FOUND', `no project ${JSON.stringify(req.project_id)}`);
            return p;
          });
          ctx.bus.subscribe(STATUS.list, () => ({ items: [...projects.values()], total: projects.size }));
          ctx.bus.subscribe(STATUS.online, () => ({
            items: [...projects.values()].filter((p) => p.state === 'online'),
          }));
          const known = (id: string) => {
            const p = projects.get(id);
            if (!p) throw new HubError('STATUS_ERR_NOT_FOUND', `no project ${JSON.stringify(id)}`);
            return p;
          };
          for (const op of ['disable', 'enable'] as const) {
            ctx.bus.subscribe<{ project_id: string }>(STATUS[op], (req) => {
              seen.admin.push({ topic: STATUS[op], req });
              const p = known(req.project_id);
              const next: ProjectView = {
                ...p,
                enabled: op === 'enable',
                state: op === 'disable' ? 'offline' : p.state,
              };
              projects.set(p.project_id, next);
              return next;
            });
          }
          let rotations = 0;
          ctx.bus.subscribe<{ project_id: string; overlap_s?: number }>(STATUS.rotate, (req) => {
            seen.admin.push({ topic: STATUS.rotate, req });
            known(req.project_id);
            if (req.overlap_s !== undefined && req.overlap_s > 30 * 86_400) {
              throw new HubError('STATUS_ERR_INVALID', 'overlap_s: Too big: expected number to be <=2592000', {
                field: 'overlap_s',
              });
            }
            rotations++;
            return {
              project_id: req.project_id,
              secret: `s3cret-${rotations}`,
              mqtt_username: req.project_id,
              mqtt_password: `pw-${rotations}`,
            };
          });
        },
      };
    },
  };
}

// ─── client ──────────────────────────────────────────────────────────────────────────────

const pkgDef = loadSync(PROTO_FILE, { ...LOADER_OPTIONS, includeDirs: [protoRoot()] });
const loaded = grpc.loadPackageDefinition(pkgDef) as unknown as {
  exchangehub: { v1: { ExchangeHub: grpc.ServiceClientConstructor } };
};
export const ExchangeHubClient = loaded.exchangehub.v1.ExchangeHub;

export type Msg = Record<string, unknown>;

/** Calls a unary method; rejects with the ServiceError (code, details, metadata). */
export function call<R = Msg>(
  client: grpc.Client,
  method: string,
  req: Msg,
  opts: { token?: string; deadlineMs?: number } = {},
): Promise<R> {
  const md = new grpc.Metadata();
  if (opts.token) md.set('authorization', `Bearer ${opts.token}`);
  const callOpts: grpc.CallOptions = opts.deadlineMs ? { deadline: Date.now() + opts.deadlineMs } : {};
  return new Promise((resolve, reject) => {
    const fn = (client as unknown as Record<string, (...a: unknown[]) => unknown>)[method].bind(client);
    fn(req, md, callOpts, (err: grpc.ServiceError | null, res: R) => (err ? reject(err) : resolve(res)));
  });
}

/** Expects a call to fail with `code`; returns the error for more checks. */
export async function fails(p: Promise<unknown>, code: grpc.status): Promise<grpc.ServiceError> {
  try {
    await p;
  } catch (err) {
    const e = err as grpc.ServiceError;
    if (e.code !== code) {
      throw new Error(`expected ${grpc.status[code]}, got ${grpc.status[e.code]}: ${e.details}`);
    }
    return e;
  }
  throw new Error(`expected ${grpc.status[code]}, but the call succeeded`);
}

export interface Hub {
  th: TestHost;
  seen: Seen;
  port: number;
  client: grpc.Client;
  /** A new client on its own connection (closed by stop()). */
  newClient(): grpc.Client;
  stats(): Promise<GrpcStats>;
  stop(): Promise<void>;
}

/** Starts a host with the grpc module (port 0 unless `grpcSettings` says otherwise) and the fakes. */
export async function startHub(
  grpcSettings: Record<string, unknown> = {},
  opts: {
    fakes?: ('command' | 'status')[];
    /** More modules: each provider is registered and gets a `<name>: <block>` line. */
    extra?: { provider: ModuleProvider<Record<string, never>>; block?: Record<string, unknown> }[];
    /** The host's logger (silent unless given), e.g. test/fixtures/capture-log.ts. */
    log?: Logger;
  } = {},
): Promise<Hub> {
  const seen: Seen = { sends: [], creates: [], gets: [], admin: [] };
  const fakes = opts.fakes ?? ['command', 'status'];
  const extra = opts.extra ?? [];
  const registry = new ProviderRegistry().register(grpcProvider);
  if (fakes.includes('command')) registry.register(fakeCommand(seen));
  if (fakes.includes('status')) registry.register(fakeStatus(seen));
  for (const e of extra) registry.register(e.provider);
  const settings = { port: 0, stop_grace_ms: 500, ...grpcSettings };
  const yaml = [
    'modules:',
    ...fakes.map((f) => `  fake-${f}: {}`),
    ...extra.map((e) => `  ${e.provider.name}: ${JSON.stringify(e.block ?? {})}`),
    `  grpc: ${JSON.stringify(settings)}`,
  ].join('\n');
  const th = await startHost(yaml, registry, { log: opts.log });
  const stats = () => th.host.bus.request<GrpcStats>(GRPC.stats, {}, { timeoutMs: scaled(2000) });
  const { port } = await stats();
  const clients: grpc.Client[] = [];
  const newClient = () => {
    // each client its own connection: grpc-js would otherwise share one subchannel between them
    const c = new ExchangeHubClient(`127.0.0.1:${port}`, grpc.credentials.createInsecure(), {
      'grpc.use_local_subchannel_pool': 1,
    });
    clients.push(c);
    return c;
  };
  const client = newClient();
  return {
    th,
    seen,
    port,
    client,
    newClient,
    stats,
    async stop() {
      for (const c of clients) c.close();
      await th.stop();
    },
  };
}

/** Publishes a status change as the status module would. */
export function statusEvent(hub: Hub, projectId: string, state: ProjectView['state'], reason = 'test'): void {
  const ev: StatusChangedEvent = { project_id: projectId, state, previous: 'offline', reason, at: Date.now() };
  void hub.th.host.bus.publish(STATUS.changed(projectId), ev);
}

/** Publishes a log chunk of a command as the command module would. */
export function logEvent(hub: Hub, projectId: string, commandId: string, seq: number, content = `line ${seq}`): void {
  const ev: CommandEvent = { kind: 'log', project_id: projectId, command_id: commandId, seq, content, at: Date.now() };
  void hub.th.host.bus.publish(COMMAND.event(projectId, commandId), ev);
}

/** Opens a WatchEvents stream. */
export function watch(client: grpc.Client, req: Msg, token?: string): grpc.ClientReadableStream<Msg> {
  const md = new grpc.Metadata();
  if (token) md.set('authorization', `Bearer ${token}`);
  const c = client as unknown as { WatchEvents(req: Msg, md: grpc.Metadata): grpc.ClientReadableStream<Msg> };
  return c.WatchEvents(req, md);
}
