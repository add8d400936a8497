/**
 * Presence history and the audit trail through the real hub (issue 14 item 5), on both backends
 * (embedded broker + PGlite, Mosquitto + PostgreSQL): a real agent process stopped and started
 * again shows online → offline (with its reason) → online in `GET /project/:id/history`, paged
 * and filtered by time, also over gRPC and the CLI; operator actions over REST, gRPC and the CLI
 * each leave one audit row (who: the token id and role; what; targets; interface; outcome) and
 * one info log line, and no secret reaches the log.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import * as grpc from '@grpc/grpc-js';
import { runCli } from '../bootstrap/cli-harness.js';
import { freePort } from '../helpers/process.js';
import { scaled, until } from '../helpers/wait.js';
import { call, ExchangeHubClient, fails, type Msg } from '../modules/grpc/harness.js';
import { BACKEND_TITLE, BACKENDS, Hub, type Json, type Provisioned, T, uniqueId } from './harness.js';

const REST_TOKEN = `rest-${uniqueId('tok')}`;
const GRPC_TOKEN = `grpc-${uniqueId('tok')}`;

/** Every page of the project's history, `limit` at a time, as REST gives them. */
async function allHistory(hub: Hub, projectId: string, limit: number, query = ''): Promise<Json[]> {
  const out: Json[] = [];
  for (let offset = 0; ; offset += limit) {
    const r = await hub.api('GET', `/project/${projectId}/history?limit=${limit}&offset=${offset}${query}`);
    assert.equal(r.status, 200, JSON.stringify(r.json));
    assert.equal(r.json.limit, limit);
    assert.equal(r.json.offset, offset);
    out.push(...r.json.items);
    assert.ok(r.json.items.length <= limit);
    if (out.length >= r.json.total) return out;
    assert.equal(r.json.items.length, limit, 'a page short of the total');
  }
}

/**
 * The history once its newest change is `to_state` online: the state shows in the status module's
 * read model at once, and the change reaches the table with the next presence flush (its row is
 * written by the statement that applies the transition).
 */
async function historyOnline(hub: Hub, projectId: string, sessions: number): Promise<Json[]> {
  let items: Json[] = [];
  await until(
    async () => {
      items = await allHistory(hub, projectId, 100);
      return items[0]?.to_state === 'online' && items.filter((c: Json) => c.to_state === 'online').length >= sessions;
    },
    scaled(T),
    `${sessions} online sessions in the history of ${projectId}`,
  );
  return items;
}

/** The history as the moves it made, oldest first: `from>to`. */
const moves = (items: Json[]) =>
  items
    .slice()
    .reverse()
    .map((c: Json) => `${c.from_state}>${c.to_state}`);

for (const backend of BACKENDS) {
  describe(`presence history and audit trail: ${BACKEND_TITLE[backend]}`, () => {
    let hub: Hub;
    let client: grpc.Client;
    let p1: Provisioned;
    const tokenIds = { rest: 'tokens[0]', grpc: 'tokens[1]' };

    before(async () => {
      const grpcPort = await freePort();
      hub = await Hub.create(backend, {
        token: REST_TOKEN,
        modules: {
          audit: {},
          web: { tokens: [REST_TOKEN, GRPC_TOKEN] },
          grpc: { port: grpcPort, host: '127.0.0.1', tokens: [REST_TOKEN, GRPC_TOKEN] },
        },
      });
      await hub.start();
      const listening = await hub.proc.waitFor((l) => l.msg === 'gRPC server listening', T, 'gRPC listening');
      client = new ExchangeHubClient(`127.0.0.1:${listening.port}`, grpc.credentials.createInsecure());
    });
    after(async () => {
      client?.close();
      await hub?.dispose();
    });

    test('a real agent stopped and started again: online → offline (reason) → online, paged and filtered', async () => {
      p1 = await hub.provision('hist');
      const agent = hub.newAgent(p1);
      try {
        await agent.start();
        await agent.registered();
        await hub.waitState(p1.project_id, 'online');
        const firstOnline = await historyOnline(hub, p1.project_id, 1);
        const onlineAt = Date.parse(firstOnline[0].at);
        await agent.stop();
        await hub.waitState(p1.project_id, 'offline');
        await agent.start();
        await agent.registered();
        await hub.waitState(p1.project_id, 'online');

        const whole = await historyOnline(hub, p1.project_id, 2);
        const byTwo = await allHistory(hub, p1.project_id, 2);
        assert.deepEqual(byTwo, whole, 'pages of two add up to the whole history');
        for (let i = 1; i < whole.length; i++) {
          assert.ok(Date.parse(whole[i - 1].at) >= Date.parse(whole[i].at), 'newest first');
        }
        const path = moves(whole);
        const firstOn = path.indexOf('verifying>online');
        const off = path.findIndex((m, i) => i > firstOn && m.endsWith('>offline'));
        const back = path.findIndex((m, i) => i > off && m === 'verifying>online');
        assert.ok(firstOn >= 0 && off > firstOn && back > off, `online → offline → online in ${path.join(', ')}`);
        const offline = whole[whole.length - 1 - off];
        assert.match(offline.reason, /disconnect/, `the reason of going offline: ${offline.reason}`);
        assert.equal(whole[0].to_state, 'online');
        assert.equal(whole[0].reason, 'registration complete');
        for (const c of whole) assert.equal(c.project_id, p1.project_id);

        // since: only what happened after the first session came online
        const later = await allHistory(hub, p1.project_id, 100, `&since=${onlineAt + 1}`);
        assert.ok(later.length > 0 && later.length < whole.length);
        assert.ok(later.every((c: Json) => Date.parse(c.at) > onlineAt));
        const until = await allHistory(hub, p1.project_id, 100, `&until=${new Date(onlineAt).toISOString()}`);
        assert.equal(until.length + later.length, whole.length);

        // the same over gRPC
        const g = await call<Json>(
          client,
          'GetProjectHistory',
          { project_id: p1.project_id, limit: 3 },
          { token: GRPC_TOKEN },
        );
        assert.equal(g.total, whole.length);
        assert.deepEqual(
          g.items.map((c: Json) => c.reason),
          whole.slice(0, 3).map((c: Json) => c.reason),
        );
        // and the CLI
        const cli = await runCli(['history', p1.project_id, '--json'], {
          HUB_URL: hub.base,
          HUB_API_TOKEN: REST_TOKEN,
        });
        assert.equal(cli.code, 0, cli.stderr);
        assert.deepEqual(JSON.parse(cli.stdout).items, whole);
      } finally {
        await agent.dispose();
      }
    });

    test('history refusals: an unknown project is 404, a bad filter 400 naming it, over REST and gRPC', async () => {
      const unknown = await hub.api('GET', `/project/${uniqueId('nope')}/history`);
      assert.equal(unknown.status, 404);
      assert.equal(unknown.json.error.code, 'STATUS_ERR_NOT_FOUND');
      const bad = await hub.api('GET', `/project/${p1.project_id}/history?since=tomorrow`);
      assert.equal(bad.status, 400);
      assert.equal(bad.json.error.code, 'STATUS_ERR_INVALID');
      assert.match(bad.json.error.message, /since/);
      const big = await hub.api('GET', `/project/${p1.project_id}/history?limit=100000`);
      assert.equal(big.status, 400);
      await fails(
        call(client, 'GetProjectHistory', { project_id: uniqueId('nope') }, { token: GRPC_TOKEN }),
        grpc.status.NOT_FOUND,
      );
      await fails(
        call(client, 'GetProjectHistory', { project_id: p1.project_id, until: 'later' }, { token: GRPC_TOKEN }),
        grpc.status.INVALID_ARGUMENT,
      );
    });

    test('operator actions over REST, gRPC and the CLI: one audit row and one info log line each, no secrets', async () => {
      const auditLines = () => hub.proc.lines.filter((l) => l.msg === 'audit');
      const linesBefore = auditLines().length;
      const secrets: string[] = [REST_TOKEN, GRPC_TOKEN, p1.secret, p1.mqtt_password];

      // REST, as tokens[0]: a queued send to a project never online, its cancel, a rotate, a disable
      const p2 = (await hub.api('POST', '/projects', { project_id: uniqueId('aud') })).json as Provisioned;
      secrets.push(p2.secret, p2.mqtt_password);
      const sent = await hub.api('POST', '/command/send', {
        project_id: p2.project_id,
        command_type: 'audit-probe',
        payload: { secret_payload: 'never-logged-payload' },
        offline_policy: 'queue',
        queue_ttl_ms: 600_000,
      });
      assert.equal(sent.status, 202, JSON.stringify(sent.json));
      const cancelled = await hub.api('POST', `/command/${sent.json.command_id}/cancel`);
      assert.equal(cancelled.status, 200, JSON.stringify(cancelled.json));
      const rotated = await hub.api('POST', `/projects/${p2.project_id}/rotate`, { overlap_s: 0 });
      assert.equal(rotated.status, 200);
      secrets.push(rotated.json.secret, rotated.json.mqtt_password);
      const disabled = await hub.api('POST', `/projects/${p2.project_id}/disable`);
      assert.equal(disabled.status, 200);
      // a refused action: recorded with its code, and nothing else
      const missing = await hub.api('POST', `/command/${crypto.randomUUID()}/cancel`);
      assert.equal(missing.status, 404);

      // gRPC, as tokens[1]
      const p3 = await call<Json>(client, 'CreateProject', { project_id: uniqueId('audg') }, { token: GRPC_TOKEN });
      secrets.push(p3.secret, p3.mqtt_password);
      const gsent = await call<Json>(
        client,
        'SendCommand',
        {
          project_id: p3.project_id,
          command_type: 'audit-probe',
          payload_json: '{"secret_payload":"never-logged-payload"}',
          offline_policy: 'queue',
          queue_ttl_ms: 600_000,
        },
        { token: GRPC_TOKEN },
      );
      await call(client, 'CancelCommand', { command_id: gsent.command_id }, { token: GRPC_TOKEN });
      // a sync send whose wait runs out: done (sent) all the same, so its record says ok
      const gsync = await fails(
        call(
          client,
          'SendSyncCommand',
          {
            project_id: p3.project_id,
            command_type: 'audit-probe',
            payload_json: '{}',
            offline_policy: 'queue',
            queue_ttl_ms: 600_000,
            wait_ms: 300,
          },
          { token: GRPC_TOKEN },
        ),
        grpc.status.DEADLINE_EXCEEDED,
      );
      const gsyncId = String(gsync.metadata.get('command-id')[0]);
      const grotated = await call<Json>(
        client,
        'RotateProjectSecret',
        { project_id: p3.project_id },
        { token: GRPC_TOKEN },
      );
      secrets.push(grotated.secret, grotated.mqtt_password);
      await call(client, 'DisableProject', { project_id: p3.project_id }, { token: GRPC_TOKEN });

      // the CLI (over REST, declaring itself), as tokens[0]
      const cli = await runCli(['projects', 'enable', p2.project_id, '--json'], {
        HUB_URL: hub.base,
        HUB_API_TOKEN: REST_TOKEN,
      });
      assert.equal(cli.code, 0, cli.stderr);

      const expected: Array<[string, string, string, Record<string, string>, string]> = [
        ['project.enabled', 'tokens[0]', 'cli', { project_id: p2.project_id }, 'ok'],
        ['project.disabled', 'tokens[1]', 'grpc', { project_id: p3.project_id }, 'ok'],
        ['project.rotated', 'tokens[1]', 'grpc', { project_id: p3.project_id }, 'ok'],
        ['command.sent', 'tokens[1]', 'grpc', { project_id: p3.project_id, command_id: gsyncId }, 'ok'],
        ['command.cancelled', 'tokens[1]', 'grpc', { project_id: p3.project_id, command_id: gsent.command_id }, 'ok'],
        ['command.sent', 'tokens[1]', 'grpc', { project_id: p3.project_id, command_id: gsent.command_id }, 'ok'],
        ['project.created', 'tokens[1]', 'grpc', { project_id: p3.project_id }, 'ok'],
        ['command.cancelled', 'tokens[0]', 'rest', {}, 'CMD_ERR_NOT_FOUND'],
        ['project.disabled', 'tokens[0]', 'rest', { project_id: p2.project_id }, 'ok'],
        ['project.rotated', 'tokens[0]', 'rest', { project_id: p2.project_id }, 'ok'],
        [
          'command.cancelled',
          'tokens[0]',
          'rest',
          { project_id: p2.project_id, command_id: sent.json.command_id },
          'ok',
        ],
        ['command.sent', 'tokens[0]', 'rest', { project_id: p2.project_id, command_id: sent.json.command_id }, 'ok'],
        ['project.created', 'tokens[0]', 'rest', { project_id: p2.project_id }, 'ok'],
      ];
      const page = (await hub.api('GET', `/audit?limit=${expected.length}`)).json;
      assert.equal(page.items.length, expected.length, JSON.stringify(page));
      page.items.forEach((e: Json, i: number) => {
        const [action, token_id, via, targets, outcome] = expected[i];
        assert.equal(e.action, action, `row ${i}: ${JSON.stringify(e)}`);
        assert.equal(e.token_id, token_id, `row ${i}`);
        assert.equal(e.role, 'admin');
        assert.equal(e.interface, via, `row ${i}`);
        assert.equal(e.outcome, outcome, `row ${i}`);
        for (const [k, v] of Object.entries(targets)) assert.equal(e.targets[k], v, `row ${i} target ${k}`);
        if (outcome === 'ok') assert.equal(e.project_id, targets.project_id);
        assert.ok(Number.isFinite(Date.parse(e.at)));
      });

      // filters, over REST and gRPC
      const byGrpc = (await hub.api('GET', `/audit?token_id=${encodeURIComponent(tokenIds.grpc)}`)).json;
      assert.equal(byGrpc.total, 6);
      assert.ok(byGrpc.items.every((e: Json) => e.interface === 'grpc'));
      const rotations = (await hub.api('GET', '/audit?action=project.rotated')).json;
      assert.equal(rotations.total, 2);
      const ofP2 = await call<Json>(client, 'ListAudit', { project_id: p2.project_id }, { token: GRPC_TOKEN });
      assert.equal(ofP2.total, 6);
      assert.deepEqual(
        ofP2.items.map((e: Json) => e.action),
        [
          'project.enabled',
          'project.disabled',
          'project.rotated',
          'command.cancelled',
          'command.sent',
          'project.created',
        ],
      );
      const badFilter = await hub.api('GET', '/audit?action=command.deleted');
      assert.equal(badFilter.status, 400);
      assert.equal(badFilter.json.error.code, 'AUDIT_ERR_INVALID');
      await fails(
        call(client, 'ListAudit', { since: 'whenever' }, { token: GRPC_TOKEN }),
        grpc.status.INVALID_ARGUMENT,
      );
      const cliAudit = await runCli(['audit', '--token-id', tokenIds.grpc, '--json'], {
        HUB_URL: hub.base,
        HUB_API_TOKEN: REST_TOKEN,
      });
      assert.equal(cliAudit.code, 0, cliAudit.stderr);
      assert.equal(JSON.parse(cliAudit.stdout).items.length, 6);

      // one info log line per record, with the ids; no token, secret or payload anywhere in the log
      const lines = auditLines().slice(linesBefore);
      assert.equal(lines.length, expected.length);
      for (const l of lines) {
        assert.equal(l.level, 30, 'info');
        assert.equal(l.module, 'audit');
      }
      const ids = new Set(page.items.map((e: Json) => e.audit_id));
      assert.equal(new Set(lines.map((l) => String(l.audit_id))).size, expected.length);
      for (const l of lines) assert.ok(ids.has(String(l.audit_id)));
      const log = hub.proc.lines.map((l) => JSON.stringify(l)).join('\n');
      for (const s of secrets) assert.ok(!log.includes(s), 'a secret or token reached the log');
      assert.ok(!log.includes('never-logged-payload'), 'a command payload reached the log');
    });

    test('the refused token reaches no action and leaves no row', async () => {
      const before = (await hub.api('GET', '/audit?limit=1')).json.total;
      const r = await fetch(`${hub.base}/api/exchange-hub/projects/${p1.project_id}/disable`, {
        method: 'POST',
        headers: { authorization: 'Bearer wrong' },
      });
      assert.equal(r.status, 401);
      await fails(
        call(client, 'DisableProject', { project_id: p1.project_id } as Msg, { token: 'wrong' }),
        grpc.status.UNAUTHENTICATED,
      );
      assert.equal((await hub.api('GET', '/audit?limit=1')).json.total, before);
      assert.equal((await hub.api('GET', `/project/${p1.project_id}/status`)).json.enabled, true);
    });
  });
}
