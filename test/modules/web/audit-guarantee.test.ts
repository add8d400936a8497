/**
 * The audit trail's guarantee at the web module (README "Audit trail"): a done operator action is
 * answered only once its record is written; when the audit module cannot write it, the caller
 * gets 503 AUDIT_ERR_UNAVAILABLE naming the action's targets instead of a success; a refused action
 * keeps its own answer; with no audit module configured at all the action is answered unaudited
 * and the web module warns once. A real host, the real web module and real HTTP; the domain and
 * the audit module are stand-ins so the failure can be chosen.
 */
import assert from 'node:assert/strict';
import { afterEach, describe, test } from 'node:test';
import { z } from 'zod';
import { HubError } from '../../../core/errors.js';
import type { ModuleProvider } from '../../../core/module.js';
import { AUDIT, type AuditRecord } from '../../../modules/audit/contract/topics.js';
import { until } from '../../helpers/wait.js';
import { captureLog, startWeb, type WebHarness } from './harness.js';

/**
 * An audit module that fails every record with `code` (or writes it down when `code` is empty);
 * with `gate`, each record is written only once the gate opens (a slow commit).
 */
function auditStandIn(seen: AuditRecord[], gate?: Promise<void>): ModuleProvider<{ fail_with: string }> {
  return {
    name: 'audit-stand-in',
    schema: z.object({ fail_with: z.string().default('') }).strict(),
    create: (ctx) => ({
      start() {
        ctx.bus.subscribe(AUDIT.record, async (rec) => {
          if (ctx.config.fail_with === 'DB_ERR_UNAVAILABLE') {
            throw new HubError('DB_ERR_UNAVAILABLE', 'database "default" unreachable');
          }
          await gate;
          seen.push(rec as AuditRecord);
          return { audit_id: String(seen.length) };
        });
      },
    }),
  };
}

describe('web: the audit record before the answer', () => {
  let web: WebHarness | undefined;
  afterEach(async () => {
    await web?.stop();
    web = undefined;
  });

  const start = async (failWith: string | null, seen: AuditRecord[], log = captureLog(), gate?: Promise<void>) => {
    web = await startWeb({
      token: 'tok-0123456789',
      fake: { answer_status: true },
      log: log.log,
      ...(failWith === null
        ? {}
        : {
            extraYaml: `  audit:\n    provider: audit-stand-in\n    fail_with: "${failWith}"\n`,
            registry: (r) => r.register(auditStandIn(seen, gate)),
          }),
    });
    return web;
  };

  test('a done action whose record cannot be written is answered 503 AUDIT_ERR_UNAVAILABLE, not 200', async () => {
    const w = await start('DB_ERR_UNAVAILABLE', []);
    w.domain.addProject('plant-a');
    const r = await w.call('POST', '/api/exchange-hub/projects/plant-a/disable');
    assert.equal(r.status, 503, r.text);
    assert.equal(r.json.error.code, 'AUDIT_ERR_UNAVAILABLE');
    assert.match(r.json.error.message, /project\.disabled was done/);
    assert.match(r.json.error.message, /plant-a/);
    // the action itself happened: the caller is told so, not told it failed
    assert.equal(w.domain.projects.get('plant-a')?.enabled, false);
  });

  test('a refused action keeps its own answer when its record cannot be written', async () => {
    const w = await start('DB_ERR_UNAVAILABLE', []);
    const r = await w.call('POST', '/api/exchange-hub/projects/nowhere/disable');
    assert.equal(r.status, 404, r.text);
    assert.equal(r.json.error.code, 'STATUS_ERR_NOT_FOUND');
  });

  test('a written record: who, what, targets, interface (rest, or cli when the CLI says so), outcome', async () => {
    const seen: AuditRecord[] = [];
    const w = await start('', seen);
    w.domain.addProject('plant-b');
    assert.equal((await w.call('POST', '/api/exchange-hub/projects/plant-b/rotate', {})).status, 200);
    const cli = await w.call('POST', '/api/exchange-hub/projects/plant-b/enable', undefined, {
      headers: { 'x-gmq-client': 'cli' },
    });
    assert.equal(cli.status, 200);
    assert.equal((await w.call('POST', '/api/exchange-hub/projects/nowhere/enable')).status, 404);
    // reads are not operator actions
    assert.equal((await w.call('GET', '/api/exchange-hub/projects')).status, 200);
    assert.deepEqual(
      seen.map((r) => [r.action, r.token_id, r.role, r.interface, r.project_id, r.outcome]),
      [
        ['project.rotated', 'tokens[0]', 'admin', 'rest', 'plant-b', 'ok'],
        ['project.enabled', 'tokens[0]', 'admin', 'cli', 'plant-b', 'ok'],
        ['project.enabled', 'tokens[0]', 'admin', 'rest', 'nowhere', 'STATUS_ERR_NOT_FOUND'],
      ],
    );
    assert.deepEqual(seen[0].targets, { project_id: 'plant-b' }, 'ids only: no secret from the answer');
  });

  // A sync send is done when its command is accepted: its record is written from then on, beside
  // the wait for the result (one commit fewer on the sync path), and the answer still waits for it.
  const SYNC = '/api/exchange-hub/command/sync';

  test('a sync send is recorded while it waits for its result, once, with outcome ok', async () => {
    const seen: AuditRecord[] = [];
    const w = await start('', seen);
    w.domain.addProject('plant-s', 'online');
    // `hang`: delivered, never answered until the test completes it
    const call = w.call('POST', SYNC, { project_id: 'plant-s', command_type: 'hang', payload: {}, wait_ms: 30_000 });
    await until(() => seen.length === 1, 10_000, 'the record, before any result');
    const [id] = [...w.domain.commands.keys()];
    assert.deepEqual(
      [seen[0].action, seen[0].outcome, seen[0].interface, seen[0].project_id, seen[0].targets],
      ['command.sent', 'ok', 'rest', 'plant-s', { project_id: 'plant-s', command_id: id }],
    );
    w.domain.complete(id, 'done');
    const r = await call;
    assert.equal(r.status, 200, r.text);
    assert.equal(r.json.status, 'completed');
    assert.equal(seen.length, 1, 'one record for the action');
  });

  test('a sync send whose result came is answered only once its record is committed', async () => {
    const seen: AuditRecord[] = [];
    let open!: () => void;
    const gate = new Promise<void>((r) => {
      open = r;
    });
    const w = await start('', seen, captureLog(), gate);
    w.domain.addProject('plant-g', 'online');
    let answered = false;
    const call = w
      .call('POST', SYNC, { project_id: 'plant-g', command_type: 'echo', payload: { n: 1 }, wait_ms: 30_000 })
      .finally(() => {
        answered = true;
      });
    await until(() => [...w.domain.commands.values()].some((c) => c.status === 'completed'), 10_000, 'the result');
    // a window in which the answer must not come (not a bound): the record is not committed
    await new Promise((r) => setTimeout(r, 300));
    assert.equal(answered, false, 'answered before its audit record was committed');
    open();
    const r = await call;
    assert.equal(r.status, 200, r.text);
    assert.equal(r.json.result.output, '{"n":1}');
    assert.equal(seen.length, 1);
  });

  test("a sync send's wait that runs out (504) was still a send: its record says ok", async () => {
    const seen: AuditRecord[] = [];
    const w = await start('', seen);
    w.domain.addProject('plant-t', 'online');
    const r = await w.call('POST', SYNC, { project_id: 'plant-t', command_type: 'hang', payload: {}, wait_ms: 1_000 });
    assert.equal(r.status, 504, r.text);
    assert.equal(r.json.error.code, 'CMD_ERR_TIMEOUT');
    assert.deepEqual(
      seen.map((x) => [x.action, x.outcome, x.targets.command_id]),
      [['command.sent', 'ok', r.json.command_id]],
    );
  });

  test('a sync send whose record cannot be written is answered 503 AUDIT_ERR_UNAVAILABLE with its command id', async () => {
    const w = await start('DB_ERR_UNAVAILABLE', []);
    w.domain.addProject('plant-u', 'online');
    const r = await w.call('POST', SYNC, { project_id: 'plant-u', command_type: 'echo', payload: {}, wait_ms: 30_000 });
    assert.equal(r.status, 503, r.text);
    assert.equal(r.json.error.code, 'AUDIT_ERR_UNAVAILABLE');
    const [c] = [...w.domain.commands.values()];
    assert.match(r.json.error.message, /command\.sent was done/);
    assert.ok(r.json.error.message.includes(c.command_id), r.json.error.message);
    assert.equal(c.status, 'completed', 'the command itself ran');
  });

  test('with no audit module the action is answered, and the web module warns once', async () => {
    const log = captureLog();
    const w = await start(null, [], log);
    w.domain.addProject('plant-c');
    assert.equal((await w.call('POST', '/api/exchange-hub/projects/plant-c/disable')).status, 200);
    assert.equal((await w.call('POST', '/api/exchange-hub/projects/plant-c/enable')).status, 200);
    const warned = log.lines.filter((l) => /no audit module configured/.test(l.msg));
    assert.equal(warned.length, 1);
    assert.equal(warned[0].level, 40);
  });
});
