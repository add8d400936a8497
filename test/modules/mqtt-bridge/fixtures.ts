import { randomBytes } from 'node:crypto';
import { z } from 'zod';
import type { Bus, BusMessage } from '../../../core/bus.js';
import { HubError } from '../../../core/errors.js';
import type { ModuleProvider } from '../../../core/module.js';
import { ProviderRegistry } from '../../../core/registry.js';
import { BRIDGE, type BridgeStateEvent } from '../../../modules/mqtt-bridge/contract/topics.js';
import { provider } from '../../../modules/mqtt-bridge/index.js';
import { buildData } from '../../../modules/shared/protocol.js';
import { STATUS } from '../../../modules/status/contract/topics.js';
import { startPrivateMosquitto } from '../../helpers/mosquitto.js';
import { startTestBroker, type TestBroker } from '../../helpers/mqtt.js';
import { until } from '../../helpers/wait.js';

/** The secret the stand-in status module gives every project (sign test uplinks with it). */
export const TEST_SECRET = 'secret';

/**
 * A stand-in for the status module's credentials (the bridge verifies every uplink against
 * them): every project is provisioned and enabled with TEST_SECRET, except ids starting with
 * `unknown-` (not provisioned) and `disabled-` (disabled).
 */
export const credentialsProvider: ModuleProvider<Record<string, never>> = {
  name: 'test-credentials',
  schema: z.object({}).strict(),
  create: (ctx) => ({
    start() {
      ctx.bus.subscribe(STATUS.credentials, (body) => {
        const id = String((body as { project_id?: unknown })?.project_id);
        if (id.startsWith('unknown-')) throw new HubError('STATUS_ERR_NOT_FOUND', `no project ${id}`);
        return { project_id: id, enabled: !id.startsWith('disabled-'), state: 'online', secrets: [TEST_SECRET] };
      });
    },
  }),
};

export const registry = (): ProviderRegistry => new ProviderRegistry().register(provider).register(credentialsProvider);

/** A client id no other test (or earlier run) uses, so persistent sessions never mix. */
export const uniqueId = (what: string): string => `t-${what}-${randomBytes(5).toString('hex')}`;

/** config.yml with one bridge module named `bridge` (YAML is a superset of JSON). */
export function bridgeYaml(settings: Record<string, unknown>, extraModules = '', firstModules = ''): string {
  return `modules:\n${firstModules}  status: { provider: test-credentials }\n  bridge: ${JSON.stringify({ provider: 'mqtt-bridge', ...settings })}\n${extraModules}`;
}

/** Fast reconnects for tests; everything else at its default. */
export const FAST = { reconnect_min_ms: 20, reconnect_max_ms: 200 };

/** Records every bus event matching `pattern` through its own mailbox. */
export function probe<P = unknown>(bus: Bus, pattern: string) {
  const events: BusMessage<P>[] = [];
  bus.mailbox(uniqueId('probe')).subscribe(pattern, (_p, msg) => {
    events.push(msg as BusMessage<P>);
  });
  return {
    events,
    payloads: () => events.map((e) => e.payload),
    /** Waits until an event satisfies `pred`, returns it. */
    async next(pred: (m: BusMessage<P>) => boolean, ms: number, what: string): Promise<BusMessage<P>> {
      let found: BusMessage<P> | undefined;
      await until(
        () => {
          found = events.find(pred);
          return found !== undefined;
        },
        ms,
        what,
      );
      return found!;
    },
  };
}

export function stateProbe(bus: Bus) {
  const p = probe<BridgeStateEvent>(bus, BRIDGE.state);
  return { ...p, states: () => p.events.map((e) => e.payload.state) };
}

export interface BrokerCase {
  name: string;
  /** A broker for one test; `done` releases it (and forgets the sessions named). */
  open(): Promise<{ url: string; done(clientIds?: string[]): Promise<void>; broker?: TestBroker }>;
}

/** The embedded aedes broker and the machine's Mosquitto: every feature is tested on both. */
const BRIDGE_TEST_USER = 'bridge-test';
const BRIDGE_TEST_PASSWORD = 'bridge-test-password';

export const BROKERS: BrokerCase[] = [
  {
    name: 'embedded aedes',
    async open() {
      const broker = await startTestBroker();
      return { url: broker.url, broker, done: () => broker.close() };
    },
  },
  {
    name: 'mosquitto',
    // a private Mosquitto, not the machine's: the bridge subscribes to the protocol's fixed topics,
    // so on a shared broker every other test's agents (e2e hubs, fuzzers) reach it too, and a test
    // counting exactly its own rejections or uplinks sees theirs as well (a CI run failed so)
    async open() {
      const m = await startPrivateMosquitto({ [BRIDGE_TEST_USER]: BRIDGE_TEST_PASSWORD });
      const url = m.tcpUrl.replace('mqtt://', `mqtt://${BRIDGE_TEST_USER}:${BRIDGE_TEST_PASSWORD}@`);
      return { url, done: () => m.stop() };
    },
  },
];

export { forgetSessions } from '../../helpers/mqtt.js';

export const heartbeat = (projectId: string, extra: Record<string, unknown> = {}) =>
  JSON.stringify(buildData(projectId, 'heartbeat', { uptime_s: 1, metrics: { cpu: 0.5 }, ...extra }));

/**
 * `recorder`: a module that records every event on `pattern` into `sink` from the moment the host
 * starts it (list it before the bridge in config.yml to see the bridge's first events).
 */
export function recorderProvider(sink: BusMessage[]): ModuleProvider<{ pattern: string }> {
  return {
    name: 'recorder',
    schema: z.object({ pattern: z.string() }).strict(),
    create: (ctx) => ({
      start() {
        ctx.bus.subscribe(ctx.config.pattern, (_p, msg) => {
          sink.push(msg);
        });
      },
    }),
  };
}
