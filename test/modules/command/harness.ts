/**
 * A real host running the command module on a real database (PGlite or PostgreSQL), with small
 * stand-ins for the modules it talks to over the bus: `status` (STATUS.credentials from a map the
 * test owns) and `mqtt-bridge` (BRIDGE.publish recorded; per project it plays the agent: acks,
 * answers with a result, stays silent or fails the publish).
 */
import { z } from 'zod';
import { HubError } from '../../../core/errors.js';
import { createRootLogger } from '../../../core/log.js';
import type { ModuleProvider } from '../../../core/module.js';
import { ProviderRegistry } from '../../../core/registry.js';
import type { DbConfig } from '../../../core/services/db.js';
import {
  COMMAND,
  type CommandDetail,
  type CommandEvent,
  type CommandView,
  type SendCommandRequest,
} from '../../../modules/command/contract/topics.js';
import { provider as commandProvider } from '../../../modules/command/index.js';
import { BRIDGE, type MqttPublishRequest } from '../../../modules/mqtt-bridge/contract/topics.js';
import {
  buildData,
  type CommandMessage,
  commandDownTopic,
  parseDownlink,
  TOPIC_MESSAGE_UP,
} from '../../../modules/shared/protocol.js';
import {
  type PresenceState,
  type ProjectCredentials,
  STATUS,
  type StatusChangedEvent,
} from '../../../modules/status/contract/topics.js';
import { preparePgliteTemplate, tempPgliteConfig, withPgSchema } from '../../helpers/db.js';
import { startHost, type TestHost } from '../../helpers/host.js';
import { scaled, until } from '../../helpers/wait.js';

/** How the fake agent behind the fake bridge answers a project's commands. */
export type AgentMode = 'auto' | 'ack' | 'silent' | 'fail-publish';

export interface Published {
  topic: string;
  payload: string;
  msg: CommandMessage;
  at: number;
}

export interface World {
  projects: Map<string, ProjectCredentials>;
  modes: Map<string, AgentMode>;
  published: Published[];
  events: CommandEvent[];
  /** Message ids the fake agent has executed (a real agent de-duplicates by message_id). */
  executed: Set<string>;
}

export function newWorld(): World {
  return { projects: new Map(), modes: new Map(), published: [], events: [], executed: new Set() };
}

const empty = z.object({}).strict();

function fakeStatus(w: World): ModuleProvider<object> {
  return {
    name: 'fake-status',
    schema: empty,
    create: (ctx) => ({
      start() {
        ctx.bus.subscribe(STATUS.credentials, (p) => {
          const id = (p as { project_id?: string }).project_id ?? '';
          const c = w.projects.get(id);
          if (!c) throw new HubError('STATUS_ERR_NOT_FOUND', `no project ${id}`);
          return c;
        });
      },
    }),
  };
}

/** Data uplink event as the real bridge publishes it. */
export function uplink(projectId: string, secret: string, dataType: string, payload: unknown) {
  return {
    topic: BRIDGE.uplink(projectId, 'data', dataType),
    event: {
      msg: buildData(projectId, dataType, payload, { secret }),
      topic: TOPIC_MESSAGE_UP,
      received_at: Date.now(),
    },
  };
}

export function execResult(commandId: string, status: 'success' | 'failure' | 'timeout' = 'success', output = 'ok') {
  const end = Date.now();
  return {
    command_id: commandId,
    status,
    exit_code: status === 'success' ? 0 : 1,
    output,
    error: status === 'success' ? '' : 'boom',
    start_time: end - 7,
    end_time: end,
    duration: 7,
  };
}

function fakeBridge(w: World): ModuleProvider<object> {
  return {
    name: 'fake-bridge',
    schema: empty,
    create: (ctx) => ({
      start() {
        ctx.bus.subscribe(BRIDGE.publish, (p) => {
          const req = p as MqttPublishRequest;
          const parsed = parseDownlink(req.topic, req.payload);
          if (!parsed.ok || parsed.value.kind !== 'command') throw new Error(`bad downlink: ${JSON.stringify(parsed)}`);
          const msg = parsed.value.msg;
          const pid = msg.project_id;
          const mode = w.modes.get(pid) ?? 'auto';
          if (mode === 'fail-publish') throw new HubError('BUS_ERR_HANDLER', 'broker unreachable');
          w.published.push({ topic: req.topic, payload: req.payload, msg, at: Date.now() });
          const secret = w.projects.get(pid)?.secrets[0] ?? 'x';
          const send = (type: string, payload: unknown) => {
            const u = uplink(pid, secret, type, payload);
            void ctx.bus.publish(u.topic, u.event);
          };
          if (mode === 'auto' || mode === 'ack') send('command_ack', { command_id: msg.message_id });
          if (mode === 'auto' && !w.executed.has(msg.message_id)) {
            w.executed.add(msg.message_id);
            const wanted = (msg.payload as { result?: 'success' | 'failure' } | null)?.result ?? 'success';
            send('log_result', { command_id: msg.message_id, seq: 0, content: 'running' });
            send('exec_result', execResult(msg.message_id, wanted));
          }
          return { ok: true };
        });
      },
    }),
  };
}

function observer(w: World): ModuleProvider<object> {
  return {
    name: 'observer',
    schema: empty,
    create: (ctx) => ({
      start() {
        ctx.bus.subscribe(COMMAND.eventPattern, (ev) => {
          w.events.push(ev as CommandEvent);
        });
      },
    }),
  };
}

export interface Driver {
  name: 'pglite' | 'pg';
  db(): Promise<{ config: DbConfig; cleanup(): Promise<void> }>;
}

export const DRIVERS: Driver[] = [
  {
    name: 'pglite',
    db: async () => {
      await preparePgliteTemplate();
      const t = tempPgliteConfig();
      return { config: t.config, cleanup: async () => t.cleanup() };
    },
  },
  {
    name: 'pg',
    db: async () => {
      const s = await withPgSchema();
      return { config: s.config, cleanup: s.drop };
    },
  },
];

/** Settings shrunk so retries, timeouts and sweeps happen within a test's patience. */
export const FAST = {
  retry_base_ms: 40,
  retry_max_ms: 160,
  max_attempts: 4,
  relay_interval_ms: 30,
  sweep_interval_ms: 30,
};

export interface Hub {
  h: TestHost;
  w: World;
  /** The database the hub runs on (its schema, on PostgreSQL). */
  db: DbConfig;
  send(req: SendCommandRequest): Promise<CommandView>;
  get(commandId: string): Promise<CommandDetail>;
  req<T = unknown>(topic: string, payload: unknown): Promise<T>;
  project(id: string, state?: PresenceState, mode?: AgentMode, enabled?: boolean): ProjectCredentials;
  setState(id: string, state: PresenceState): void;
  waitStatus(commandId: string, pred: (d: CommandDetail) => boolean, what: string, ms?: number): Promise<CommandDetail>;
  publishedFor(commandId: string): Published[];
  stop(): Promise<void>;
}

export async function startHub(driver: Driver, settings: Record<string, unknown> = FAST): Promise<Hub> {
  const w = newWorld();
  const db = await driver.db();
  const dbYaml = Object.entries(db.config)
    .filter(([, v]) => v !== undefined)
    .map(([k, v]) => `    ${k}: ${JSON.stringify(v)}`)
    .join('\n');
  const cmd = Object.entries(settings)
    .map(([k, v]) => `    ${k}: ${JSON.stringify(v)}`)
    .join('\n');
  const yaml = `databases:\n  default:\n${dbYaml}\nmodules:\n  status:\n    provider: fake-status\n  mqtt-bridge:\n    provider: fake-bridge\n  observer:\n    provider: observer\n  command:\n    provider: command\n${cmd}\n`;
  const registry = new ProviderRegistry()
    .register(fakeStatus(w))
    .register(fakeBridge(w))
    .register(observer(w))
    .register(commandProvider);
  let h: TestHost;
  try {
    // TEST_LOG=debug shows the hub's log lines while a test runs
    const log = process.env.TEST_LOG ? createRootLogger({ level: process.env.TEST_LOG }) : undefined;
    h = await startHost(yaml, registry, { log });
  } catch (err) {
    await db.cleanup();
    throw err;
  }
  const req = <T>(topic: string, payload: unknown) =>
    h.host.bus.request<T>(topic, payload, { timeoutMs: scaled(10_000) });
  const hub: Hub = {
    h,
    w,
    db: db.config,
    req,
    send: (r) => req<CommandView>(COMMAND.send, r),
    get: (id) => req<CommandDetail>(COMMAND.get, { command_id: id }),
    project(id, state = 'online', mode = 'auto', enabled = true) {
      const c: ProjectCredentials = { project_id: id, enabled, state, secrets: [`secret-of-${id}`] };
      w.projects.set(id, c);
      w.modes.set(id, mode);
      return c;
    },
    setState(id, state) {
      const c = w.projects.get(id)!;
      const previous = c.state;
      w.projects.set(id, { ...c, state });
      const ev: StatusChangedEvent = { project_id: id, state, previous, reason: 'test', at: Date.now() };
      void h.host.bus.publish(STATUS.changed(id), ev);
    },
    async waitStatus(id, pred, what, ms = 10_000) {
      let last: CommandDetail | undefined;
      try {
        await until(
          async () => {
            last = await hub.get(id);
            return pred(last);
          },
          ms,
          what,
        );
      } catch (err) {
        throw new Error(`${(err as Error).message}; last seen: ${JSON.stringify(last)}`);
      }
      return last!;
    },
    publishedFor: (id) => w.published.filter((p) => p.msg.message_id === id),
    async stop() {
      await h.stop();
      await db.cleanup();
    },
  };
  return hub;
}

export { commandDownTopic };
