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
import { captureLog, startWeb, type WebHarness } from './harness.js';

/** An audit module that fails every record with `code` (or writes it down when `code` is empty). */
function auditStandIn(seen: AuditRecord[]): ModuleProvider<{ fail_with: string }> {
  return {
    name: 'audit-stand-in',
    schema: z.object({ fail_with: z.string().default('') }).strict(),
    create: (ctx) => ({
      start() {
        ctx.bus.subscribe(AUDIT.record, (rec) => {
          if (ctx.config.fail_with === 'DB_ERR_UNAVAILABLE') {
            throw new HubError('DB_ERR_UNAVAILABLE', 'database "default" unreachable');
          }
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

  const start = async (failWith: string | null, seen: AuditRecord[], log = captureLog()) => {
    web = await startWeb({
      token: 'tok-0123456789',
      fake: { answer_status: true },
      log: log.log,
      ...(failWith === null
        ? {}
        : {
            extraYaml: `  audit:\n    provider: audit-stand-in\n    fail_with: "${failWith}"\n`,
            registry: (r) => r.register(auditStandIn(seen)),
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
