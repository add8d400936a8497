/**
 * Idempotent sends through the real hub process (REST and gRPC) and a real agent process, on both
 * backends (embedded broker + PGlite, Mosquitto + PostgreSQL): the same Idempotency-Key and body
 * answer the first command and the agent runs it once; another body is refused with 409 /
 * ALREADY_EXISTS; concurrent duplicates make one command; a retry after the hub died between the
 * commit and the answer, and after a restart, gets the original command.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import { after, before, describe, test } from 'node:test';
import * as grpc from '@grpc/grpc-js';
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
import { ExchangeHubClient, type Msg } from '../grpc/harness.js';

interface Reply {
  status: number;
  json: Json;
  replayed: string | null;
}

/** A unary gRPC call with its initial metadata (where `idempotent-replayed` travels). */
function grpcCall(client: grpc.Client, method: string, req: Msg): Promise<{ res: Msg; md: grpc.Metadata | null }> {
  return new Promise((resolve, reject) => {
    let md: grpc.Metadata | null = null;
    const fn = (client as unknown as Record<string, (...a: unknown[]) => grpc.ClientUnaryCall>)[method].bind(client);
    const c = fn(req, new grpc.Metadata(), { deadline: Date.now() + T }, (err: grpc.ServiceError | null, res: Msg) =>
      err ? reject(err) : resolve({ res, md }),
    );
    c.on('metadata', (m: grpc.Metadata) => {
      md = m;
    });
  });
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
  describe(`idempotent sends through the hub process (${BACKEND_TITLE[backend]})`, () => {
    let hub: Hub;
    let client: grpc.Client;
    let project: Provisioned;
    let agent: Agent;

    before(async () => {
      hub = await Hub.create(backend);
      // the harness's hub has no gRPC server: add one on a fixed port, so a restart keeps it
      const port = await freePort();
      const config = JSON.parse(fs.readFileSync(hub.file, 'utf8'));
      config.modules.grpc = { port, host: '127.0.0.1', stop_grace_ms: 500 };
      fs.writeFileSync(hub.file, JSON.stringify(config, null, 2));
      await hub.start();
      client = new ExchangeHubClient(`127.0.0.1:${port}`, grpc.credentials.createInsecure());
      project = await hub.provision('idem');
      agent = hub.newAgent(project);
      await agent.start();
      await hub.waitState(project.project_id, 'online');
    });

    after(async () => {
      client?.close();
      await agent?.dispose();
      await hub?.dispose();
    });

    const pid = () => project.project_id;

    async function post(path: string, body: unknown, key?: string): Promise<Reply> {
      const res = await fetch(hub.base + API + path, {
        method: 'POST',
        headers: { 'content-type': 'application/json', ...(key === undefined ? {} : { 'idempotency-key': key }) },
        body: JSON.stringify(body),
      });
      const text = await res.text();
      return {
        status: res.status,
        json: text ? JSON.parse(text) : null,
        replayed: res.headers.get('idempotent-replayed'),
      };
    }

    /**
     * `post` right after a hub restart: the restarted hub may find the project's row stale (the
     * restart took longer than the heartbeat timeout on a busy machine) and ask the agent to
     * register again, so the project is briefly not online after `waitBack` saw it online. A
     * refusal commits nothing under the key; the send is tried again until it is accepted.
     */
    async function postOnline(path: string, body: unknown, key: string): Promise<Reply> {
      const deadline = Date.now() + T;
      for (;;) {
        const r = await post(path, body, key);
        if (r.status !== 409 || r.json?.error?.code !== 'CMD_ERR_PROJECT_OFFLINE' || Date.now() > deadline) return r;
        await new Promise((res) => setTimeout(res, 200));
      }
    }

    const runs = (id: string) => agent.logs('command finished', id).length;
    /**
     * The agent ran the command exactly once. Its log line comes through the agent's stdout pipe,
     * which the test reads independently of the hub's answer: wait for the line, then count.
     */
    const ranOnce = async (id: string, what = 'the agent ran it once') => {
      await agent.waitLog('command finished', { command_id: id });
      assert.equal(runs(id), 1, what);
    };
    const commandsOf = async (): Promise<string[]> =>
      (await hub.api('GET', `/commands?project_id=${encodeURIComponent(pid())}&limit=500`)).json.items.map(
        (c: Json) => c.command_id,
      );

    test('REST send: same key and body → the first command (Idempotent-Replayed), run once; another body → 409', async () => {
      const key = uniqueId('send');
      const body = { project_id: pid(), command_type: 'echo', payload: { step: 1, of: 'send' } };
      const first = await post('/command/send', body, key);
      assert.equal(first.status, 202, JSON.stringify(first.json));
      assert.equal(first.replayed, null);
      const id = first.json.command_id;
      await hub.waitCommand(id);

      const again = await post('/command/send', { ...body, payload: { of: 'send', step: 1 } }, key);
      assert.equal(again.status, 202, 'a replay answers as an accepted send does');
      assert.equal(again.replayed, 'true');
      assert.equal(again.json.command_id, id);
      assert.equal(again.json.status, 'completed', 'the command as it is now');
      assert.equal(again.json.idempotent_replayed, undefined, 'the flag is a header, not a field');

      const other = await post('/command/send', { ...body, payload: { step: 2 } }, key);
      assert.equal(other.status, 409);
      assert.equal(other.json.error.code, 'CMD_ERR_IDEMPOTENCY_MISMATCH');
      assert.equal(other.json.error.field, 'idempotency_key');
      assert.match(other.json.error.message, new RegExp(id));

      const bad = await post('/command/send', body, 'k'.repeat(256));
      assert.equal(bad.status, 400);
      assert.equal(bad.json.error.code, 'CMD_ERR_INVALID');
      assert.equal(bad.json.error.field, 'idempotency-key');

      await ranOnce(id, 'the agent ran it once');
      assert.equal((await commandsOf()).filter((c) => c === id).length, 1);
    });

    test('REST sync: a retry waits for and answers the first command’s result; run once', async () => {
      const key = uniqueId('sync');
      const body = { project_id: pid(), command_type: 'echo', payload: { of: 'sync' }, wait_ms: T };
      const first = await post('/command/sync', body, key);
      assert.equal(first.status, 200, JSON.stringify(first.json));
      assert.equal(first.replayed, null);
      assert.equal(first.json.status, 'completed');
      const again = await post('/command/sync', body, key);
      assert.equal(again.status, 200);
      assert.equal(again.replayed, 'true');
      assert.equal(again.json.command_id, first.json.command_id);
      assert.deepEqual(again.json.result, first.json.result);
      // an async send's key, retried as a sync call, waits for that same command
      const asyncKey = uniqueId('async-then-sync');
      const sent = await post(
        '/command/send',
        { project_id: pid(), command_type: 'echo', payload: { n: 3 } },
        asyncKey,
      );
      const waited = await post(
        '/command/sync',
        { project_id: pid(), command_type: 'echo', payload: { n: 3 }, wait_ms: T },
        asyncKey,
      );
      assert.equal(waited.status, 200, JSON.stringify(waited.json));
      assert.equal(waited.json.command_id, sent.json.command_id);
      assert.equal(waited.json.result.status, 'success');
      await ranOnce(first.json.command_id);
      await ranOnce(sent.json.command_id);
    });

    test('20 concurrent REST sends with one key make one command, run once', async () => {
      const key = uniqueId('race');
      const before = new Set(await commandsOf());
      const body = { project_id: pid(), command_type: 'echo', payload: { race: key } };
      const answers = await Promise.all(Array.from({ length: 20 }, () => post('/command/send', body, key)));
      for (const a of answers) assert.equal(a.status, 202, JSON.stringify(a.json));
      const ids = new Set(answers.map((a) => a.json.command_id));
      assert.equal(ids.size, 1);
      assert.equal(answers.filter((a) => a.replayed === null).length, 1, 'one answer made it, the others replay it');
      const [id] = ids;
      await hub.waitCommand(id);
      const made = (await commandsOf()).filter((c) => !before.has(c));
      assert.deepEqual(made, [id]);
      await ranOnce(id);
    });

    test('gRPC: SendCommand and SendSyncCommand with idempotency_key; keys are shared with REST', async () => {
      const key = uniqueId('grpc');
      const req = { project_id: pid(), command_type: 'echo', payload_json: '{"via":"grpc"}', idempotency_key: key };
      const first = await grpcCall(client, 'SendCommand', req);
      assert.deepEqual(first.md?.get('idempotent-replayed') ?? [], []);
      const id = String(first.res.command_id);
      await hub.waitCommand(id);
      const again = await grpcCall(client, 'SendCommand', req);
      assert.equal(again.res.command_id, id);
      assert.deepEqual(again.md?.get('idempotent-replayed'), ['true']);
      // the same key over REST with the same request is the same command
      const rest = await post(
        '/command/send',
        { project_id: pid(), command_type: 'echo', payload: { via: 'grpc' } },
        key,
      );
      assert.equal(rest.json.command_id, id);
      assert.equal(rest.replayed, 'true');

      const err = await grpcFails(grpcCall(client, 'SendCommand', { ...req, payload_json: '{"via":"other"}' }));
      assert.equal(err.code, grpc.status.ALREADY_EXISTS);
      assert.deepEqual(err.metadata.get('error-code'), ['CMD_ERR_IDEMPOTENCY_MISMATCH']);
      const bad = await grpcFails(grpcCall(client, 'SendCommand', { ...req, idempotency_key: 'naïve' }));
      assert.equal(bad.code, grpc.status.INVALID_ARGUMENT);
      assert.match(bad.details, /^idempotency_key: /);

      const syncKey = uniqueId('grpc-sync');
      const sreq = {
        project_id: pid(),
        command_type: 'echo',
        payload_json: '{"s":1}',
        idempotency_key: syncKey,
        wait_ms: T,
      };
      const s1 = await grpcCall(client, 'SendSyncCommand', sreq);
      const s2 = await grpcCall(client, 'SendSyncCommand', sreq);
      const c1 = s1.res.command as Msg;
      const c2 = s2.res.command as Msg;
      assert.equal(c1.status, 'completed');
      assert.equal(c2.command_id, c1.command_id);
      assert.deepEqual(s2.md?.get('idempotent-replayed'), ['true']);
      assert.deepEqual(s2.res.result, s1.res.result);
      await ranOnce(id);
      await ranOnce(String(c1.command_id));
    });

    test('/openapi.json documents the Idempotency-Key header, the replay header and the 409', async () => {
      const doc = await (await fetch(`${hub.base}/openapi.json`)).json();
      for (const op of ['send', 'sync']) {
        const o = doc.paths[`${API}/command/${op}`].post;
        const param = o.parameters.find((p: Json) => p.name === 'Idempotency-Key');
        assert.ok(param, `${op}: ${JSON.stringify(o.parameters)}`);
        assert.equal(param.in, 'header');
        assert.equal(param.required, false);
        assert.equal(param.schema.maxLength, 255);
        assert.match(param.description, /24 h/);
        const ok = o.responses[op === 'send' ? '202' : '200'];
        assert.ok(ok.headers['Idempotent-Replayed'], op);
        assert.match(o.responses['409'].description, /CMD_ERR_IDEMPOTENCY_MISMATCH/);
      }
    });

    test('a hub killed between the commit and the answer: the retry gets that command, run once', async () => {
      const key = uniqueId('crash');
      // a long execution timeout: on a loaded machine the restarts below may take tens of seconds
      const body = { project_id: pid(), command_type: 'echo', payload: { survives: 'the crash' }, timeout_ms: 600_000 };
      assert.equal((await hub.stop()).code, 0);
      await hub.start({ HUB_CRASH_POINT: 'command.after_commit' });
      await hub.waitBack(pid());
      const lost = await postOnline('/command/send', body, key)
        .then((r) => `answered ${r.status} ${r.json?.error?.code ?? ''}`)
        .catch((err: Error) => `no answer: ${err.message}`);
      assert.match(lost, /^no answer/, 'the caller got no answer');
      assert.equal((await hub.proc.exited).signal, 'SIGKILL');

      await hub.start();
      await hub.waitBack(pid());
      const retry = await postOnline('/command/send', body, key);
      assert.equal(retry.status, 202, JSON.stringify(retry.json));
      assert.equal(retry.replayed, 'true', 'the command the lost answer was about');
      const id = retry.json.command_id;
      await hub.waitCommand(id, (c) => c.result !== null, 3 * T);

      // and after a plain restart the key still names it
      assert.equal((await hub.stop()).code, 0);
      await hub.start();
      await hub.waitBack(pid());
      const later = await postOnline('/command/send', body, key);
      assert.equal(later.json.command_id, id);
      assert.equal(later.replayed, 'true');
      const viaGrpc = await grpcCall(client, 'SendCommand', {
        project_id: pid(),
        command_type: 'echo',
        payload_json: JSON.stringify(body.payload),
        timeout_ms: body.timeout_ms,
        idempotency_key: key,
      });
      assert.equal(viaGrpc.res.command_id, id);
      await agent.waitLog('command finished', { command_id: id });
      await ranOnce(id, 'the agent ran it once');
    });
  });
}
