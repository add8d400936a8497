/**
 * Domain events through real processes (issue 16): a hub on Mosquitto + PostgreSQL with three
 * outbox routes (a webhook, an MQTT topic, and a fragile webhook that gives up at once), an HTTP
 * webhook receiver process and an MQTT consumer process. A command's completion and a project's
 * state change reach both exactly once per event id, also when the receiver answers 500 for a
 * while and when the hub is killed (SIGKILL) between the commit and the publish; a dead event is
 * listed and replayed; a route to an unknown event type stops the start with the key named.
 */
import assert from 'node:assert/strict';
import { type ChildProcess, spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { createInterface } from 'node:readline';
import { after, before, describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import * as grpc from '@grpc/grpc-js';
import { runCli } from '../bootstrap/cli-harness.js';
import { HostProcess, writeTempConfig } from '../helpers/process.js';
import { scaled, until, withTimeout } from '../helpers/wait.js';
import { call, ExchangeHubClient, fails } from '../modules/grpc/harness.js';
import { type Agent, Hub, type Json, type Provisioned, T, uniqueId } from './harness.js';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const SECRET = 'e2e-outbox-webhook-secret';
const ALL = ['command.completed', 'command.failed', 'command.timeout', 'project.online', 'project.offline'];

/** A test process that prints one JSON object per line. */
class LineProcess {
  readonly lines: Json[] = [];
  private readonly proc: ChildProcess;
  private readonly exited: Promise<void>;

  constructor(script: string, args: string[]) {
    this.proc = spawn(process.execPath, [path.join(HERE, script), ...args], { stdio: ['ignore', 'pipe', 'inherit'] });
    createInterface({ input: this.proc.stdout! }).on('line', (l) => this.lines.push(JSON.parse(l)));
    this.exited = new Promise((r) => this.proc.once('exit', () => r()));
  }

  async first(pred: (l: Json) => boolean, what: string): Promise<Json> {
    await until(() => this.lines.some(pred), T, what);
    return this.lines.find(pred);
  }

  /** Events the consumer processed (deduplicated on the event id) matching `pred`. */
  events(pred: (l: Json) => boolean): Json[] {
    return this.lines.filter((l) => l.event_id && !l.duplicate && pred(l));
  }

  /** Every delivery matching `pred`, repeats included (at-least-once: a repeat is possible, dropped by the consumer). */
  deliveries(pred: (l: Json) => boolean): Json[] {
    return this.lines.filter((l) => l.event_id && pred(l));
  }

  async stop(): Promise<void> {
    if (this.proc.exitCode === null && this.proc.signalCode === null) this.proc.kill('SIGTERM');
    await this.exited;
  }
}

/** Every delivery carries its event id in the header / user property too, so a consumer can dedupe before parsing. */
function oncePerId(p: LineProcess, what: string): void {
  for (const l of p.deliveries(() => true))
    assert.equal(l.header_id, l.event_id, `${what}: header/user property carries the event id`);
}

async function eventually<T>(read: () => Promise<T>, ok: (v: T) => boolean, what: string): Promise<T> {
  const deadline = Date.now() + scaled(T);
  for (;;) {
    const v = await read();
    if (ok(v)) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}; last: ${JSON.stringify(v)}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

describe('outbox: domain events to a webhook and an MQTT consumer (Mosquitto + PostgreSQL)', () => {
  let hub: Hub;
  let hook: LineProcess;
  let fragile: LineProcess;
  let mqttConsumer: LineProcess;
  let fragileUrl = '';
  let project: Provisioned;
  let agent: Agent;
  const prefix = uniqueId('events');

  before(async () => {
    hub = await Hub.create('server');
    hook = new LineProcess('outbox-webhook-receiver.js', [SECRET, '3']); // 500 to the first three
    fragile = new LineProcess('outbox-webhook-receiver.js', [SECRET, 'always']);
    mqttConsumer = new LineProcess('outbox-mqtt-consumer.js', [hub.brokerUrl, `${prefix}/#`]);
    const hookPort = (await hook.first((l) => l.listening, 'webhook receiver listening')).listening;
    const fragilePort = (await fragile.first((l) => l.listening, 'fragile receiver listening')).listening;
    await mqttConsumer.first((l) => l.subscribed, 'mqtt consumer subscribed');
    fragileUrl = `http://127.0.0.1:${fragilePort}`;
    const webhook = (url: string) => ({ type: 'webhook', url, secret: SECRET, timeout_ms: 4_000 });
    const cfg = JSON.parse(fs.readFileSync(hub.file, 'utf8'));
    cfg.modules.grpc = { port: 0 };
    cfg.outbox = {
      poll_interval_ms: 100,
      lease_ms: 6_000,
      routes: {
        hook: {
          events: ALL,
          destination: webhook(`http://127.0.0.1:${hookPort}/hook`),
          backoff: { initial_ms: 100, max_ms: 400 },
          max_attempts: 50,
        },
        bus: {
          events: ALL,
          destination: { type: 'mqtt', url: hub.brokerUrl, topic: `${prefix}/{event_type}/{key}`, timeout_ms: 4_000 },
          backoff: { initial_ms: 100, max_ms: 400 },
        },
        fragile: {
          events: ['command.completed'],
          destination: webhook(`${fragileUrl}/hook`),
          backoff: { initial_ms: 50, max_ms: 100 },
          max_attempts: 2,
        },
      },
    };
    fs.writeFileSync(hub.file, JSON.stringify(cfg, null, 2));
    await hub.start();
    project = await hub.provision('outbox');
    agent = hub.newAgent(project);
    await agent.start();
    await hub.waitState(project.project_id, 'online');
  });

  after(async () => {
    await agent?.dispose();
    await hub?.dispose();
    await Promise.all([hook?.stop(), fragile?.stop(), mqttConsumer?.stop()]);
  });

  const ofCommand = (id: string) => (l: Json) =>
    l.event_type === 'command.completed' && l.data?.command?.command_id === id;

  test("a project's state change and a command's completion reach both, once per event id, past a receiver's 500s", async () => {
    const pid = project.project_id;
    const sync = await hub.api('POST', '/command/sync', { project_id: pid, command_type: 'echo', payload: { n: 1 } });
    assert.equal(sync.status, 200, JSON.stringify(sync.json));
    const id: string = sync.json.command_id;
    const online = (l: Json) => l.event_type === 'project.online' && l.key === pid;

    await until(() => hook.events(online).length > 0 && hook.events(ofCommand(id)).length > 0, T, 'webhook events');
    await until(
      () => mqttConsumer.events(online).length > 0 && mqttConsumer.events(ofCommand(id)).length > 0,
      T,
      'mqtt events',
    );
    assert.ok(hook.lines.filter((l) => l.refused).length >= 3, 'the receiver refused the first deliveries');
    for (const [who, p] of [
      ['webhook', hook],
      ['mqtt', mqttConsumer],
    ] as const) {
      assert.equal(p.events(online).length, 1, `${who}: project.online once`);
      assert.equal(p.events(ofCommand(id)).length, 1, `${who}: command.completed once`);
      oncePerId(p, who);
    }
    assert.ok(
      hook.events(() => true).every((l) => l.signed),
      'every webhook signature verifies',
    );
    // one event, one id on every route
    assert.equal(hook.events(ofCommand(id))[0].event_id, mqttConsumer.events(ofCommand(id))[0].event_id);
    const done = hook.events(ofCommand(id))[0].data;
    assert.equal(done.command.status, 'completed');
    assert.deepEqual(JSON.parse(done.result.output), { n: 1 });
    assert.equal(typeof done.timings.total_ms, 'number');
    assert.equal(mqttConsumer.events(ofCommand(id))[0].topic, `${prefix}/command.completed/${pid}`);

    // the receiver may see an event a moment before the relay marks it published: wait for the count
    const value = (metrics: string, name: string) =>
      Number(new RegExp(`^${name} (\\S+)$`, 'm').exec(metrics)?.[1] ?? Number.NaN);
    const metrics = await eventually(
      async () => (await fetch(`${hub.base}/metrics`)).text(),
      (m) => value(m, 'hub_outbox_published_total\\{route="hook"\\}') >= 2,
      'published counted',
    );
    assert.ok(value(metrics, 'hub_outbox_retried_total\\{route="hook"\\}') >= 3, 'retries counted');
    assert.ok(Number.isFinite(value(metrics, 'hub_outbox_lag_seconds\\{route="bus"\\}')), 'lag exposed');
    assert.equal(value(metrics, 'hub_outbox_dead\\{route="hook"\\}'), 0);
  });

  test('a hub killed between the commit and the publish delivers the event after restart, once', async () => {
    const pid = project.project_id;
    assert.equal((await hub.stop()).code, 0);
    // only at a command event: what the graceful stop left pending goes out first, unharmed
    await hub.start({ HUB_CRASH_POINT: 'outbox.before_publish:command.completed' });
    await hub.waitBack(pid);
    const sent = await hub.api('POST', '/command/send', { project_id: pid, command_type: 'echo', payload: { n: 2 } });
    assert.equal(sent.status, 202);
    const id: string = sent.json.command_id;
    const exit = await withTimeout(hub.proc.exited, T, 'the hub killing itself at the crash point');
    assert.equal(exit.signal, 'SIGKILL', 'it killed itself holding a committed, unpublished event');
    assert.equal(hook.events(ofCommand(id)).length + mqttConsumer.events(ofCommand(id)).length, 0);

    await hub.start();
    const done = await hub.waitCommand(id);
    assert.equal(done.status, 'completed');
    await until(
      () => hook.events(ofCommand(id)).length > 0 && mqttConsumer.events(ofCommand(id)).length > 0,
      T,
      'the event after the restart (once the dead process’s lease ended)',
    );
    for (const [who, p] of [
      ['webhook', hook],
      ['mqtt', mqttConsumer],
    ] as const) {
      // never published before the kill, so even without deduplication it arrives once
      assert.equal(p.deliveries(ofCommand(id)).length, 1, `${who}: once`);
      oncePerId(p, who);
    }
  });

  test("a project's state change survives a hub killed between the commit and the publish, once", async () => {
    const pid = project.project_id;
    const offline = (l: Json) => l.event_type === 'project.offline' && l.key === pid;
    await hub.waitBack(pid);
    assert.equal((await hub.stop()).code, 0);
    await hub.start({ HUB_CRASH_POINT: 'outbox.before_publish:project.offline' });
    await hub.waitBack(pid);
    // earlier restarts may have sent this project offline before: look only at what comes from now on
    const marks = new Map<LineProcess, number>([
      [hook, hook.lines.length],
      [mqttConsumer, mqttConsumer.lines.length],
    ]);
    const after = (p: LineProcess) => p.lines.slice(marks.get(p)).filter((l) => l.event_id && offline(l));
    const seen = after(hook).length + after(mqttConsumer).length;
    await agent.stop(); // a graceful goodbye: the project goes offline
    const exit = await withTimeout(hub.proc.exited, T, 'the hub killing itself at the crash point (project.offline)');
    assert.equal(exit.signal, 'SIGKILL', 'it killed itself holding the committed, unpublished project.offline');
    assert.equal(after(hook).length + after(mqttConsumer).length, seen);

    await hub.start();
    await until(() => after(hook).length > 0 && after(mqttConsumer).length > 0, T, 'project.offline after the restart');
    for (const [who, p] of [
      ['webhook', hook],
      ['mqtt', mqttConsumer],
    ] as const) {
      const ids = after(p).map((l) => l.event_id);
      assert.equal(new Set(ids).size, ids.length, `${who}: each project.offline once, never published before the kill`);
      assert.ok(after(p).some((l) => l.data.previous !== 'offline'));
      oncePerId(p, who);
    }
    await agent.start();
    await hub.waitState(pid, 'online');
  });

  test('an event dead on a route is listed and, replayed, delivered', async () => {
    const pid = project.project_id;
    await hub.waitBack(pid); // the restart above may have let its presence lapse
    const sync = await hub.api('POST', '/command/sync', { project_id: pid, command_type: 'echo', payload: { n: 3 } });
    assert.equal(sync.status, 200);
    const id: string = sync.json.command_id;
    const listed = await eventually(
      () => hub.api('GET', '/outbox/dead?route=fragile'),
      (r) => r.json?.items?.some((e: Json) => e.envelope.data.command.command_id === id),
      'the fragile route’s dead event',
    );
    const dead = listed.json.items.find((e: Json) => e.envelope.data.command.command_id === id);
    assert.equal(dead.route, 'fragile');
    assert.equal(dead.attempts, 2);
    assert.match(dead.last_error, /answered 500/);
    assert.equal(fragile.events(() => true).length, 0);
    // the same list through the CLI and gRPC
    const cli = await runCli(['outbox', 'dead', '--route', 'fragile', '--json', '--url', hub.base], {});
    assert.equal(cli.code, 0, cli.stderr);
    assert.ok(JSON.parse(cli.stdout).items.some((e: Json) => e.event_id === dead.event_id));
    const grpcPort = Number(
      (await hub.proc.waitFor((l) => l.msg === 'gRPC server listening', T, 'gRPC listening')).port,
    );
    const client = new ExchangeHubClient(`127.0.0.1:${grpcPort}`, grpc.credentials.createInsecure());
    try {
      const page = await call<Json>(client, 'ListDeadEvents', { route: 'fragile' });
      const viaGrpc = page.items.find((e: Json) => e.event_id === dead.event_id);
      assert.equal(JSON.parse(viaGrpc.envelope_json).data.command.command_id, id);
      await fails(call(client, 'ListDeadEvents', { route: 'nope' }), grpc.status.NOT_FOUND);
      await fails(call(client, 'ReplayDeadEvent', { event_id: 'x' }), grpc.status.INVALID_ARGUMENT);
    } finally {
      client.close();
    }

    await fetch(`${fragileUrl}/control`, { method: 'POST', body: JSON.stringify({ fail: 0 }) });
    const replay = await hub.api('POST', `/outbox/dead/${dead.event_id}/replay`, {});
    assert.equal(replay.status, 200, JSON.stringify(replay.json));
    assert.deepEqual(replay.json.routes, ['fragile']);
    await until(() => fragile.events((l) => l.event_id === dead.event_id).length > 0, T, 'the replayed event');
    assert.equal(fragile.events((l) => l.event_id === dead.event_id).length, 1);
    assert.ok(fragile.events(() => true).every((l) => l.signed));
    assert.equal((await hub.api('POST', `/outbox/dead/${dead.event_id}/replay`, {})).status, 404, 'no longer dead');
    const again = await runCli(['outbox', 'replay', dead.event_id, '--url', hub.base], {});
    assert.notEqual(again.code, 0);
    assert.match(again.stderr, /OUTBOX_ERR_NOT_FOUND/);
  });
});

describe('outbox config at start', () => {
  test('a route naming an unknown event type stops the start with the key named', async () => {
    const tmp = writeTempConfig(
      'outbox-unknown',
      `outbox:
  routes:
    lake:
      events: [command.completed, job.finished]
      destination: { type: webhook, url: "http://127.0.0.1:9/", secret: "${SECRET}" }
modules: {}
`,
    );
    try {
      const p = new HostProcess(tmp.file);
      const exit = await p.exited;
      assert.equal(exit.code, 1);
      const said = [...p.stderr, ...p.lines.map((l) => JSON.stringify(l))].join('\n');
      assert.match(said, /outbox\.routes\.lake\.events\[1\]/);
      assert.match(said, /job\.finished/);
    } finally {
      tmp.cleanup();
    }
  });
});
