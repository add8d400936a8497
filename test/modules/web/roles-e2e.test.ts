/**
 * Roles on tokens through the real hub process, with real agent processes, real HTTP, WebSocket
 * and gRPC clients, on both backends (embedded broker + PGlite, Mosquitto + PostgreSQL):
 * a viewer changes nothing over any interface (every mutating REST route of /openapi.json, every
 * mutating gRPC method); an operator sends and cancels but does no admin operation; a token
 * limited to some projects sees only those in lists, single reads, sends and both event feeds;
 * plain-string tokens stay admin; editing the tokens in config.yml takes effect without a restart
 * and without dropping unaffected WebSocket connections, while a revoked token's socket and
 * stream are closed with the code.
 */
import assert from 'node:assert/strict';
import { randomBytes, randomUUID } from 'node:crypto';
import fs from 'node:fs';
import { after, before, describe, test } from 'node:test';
import * as grpc from '@grpc/grpc-js';
import WebSocket from 'ws';
import { cliEnv, runCli } from '../../bootstrap/cli-harness.js';
import {
  type Agent,
  API,
  BACKEND_TITLE,
  BACKENDS,
  Hub,
  type Json,
  type Provisioned,
  T,
  uniqueId,
} from '../../e2e/harness.js';
import { freePort } from '../../helpers/process.js';
import { scaled, until } from '../../helpers/wait.js';
import { call, ExchangeHubClient, type Msg, watch } from '../grpc/harness.js';

const tok = (role: string) => `${role}-${randomBytes(12).toString('hex')}`;

/** What a WebSocket client received, and how it ended. */
class WsProbe {
  readonly frames: Json[] = [];
  closed: { code: number; reason: string } | null = null;
  private constructor(readonly ws: WebSocket) {
    ws.on('message', (d) => this.frames.push(JSON.parse(String(d))));
    ws.on('close', (code, reason) => {
      this.closed = { code, reason: String(reason) };
    });
  }

  static open(base: string, token: string): Promise<WsProbe> {
    const ws = new WebSocket(`${base.replace(/^http/, 'ws')}${API}/ws`, {
      headers: { authorization: `Bearer ${token}` },
    });
    const probe = new WsProbe(ws);
    return new Promise((resolve, reject) => {
      ws.once('open', () => resolve(probe));
      ws.once('unexpected-response', (_req, res) => reject(new Error(`upgrade refused: ${res.statusCode}`)));
      ws.once('error', reject);
    });
  }

  send(msg: Json): void {
    this.ws.send(JSON.stringify(msg));
  }

  async next(pred: (f: Json) => boolean, what: string): Promise<Json> {
    await until(() => this.frames.some(pred), scaled(T), what);
    return this.frames.find(pred);
  }

  events(): Json[] {
    return this.frames.filter((f) => f.op === 'event');
  }
}

/** A WatchEvents stream's events and its end. */
function grpcFeed(client: grpc.Client, req: Msg, token: string) {
  const events: Msg[] = [];
  const end: { err: grpc.ServiceError | null; done: boolean } = { err: null, done: false };
  const s = watch(client, req, token);
  s.on('data', (m: Msg) => events.push(m));
  s.on('error', (err: grpc.ServiceError) => {
    end.err = err;
    end.done = true;
  });
  s.on('end', () => {
    end.done = true;
  });
  return { stream: s, events, end };
}

async function grpcFails(p: Promise<unknown>): Promise<grpc.ServiceError> {
  try {
    await p;
  } catch (err) {
    return err as grpc.ServiceError;
  }
  assert.fail('expected the call to fail');
}

for (const backend of BACKENDS) {
  describe(`roles on tokens through the hub process (${BACKEND_TITLE[backend]})`, () => {
    const TOKENS = {
      admin: tok('admin'),
      viewer: tok('viewer'),
      operator: tok('operator'),
      scoped: tok('scoped'),
      scopedAdmin: tok('scoped-admin'),
      spare: tok('spare'),
      revoked: tok('revoked'),
    };
    const tokenList = (operatorRole: string, withRevoked: boolean) => [
      TOKENS.admin, // a plain string: admin, as every token was before roles
      { token: TOKENS.viewer, role: 'viewer' },
      { token: TOKENS.operator, role: operatorRole },
      { token: TOKENS.scoped, role: 'operator', projects: ['e2e-roles-a-*', 'e2e-roles-x?'] },
      { token: TOKENS.spare, role: 'viewer' },
      { token: TOKENS.scopedAdmin, role: 'admin', projects: ['e2e-roles-a-*', 'made-?'] },
      ...(withRevoked ? [{ token: TOKENS.revoked, role: 'viewer' }] : []),
    ];
    let hub: Hub;
    let grpcPort: number;
    let client: grpc.Client;
    let a: Provisioned;
    let b: Provisioned;
    let idle: Provisioned;
    let agentA: Agent;
    let agentB: Agent;
    let commandB: string;

    const writeTokens = (operatorRole: string, withRevoked: boolean) => {
      const config = JSON.parse(fs.readFileSync(hub.file, 'utf8'));
      const tokens = tokenList(operatorRole, withRevoked);
      config.modules.web = { ...config.modules.web, host: '127.0.0.1', tokens };
      config.modules.grpc = { port: grpcPort, host: '127.0.0.1', stop_grace_ms: 500, tokens };
      fs.writeFileSync(hub.file, JSON.stringify(config, null, 2));
    };

    /** A REST call with a given token (null: none). */
    const rest = async (token: string | null, method: string, p: string, body?: unknown) => {
      const res = await fetch(hub.base + p, {
        method,
        headers: {
          ...(body === undefined ? {} : { 'content-type': 'application/json' }),
          ...(token === null ? {} : { authorization: `Bearer ${token}` }),
        },
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
    };

    /** What a refusal must not have touched: projects (ids, enabled) and every command's status. */
    const snapshot = async () => {
      hub.token = TOKENS.admin;
      const projects = await hub.api('GET', '/projects?include_disabled=true&limit=1000');
      const commands = await hub.api('GET', '/commands?limit=500');
      const dead = await hub.api('GET', '/commands/dead');
      return {
        projects: (projects.json.items as Json[]).map((p) => [p.project_id, p.enabled]).sort(),
        commands: (commands.json.items as Json[]).map((c) => [c.command_id, c.status]).sort(),
        commands_total: commands.json.total,
        dead_total: dead.json.total,
      };
    };

    before(async () => {
      hub = await Hub.create(backend);
      grpcPort = await freePort();
      writeTokens('operator', true);
      await hub.start();
      hub.token = TOKENS.admin;
      client = new ExchangeHubClient(`127.0.0.1:${grpcPort}`, grpc.credentials.createInsecure());
      a = await hub.provision('roles-a');
      b = await hub.provision('roles-b');
      idle = await hub.provision('roles-idle');
      agentA = hub.newAgent(a);
      agentB = hub.newAgent(b);
      await Promise.all([agentA.start(), agentB.start()]);
      await hub.waitState(a.project_id, 'online');
      await hub.waitState(b.project_id, 'online');
      // a finished command of B (the scoped token must not see it)
      const r = await hub.api('POST', '/command/sync', {
        project_id: b.project_id,
        command_type: 'echo',
        payload: { of: 'b' },
        wait_ms: T,
      });
      assert.equal(r.status, 200, JSON.stringify(r.json));
      commandB = r.json.command_id;
    });

    after(async () => {
      client?.close();
      await agentA?.dispose();
      await agentB?.dispose();
      await hub?.dispose();
    });

    test('a viewer token changes nothing over REST: every mutating route of /openapi.json answers 403', async () => {
      const doc = (await rest(null, 'GET', '/openapi.json')).json;
      const before = await snapshot();
      const bodies: Record<string, unknown> = {
        [`${API}/command/send`]: { project_id: a.project_id, command_type: 'echo', payload: {} },
        [`${API}/command/sync`]: { project_id: a.project_id, command_type: 'echo', payload: {}, wait_ms: 1000 },
        [`${API}/projects`]: { project_id: uniqueId('viewer-made') },
      };
      const fill = (p: string) =>
        p
          .replace('{job_id}', randomUUID())
          .replace('{project_id}', a.project_id)
          .replace('{command_id}', commandB)
          .replace('{name}', 'command')
          .replace('{event_id}', randomUUID());
      const mutating: string[] = [];
      for (const [p, ops] of Object.entries(doc.paths as Record<string, Record<string, Json>>)) {
        for (const [method, op] of Object.entries(ops)) {
          if (method === 'get') {
            // reads: a viewer may, except the outbox's (event payloads of every domain) and the audit
            // trail's (who did what across the hub): admin
            if (op['x-access'] === 'public' || p.endsWith('/ws')) continue;
            const r = await rest(TOKENS.viewer, 'GET', fill(p));
            if (op['x-access'] === 'admin') {
              assert.ok(p.startsWith(`${API}/outbox/`) || p === `${API}/audit`, `${p} is an admin read`);
              assert.equal(r.status, 403, `viewer GET ${p}`);
            } else {
              assert.equal(op['x-access'], 'read', `${method} ${p} is declared read`);
              assert.ok(r.status !== 401 && r.status !== 403, `viewer GET ${p}: ${r.status} ${JSON.stringify(r.json)}`);
            }
            continue;
          }
          mutating.push(`${method.toUpperCase()} ${p}`);
          assert.ok(['operate', 'admin'].includes(op['x-access']), `${method} ${p} declares ${op['x-access']}`);
          assert.ok(op.responses['403'], `${method} ${p} documents 403`);
          const r = await rest(TOKENS.viewer, method.toUpperCase(), fill(p), bodies[p] ?? {});
          assert.equal(r.status, 403, `viewer ${method} ${p}: ${r.status} ${JSON.stringify(r.json)}`);
          assert.equal(r.json.error.code, 'AUTH_ERR_FORBIDDEN');
          assert.match(r.json.error.message, /role viewer/);
          assert.ok(!JSON.stringify(r.json).includes(TOKENS.viewer), 'the token is never echoed');
        }
      }
      // the table is the document's: at least today's ten mutating routes were tried
      assert.ok(mutating.length >= 10, `mutating routes tried: ${mutating.join(', ')}`);
      for (const known of [
        'command/send',
        'command/sync',
        '{command_id}/cancel',
        'projects',
        'modules/{name}/restart',
      ]) {
        assert.ok(
          mutating.some((m) => m.endsWith(`${API}/${known}`) || m.endsWith(known)),
          known,
        );
      }
      assert.deepEqual(await snapshot(), before, 'nothing changed');
      // counted by code, and logged with token id and role (never the token)
      const metrics = await rest(TOKENS.viewer, 'GET', '/metrics');
      const m = /hub_http_refusals_total\{code="AUTH_ERR_FORBIDDEN"\} (\d+)/.exec(String(metrics.json));
      assert.ok(m && Number(m[1]) >= mutating.length, 'refusals counted in /metrics');
      const line = hub.proc.lines.find((l) => l.code === 'AUTH_ERR_FORBIDDEN' && l.role === 'viewer');
      assert.ok(line, 'a refusal is logged');
      assert.equal(line.token_id, 'tokens[1]');
      assert.equal(line.level, 30, 'a client mistake is info, not an error');
    });

    test('the CLI says a refusal in one line with the code (exit 1); what the token may do works', async () => {
      const env = cliEnv({ HUB_URL: hub.base, HUB_API_TOKEN: TOKENS.viewer });
      const refused = await runCli(['send', a.project_id, 'echo'], env, scaled(T));
      assert.equal(refused.code, 1, refused.stderr);
      assert.equal(refused.stdout, '');
      assert.match(
        refused.stderr.trim(),
        /^gmq-hub: AUTH_ERR_FORBIDDEN: token tokens\[1\] \(role viewer\) may not .*role operator or admin.*web\.tokens/,
      );
      const read = await runCli(['status', a.project_id], env, scaled(T));
      assert.equal(read.code, 0, read.stderr);
    });

    test('a viewer token changes nothing over gRPC: every mutating method answers PERMISSION_DENIED', async () => {
      const before = await snapshot();
      const methods = Object.keys(ExchangeHubClient.service);
      const requests: Record<string, Msg> = {
        SendCommand: { project_id: a.project_id, command_type: 'echo', payload_json: '{}' },
        SendSyncCommand: { project_id: a.project_id, command_type: 'echo', payload_json: '{}', wait_ms: 1000 },
        CancelCommand: { command_id: commandB },
        CreateProject: { project_id: uniqueId('viewer-made') },
        DisableProject: { project_id: a.project_id },
        EnableProject: { project_id: a.project_id },
        RotateProjectSecret: { project_id: a.project_id },
        ReplayDeadCommand: { command_id: commandB },
        ReplayDeadEvent: { event_id: randomUUID() },
        RestartModule: { name: 'command' },
        CreateJob: { targets: { all: true }, command_type: 'echo', payload_json: '{}' },
        CancelJob: { job_id: randomUUID() },
      };
      const mutating = methods.filter((m) => !/^(Get|List|Watch)/.test(m));
      assert.deepEqual(mutating.sort(), Object.keys(requests).sort(), 'every mutating method is in the table');
      for (const m of mutating) {
        const err = await grpcFails(call(client, m, requests[m], { token: TOKENS.viewer, deadlineMs: scaled(T) }));
        assert.equal(err.code, grpc.status.PERMISSION_DENIED, `${m}: ${grpc.status[err.code]} ${err.details}`);
        assert.equal(err.metadata.get('error-code')[0], 'AUTH_ERR_FORBIDDEN', m);
      }
      const metrics = String((await rest(TOKENS.viewer, 'GET', '/metrics')).json);
      const m = /hub_grpc_refusals_total\{code="AUTH_ERR_FORBIDDEN"\} (\d+)/.exec(metrics);
      assert.ok(m && Number(m[1]) >= mutating.length, 'gRPC refusals counted in /metrics');
      // reads are granted
      const list = await call<Msg>(client, 'ListProjects', {}, { token: TOKENS.viewer, deadlineMs: scaled(T) });
      assert.ok((list.items as Msg[]).length >= 3);
      assert.deepEqual(await snapshot(), before, 'nothing changed');
    });

    test('an operator sends and cancels (REST and gRPC) but does no admin operation', async () => {
      const op = TOKENS.operator;
      const sync = await rest(op, 'POST', `${API}/command/sync`, {
        project_id: a.project_id,
        command_type: 'echo',
        payload: { by: 'operator' },
        wait_ms: T,
      });
      assert.equal(sync.status, 200, JSON.stringify(sync.json));
      assert.equal(sync.json.status, 'completed');
      // a command queued for a project with no agent, then cancelled
      const queued = await rest(op, 'POST', `${API}/command/send`, {
        project_id: idle.project_id,
        command_type: 'echo',
        payload: {},
        offline_policy: 'queue',
        queue_ttl_ms: 600_000,
      });
      assert.equal(queued.status, 202, JSON.stringify(queued.json));
      const cancelled = await rest(op, 'POST', `${API}/command/${queued.json.command_id}/cancel`);
      assert.equal(cancelled.status, 200, JSON.stringify(cancelled.json));
      assert.equal(cancelled.json.status, 'cancelled');
      const gq = await call<Msg>(
        client,
        'SendCommand',
        {
          project_id: idle.project_id,
          command_type: 'echo',
          payload_json: '{}',
          offline_policy: 'queue',
          queue_ttl_ms: 600_000,
        },
        { token: op, deadlineMs: scaled(T) },
      );
      const gc = await call<Msg>(
        client,
        'CancelCommand',
        { command_id: gq.command_id },
        { token: op, deadlineMs: scaled(T) },
      );
      assert.equal(gc.status, 'cancelled');

      const before = await snapshot();
      for (const [method, p, body] of [
        ['POST', `${API}/projects`, { project_id: uniqueId('op-made') }],
        ['POST', `${API}/projects/${a.project_id}/disable`, undefined],
        ['POST', `${API}/projects/${a.project_id}/rotate`, undefined],
        ['POST', `${API}/modules/command/restart`, undefined],
        ['POST', `${API}/outbox/dead/${randomUUID()}/replay`, undefined],
      ] as const) {
        const r = await rest(op, method, p, body);
        assert.equal(r.status, 403, `${method} ${p}: ${r.status}`);
        assert.equal(r.json.error.code, 'AUTH_ERR_FORBIDDEN');
        assert.match(r.json.error.message, /role operator/);
      }
      for (const [m, req] of [
        ['CreateProject', { project_id: uniqueId('op-made') }],
        ['DisableProject', { project_id: a.project_id }],
        ['RestartModule', { name: 'command' }],
      ] as const) {
        const err = await grpcFails(call(client, m, req, { token: op, deadlineMs: scaled(T) }));
        assert.equal(err.code, grpc.status.PERMISSION_DENIED, m);
      }
      assert.deepEqual(await snapshot(), before, 'no admin operation took effect');
    });

    test('a token limited to some projects sees and acts on those only: lists, single reads, sends', async () => {
      const s = TOKENS.scoped;
      const mine = (id: string) => id.startsWith('e2e-roles-a-');
      const projects = await rest(s, 'GET', `${API}/projects`);
      assert.equal(projects.status, 200);
      assert.deepEqual(
        (projects.json.items as Json[]).map((p) => p.project_id),
        [a.project_id],
      );
      assert.equal(projects.json.total, 1, 'the total counts the visible projects only');
      const online = await rest(s, 'GET', `${API}/projects/online`);
      assert.deepEqual(
        (online.json.items as Json[]).map((p) => p.project_id),
        [a.project_id],
      );
      const commands = await rest(s, 'GET', `${API}/commands?limit=500`);
      assert.ok((commands.json.items as Json[]).length > 0, 'the operator sync above is listed');
      assert.ok(
        (commands.json.items as Json[]).every((c) => mine(c.project_id)),
        'only commands of its projects',
      );
      assert.equal(commands.json.total, commands.json.items.length);
      for (const p of [
        `${API}/command/${commandB}`,
        `${API}/project/${b.project_id}/status`,
        `${API}/commands?project_id=${b.project_id}`,
      ]) {
        const r = await rest(s, 'GET', p);
        assert.equal(r.status, 403, `${p}: ${r.status}`);
        assert.equal(r.json.error.code, 'AUTH_ERR_FORBIDDEN');
      }
      assert.equal((await rest(s, 'GET', `${API}/project/${a.project_id}/status`)).status, 200);
      const toB = await rest(s, 'POST', `${API}/command/send`, {
        project_id: b.project_id,
        command_type: 'echo',
        payload: {},
      });
      assert.equal(toB.status, 403);
      const toA = await rest(s, 'POST', `${API}/command/sync`, {
        project_id: a.project_id,
        command_type: 'echo',
        payload: { by: 'scoped' },
        wait_ms: T,
      });
      assert.equal(toA.status, 200, JSON.stringify(toA.json));
      assert.equal((await rest(s, 'GET', `${API}/command/${toA.json.command_id}`)).status, 200);

      const opts = { token: s, deadlineMs: scaled(T) };
      const gl = await call<Msg>(client, 'ListProjects', {}, opts);
      assert.deepEqual(
        (gl.items as Msg[]).map((p) => p.project_id),
        [a.project_id],
      );
      const gc = await call<Msg>(client, 'ListCommands', { limit: 500 }, opts);
      assert.ok((gc.items as Msg[]).every((c) => mine(String(c.project_id))));
      for (const [m, req] of [
        ['GetCommand', { command_id: commandB }],
        ['GetProjectStatus', { project_id: b.project_id }],
        ['SendCommand', { project_id: b.project_id, command_type: 'echo', payload_json: '{}' }],
      ] as const) {
        const err = await grpcFails(call(client, m, req, opts));
        assert.equal(err.code, grpc.status.PERMISSION_DENIED, `${m}: ${err.details}`);
      }
    });

    test('an admin limited to some projects creates only those, and no whole-hub operation', async () => {
      const s = TOKENS.scopedAdmin;
      const made = `made-${backend === 'embedded' ? 'e' : 's'}`;
      const ok = await rest(s, 'POST', `${API}/projects`, { project_id: made });
      assert.equal(ok.status, 201, JSON.stringify(ok.json));
      for (const [p, body] of [
        [`${API}/projects`, { project_id: uniqueId('outside') }],
        [`${API}/projects`, {}],
        [`${API}/projects/${b.project_id}/disable`, undefined],
        [`${API}/modules/command/restart`, undefined],
        [`${API}/outbox/dead/${randomUUID()}/replay`, undefined],
        // a job may reach any project (`all`, metadata): whole-hub tokens only, even naming its own
        [`${API}/jobs`, { targets: { project_ids: [a.project_id] }, command_type: 'echo' }],
        [`${API}/jobs/${randomUUID()}/cancel`, undefined],
      ] as const) {
        const r = await rest(s, 'POST', p, body);
        assert.equal(r.status, 403, `${p} ${JSON.stringify(body)}: ${r.status}`);
        assert.equal(r.json.error.code, 'AUTH_ERR_FORBIDDEN');
      }
      assert.match(
        (await rest(s, 'POST', `${API}/projects`, {})).json.error.message,
        /name the new project's project_id/,
      );
      for (const p of [`${API}/audit`, `${API}/jobs`]) {
        const r = await rest(s, 'GET', p);
        assert.equal(r.status, 403, `limited admin GET ${p}: ${r.status}`);
      }
      assert.equal((await rest(s, 'GET', `${API}/project/${a.project_id}/history`)).status, 200, 'its own history');
      assert.equal((await rest(s, 'GET', `${API}/project/${b.project_id}/history`)).status, 403, "another's history");
      const listed = await rest(s, 'GET', `${API}/projects`);
      assert.deepEqual((listed.json.items as Json[]).map((p) => p.project_id).sort(), [a.project_id, made].sort());
      const err = await grpcFails(
        call(client, 'CreateProject', { project_id: uniqueId('outside') }, { token: s, deadlineMs: scaled(T) }),
      );
      assert.equal(err.code, grpc.status.PERMISSION_DENIED);
    });

    test('the event feeds (WebSocket and WatchEvents) never carry events of projects outside the limit', async () => {
      const ws = await WsProbe.open(hub.base, TOKENS.scoped);
      const feed = grpcFeed(client, { all: true }, TOKENS.scoped);
      try {
        ws.send({ op: 'subscribe', projects: [b.project_id] });
        const refused = await ws.next((f) => f.op === 'error', 'the refusal of a project outside the limit');
        assert.equal(refused.code, 'AUTH_ERR_FORBIDDEN');
        ws.send({ op: 'subscribe', all: true });
        await ws.next((f) => f.op === 'subscribed', 'subscribed');
        // B's command first, then A's: the feed is in order, so once A's result is in, B's would be too
        hub.token = TOKENS.admin;
        const rb = await hub.api('POST', '/command/sync', {
          project_id: b.project_id,
          command_type: 'echo',
          payload: {},
          wait_ms: T,
        });
        const ra = await hub.api('POST', '/command/sync', {
          project_id: a.project_id,
          command_type: 'echo',
          payload: {},
          wait_ms: T,
        });
        assert.equal(rb.status, 200);
        assert.equal(ra.status, 200);
        await ws.next(
          (f) => f.op === 'event' && f.type === 'command.result' && f.command_id === ra.json.command_id,
          "A's result on the WebSocket",
        );
        await until(
          () => feed.events.some((e) => e.type === 'command.result' && e.command_id === ra.json.command_id),
          scaled(T),
          "A's result on WatchEvents",
        );
        assert.ok(ws.events().length > 0);
        assert.deepEqual(
          ws.events().filter((e) => e.project_id !== a.project_id),
          [],
          'no WebSocket event of another project',
        );
        assert.deepEqual(
          feed.events.filter((e) => e.project_id !== a.project_id),
          [],
          'no WatchEvents event of another project',
        );
        const refusedWatch = grpcFeed(client, { projects: [b.project_id] }, TOKENS.scoped);
        await until(() => refusedWatch.end.done, scaled(T), 'the refused WatchEvents');
        assert.equal(refusedWatch.end.err?.code, grpc.status.PERMISSION_DENIED);
      } finally {
        ws.ws.close();
        feed.stream.cancel();
      }
    });

    test('editing tokens in config.yml applies without a restart; unaffected connections stay, revoked ones close', async () => {
      const spare = await WsProbe.open(hub.base, TOKENS.spare);
      const changed = await WsProbe.open(hub.base, TOKENS.operator);
      const revoked = await WsProbe.open(hub.base, TOKENS.revoked);
      const revokedFeed = grpcFeed(client, { all: true }, TOKENS.revoked);
      const spareFeed = grpcFeed(client, { all: true }, TOKENS.spare);
      try {
        for (const p of [spare, changed, revoked]) {
          p.send({ op: 'subscribe', all: true });
          await p.next((f) => f.op === 'subscribed', 'subscribed');
        }
        const listening = hub.proc.lines.filter((l) => l.msg === 'web listening').length;
        const reloads = hub.proc.lines.filter((l) => l.msg === 'config reloaded').length;
        writeTokens('viewer', false); // the operator becomes a viewer; the revoked token goes
        const applied = await hub.proc.waitFor(
          (l) =>
            l.msg === 'config reloaded' && hub.proc.lines.filter((x) => x.msg === 'config reloaded').length > reloads,
          T,
          'the reload',
        );
        assert.deepEqual((applied.reconfigured as string[]).sort(), ['grpc', 'web']);
        assert.deepEqual(applied.restarted, []);
        assert.equal(hub.proc.lines.filter((l) => l.msg === 'web listening').length, listening, 'web did not restart');

        // the revoked token: error frame with the code, then close 1008; its stream ends UNAUTHENTICATED
        const err = await revoked.next((f) => f.op === 'error', 'the revoked socket is told');
        assert.equal(err.code, 'AUTH_ERR_TOKEN');
        await until(() => revoked.closed !== null, scaled(T), 'the revoked socket closes');
        assert.equal(revoked.closed?.code, 1008);
        await until(() => revokedFeed.end.done, scaled(T), 'the revoked stream ends');
        assert.equal(revokedFeed.end.err?.code, grpc.status.UNAUTHENTICATED);
        assert.equal((await rest(TOKENS.revoked, 'GET', `${API}/projects`)).status, 401);

        // the former operator is a viewer now, at once
        const send = await rest(TOKENS.operator, 'POST', `${API}/command/send`, {
          project_id: a.project_id,
          command_type: 'echo',
          payload: {},
        });
        assert.equal(send.status, 403, JSON.stringify(send.json));
        assert.match(send.json.error.message, /role viewer/);

        // the other connections stayed and still get events
        hub.token = TOKENS.admin;
        const r = await hub.api('POST', '/command/sync', {
          project_id: a.project_id,
          command_type: 'echo',
          payload: {},
          wait_ms: T,
        });
        assert.equal(r.status, 200);
        const result = (f: Json) =>
          f.op === 'event' && f.type === 'command.result' && f.command_id === r.json.command_id;
        await spare.next(result, 'the unaffected socket gets the event');
        await changed.next(result, 'the socket whose role changed gets the event');
        await until(
          () => spareFeed.events.some((e) => e.type === 'command.result' && e.command_id === r.json.command_id),
          scaled(T),
          'the unaffected stream gets the event',
        );
        assert.equal(spare.closed, null);
        assert.equal(changed.closed, null);
        assert.equal(spareFeed.end.done, false);
        const logged = JSON.stringify(hub.proc.lines);
        for (const t of Object.values(TOKENS)) assert.ok(!logged.includes(t), 'no token in the logs');
      } finally {
        for (const p of [spare, changed, revoked]) p.ws.close();
        spareFeed.stream.cancel();
        revokedFeed.stream.cancel();
      }
    });
  });
}
