import { randomBytes } from 'node:crypto';
import type { MqttClient } from 'mqtt';
import { z } from 'zod';
import type { ModuleProvider } from '../../../core/module.js';
import { ProviderRegistry } from '../../../core/registry.js';
import { BROKER, type BrokerHubCredential, type BrokerStats } from '../../../modules/broker/contract/topics.js';
import { provider as brokerProvider } from '../../../modules/broker/index.js';
import { deriveMqttPassword } from '../../../modules/shared/credentials.js';
import { STATUS } from '../../../modules/status/contract/topics.js';
import { startHost, type TestHost } from '../../helpers/host.js';
import { connectClient } from '../../helpers/mqtt.js';
import { withTimeout } from '../../helpers/wait.js';

export interface FakeProject {
  id: string;
  secret: string;
}
export const A: FakeProject = { id: 'proj-a', secret: 'secret-of-a' };
export const B: FakeProject = { id: 'proj-b', secret: 'secret-of-b' };

/** What the fake status module was asked, and a gate to hold its answers (for timeout tests). */
export interface StatusProbe {
  calls: number;
  hold?: Promise<void>;
}

/**
 * Stands in for the status module: answers STATUS.authenticate for the provisioned projects A and
 * B the way the real one does (password = deriveMqttPassword(project_id, secret)).
 */
export function fakeStatusProvider(probe: StatusProbe): ModuleProvider<Record<string, never>> {
  return {
    name: 'fake-status',
    schema: z.object({}).strict() as unknown as z.ZodType<Record<string, never>>,
    create(ctx) {
      return {
        start() {
          ctx.bus.subscribe<{ username: string; password: string }>(STATUS.authenticate, async (p) => {
            probe.calls++;
            if (probe.hold) await probe.hold;
            const proj = [A, B].find((x) => x.id === p.username);
            const ok = !!proj && deriveMqttPassword(proj.id, proj.secret) === p.password;
            return ok ? { ok: true, project_id: proj.id } : { ok: false };
          });
        },
      };
    },
  };
}

export interface BrokerUnderTest {
  h: TestHost;
  url: string;
  cred: BrokerHubCredential;
  probe: StatusProbe;
  stats(): Promise<BrokerStats>;
  stop(): Promise<void>;
}

/** A real host running the broker module on a free loopback port, with (by default) the fake status module. */
export async function startBroker(
  settings: Record<string, unknown> = {},
  opts: { withStatus?: boolean; probe?: StatusProbe } = {},
): Promise<BrokerUnderTest> {
  const probe = opts.probe ?? { calls: 0 };
  const registry = new ProviderRegistry().register(brokerProvider).register(fakeStatusProvider(probe));
  const block = JSON.stringify({ port: 0, host: '127.0.0.1', ...settings });
  const status = opts.withStatus === false ? '' : '  status: { provider: fake-status }\n';
  const h = await startHost(`modules:\n${status}  broker: ${block}\n`, registry);
  const stats = () => h.host.bus.request<BrokerStats>(BROKER.stats, {});
  const { port } = await stats();
  const cred = await h.host.bus.request<BrokerHubCredential>(BROKER.hubCredential, {});
  return { h, url: `mqtt://127.0.0.1:${port}`, cred, probe, stats, stop: () => h.stop() };
}

export const clientId = (prefix: string): string => `${prefix}-${randomBytes(4).toString('hex')}`;

export function connectAgent(url: string, p: FakeProject, extra: Parameters<typeof connectClient>[1] = {}) {
  return connectClient(url, {
    username: p.id,
    password: deriveMqttPassword(p.id, p.secret),
    clientId: clientId(p.id),
    ...extra,
  });
}

export function connectHub(b: BrokerUnderTest, extra: Parameters<typeof connectClient>[1] = {}) {
  return connectClient(b.url, {
    username: b.cred.username,
    password: b.cred.password,
    clientId: clientId('hub'),
    ...extra,
  });
}

/** A connection attempt that must be refused: resolves with the CONNACK return code. */
export async function refusedCode(url: string, opts: Parameters<typeof connectClient>[1]): Promise<number> {
  try {
    const c = await connectClient(url, opts);
    c.end(true);
  } catch (err) {
    return (err as { code?: number }).code ?? -1;
  }
  throw new Error('connection was accepted');
}

export function subscribe(c: MqttClient, topics: string[], qos: 0 | 1 = 1): Promise<number[]> {
  return withTimeout(
    new Promise<number[]>((resolve, reject) => {
      c.subscribe(topics, { qos }, (err, granted) => {
        // mqtt.js reports a SUBACK with a 0x80 code as an error carrying the packet
        const codes = (err as { packet?: { granted?: number[] } } | null)?.packet?.granted;
        if (codes) resolve(codes);
        else if (err) reject(err);
        else resolve((granted ?? []).map((g) => g.qos));
      });
    }),
    5000,
    `SUBACK for ${topics.join(', ')}`,
  );
}

export function publish(c: MqttClient, topic: string, payload: string, qos: 0 | 1 = 1, retain = false): Promise<void> {
  return withTimeout(
    new Promise<void>((resolve, reject) =>
      c.publish(topic, payload, { qos, retain }, (err) => (err ? reject(err) : resolve())),
    ),
    5000,
    `PUBACK for ${topic}`,
  );
}

export function end(...clients: Array<MqttClient | undefined>): Promise<void> {
  return Promise.all(clients.map((c) => (c ? new Promise<void>((r) => c.end(true, {}, () => r())) : undefined))).then(
    () => undefined,
  );
}

/** An uplink message body naming a project (the ACL reads only `project_id`). */
export const uplink = (projectId: string, marker: string): string =>
  JSON.stringify({
    message_id: marker,
    type: 'message',
    project_id: projectId,
    timestamp: Date.now(),
    version: '1.0',
    data_type: 'heartbeat',
    payload: {},
  });

/** Collects every message a client receives, as `topic payload-marker`. */
export function recorder(c: MqttClient): { seen: Array<{ topic: string; marker: string }> } {
  const rec = { seen: [] as Array<{ topic: string; marker: string }> };
  c.on('message', (topic, payload) => {
    let marker = payload.toString();
    try {
      marker = JSON.parse(marker).message_id ?? marker;
    } catch {
      // not JSON: the raw text is the marker
    }
    rec.seen.push({ topic, marker });
  });
  return rec;
}
