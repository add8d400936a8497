/**
 * web and grpc share one name per setting (issue 12): `max_sync_wait_ms` (web's was
 * `sync_wait_ms_max`) and `close_grace_ms` (grpc's was `stop_grace_ms`). The old names still
 * work, and the module warns once, naming the old and the new key.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { ProviderRegistry } from '../../../../core/registry.js';
import { grpcConfigSchema } from '../../../../modules/grpc/config.js';
import { GRPC, type GrpcStats } from '../../../../modules/grpc/contract/topics.js';
import { provider as grpcProvider } from '../../../../modules/grpc/index.js';
import { webConfigSchema } from '../../../../modules/web/config.js';
import { startHost } from '../../../helpers/host.js';
import { captureLog, startWeb } from '../../web/harness.js';

const API = '/api/exchange-hub';

describe('interface kit: one name per setting, old names still read', () => {
  test('defaults are each module’s own; the new names are read; the old names leave the parsed config', () => {
    const web = webConfigSchema.parse({});
    assert.equal(web.max_sync_wait_ms, 300_000);
    assert.equal(web.default_sync_wait_ms, 30_000);
    assert.equal(web.close_grace_ms, 2_000);
    const grpc = grpcConfigSchema.parse({});
    assert.equal(grpc.max_sync_wait_ms, 600_000);
    assert.equal(grpc.close_grace_ms, 2_000);
    assert.equal(grpc.sync_poll_ms, 1_000);

    assert.equal(webConfigSchema.parse({ max_sync_wait_ms: 500, close_grace_ms: 0 }).max_sync_wait_ms, 500);
    const old = webConfigSchema.parse({ sync_wait_ms_max: 700 });
    assert.equal(old.max_sync_wait_ms, 700);
    assert.equal('sync_wait_ms_max' in old, false);
    const grpcOld = grpcConfigSchema.parse({ stop_grace_ms: 0 });
    assert.equal(grpcOld.close_grace_ms, 0);
    assert.equal('stop_grace_ms' in grpcOld, false);
  });

  test('both names of one setting: refused, naming the old key; an old name of the other module: unknown key', () => {
    const both = webConfigSchema.safeParse({ sync_wait_ms_max: 1, max_sync_wait_ms: 2 });
    assert.equal(both.success, false);
    assert.deepEqual(both.error?.issues[0].path, ['sync_wait_ms_max']);
    assert.match(both.error!.issues[0].message, /renamed to max_sync_wait_ms/);
    assert.equal(grpcConfigSchema.safeParse({ stop_grace_ms: 1, close_grace_ms: 2 }).success, false);
    assert.equal(webConfigSchema.safeParse({ stop_grace_ms: 1 }).success, false, 'web never had stop_grace_ms');
    assert.equal(grpcConfigSchema.safeParse({ sync_wait_ms_max: 1 }).success, false, 'grpc never had it');
    assert.equal(webConfigSchema.safeParse({ sync_wait_ms_max: 0 }).success, false, 'validated as the new key');
  });

  test('web: sync_wait_ms_max still bounds wait_ms, and one warning names old and new key', async () => {
    const cap = captureLog();
    const w = await startWeb({ web: { sync_wait_ms_max: 500 }, log: cap.log });
    try {
      const r = await w.call('POST', `${API}/command/sync`, { project_id: 'p1', command_type: 'echo', wait_ms: 501 });
      assert.equal(r.status, 400);
      assert.equal(r.json.error.field, 'wait_ms');
      const warns = cap.lines.filter((l) => l.module === 'web' && l.level === 40 && /deprecated/.test(l.msg));
      assert.equal(warns.length, 1);
      assert.equal(
        warns[0].msg,
        'modules.web.sync_wait_ms_max is deprecated: it is read as max_sync_wait_ms; rename it in the config file',
      );
      assert.equal(warns[0].key, 'modules.web.sync_wait_ms_max');
      assert.equal(warns[0].use, 'modules.web.max_sync_wait_ms');
    } finally {
      await w.stop();
    }
  });

  test('grpc: stop_grace_ms still read, one warning naming old and new key; not repeated on a restart', async () => {
    const cap = captureLog();
    const th = await startHost(
      'modules:\n  grpc: { port: 0, stop_grace_ms: 300 }\n',
      new ProviderRegistry().register(grpcProvider),
      { log: cap.log },
    );
    try {
      const s = await th.host.bus.request<GrpcStats>(GRPC.stats, {});
      assert.ok(s.port > 0);
      await th.host.restartModule('grpc');
      const warns = cap.lines.filter((l) => l.module === 'grpc' && l.level === 40 && /deprecated/.test(l.msg));
      assert.deepEqual(
        warns.map((l) => l.msg),
        ['modules.grpc.stop_grace_ms is deprecated: it is read as close_grace_ms; rename it in the config file'],
      );
    } finally {
      await th.stop();
    }
  });
});
