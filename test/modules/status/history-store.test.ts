/**
 * The presence history and the audit table as stored, on both backends (PGlite and a PostgreSQL
 * server): a project's changes read newest first and paged, the time filters, the retention
 * cleanup deleting only what is past it (in batches), and the audit records' checks, filters and
 * cleanup. The end-to-end behaviour (real hub, real agents, REST and gRPC) is in
 * test/e2e/history-audit.test.ts.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import type { Knex } from 'knex';
import { errorCode } from '../../../core/errors.js';
import '../../../modules/contracts.js';
import { migrations as auditMigrations } from '../../../modules/audit/migrations.js';
import { AuditStore } from '../../../modules/audit/store.js';
import { cleanupHistory, parseHistoryRequest, readHistory } from '../../../modules/status/history.js';
import { type PresenceDb, statusDb } from './pg-presence-db.js';

const DAY = 86_400_000;

const openDb = (backend: 'pglite' | 'pg'): Promise<PresenceDb> =>
  statusDb(backend, { also: [['audit', auditMigrations]] });

for (const backend of ['pglite', 'pg'] as const) {
  describe(`presence history and audit storage (${backend})`, () => {
    let h: { db: Knex; close(): Promise<void> };
    before(async () => {
      h = await openDb(backend);
    });
    after(async () => {
      await h?.close();
    });

    test('a project’s changes come newest first, paged, within since/until', async () => {
      const t0 = Date.parse('2026-01-01T00:00:00.000Z');
      const rows = [
        ['offline', 'connecting', 'register received'],
        ['connecting', 'verifying', 'verifying registration'],
        ['verifying', 'online', 'registration complete'],
        ['online', 'offline', 'heartbeat timeout'],
        ['offline', 'connecting', 'register received'],
      ].map(([f, t, r], i) => ({
        project_id: 'hist-a',
        from_state: f,
        to_state: t,
        reason: r,
        at: new Date(t0 + i * 1000).toISOString(),
      }));
      // another project's change never shows in this one's history
      await h.db('project_status_history').insert([
        ...rows,
        {
          project_id: 'hist-b',
          from_state: 'offline',
          to_state: 'online',
          reason: 'x',
          at: new Date(t0).toISOString(),
        },
      ]);
      const p1 = await readHistory(h.db, parseHistoryRequest({ project_id: 'hist-a', limit: 2 }));
      assert.equal(p1.total, 5);
      assert.deepEqual(
        p1.items.map((c) => c.reason),
        ['register received', 'heartbeat timeout'],
      );
      assert.equal(p1.items[1].from_state, 'online');
      assert.equal(p1.items[1].to_state, 'offline');
      assert.equal(p1.items[0].at, new Date(t0 + 4000).toISOString());
      const p3 = await readHistory(h.db, parseHistoryRequest({ project_id: 'hist-a', limit: 2, offset: 4 }));
      assert.deepEqual(
        p3.items.map((c) => c.reason),
        ['register received'],
      );
      assert.equal(p3.items[0].to_state, 'connecting');
      const window = await readHistory(
        h.db,
        parseHistoryRequest({
          project_id: 'hist-a',
          since: String(t0 + 1000),
          until: new Date(t0 + 3000).toISOString(),
        }),
      );
      assert.deepEqual(
        window.items.map((c) => c.reason),
        ['heartbeat timeout', 'registration complete', 'verifying registration'],
      );
      assert.equal(window.total, 3);
    });

    test('bad filters are refused with STATUS_ERR_INVALID naming the field', () => {
      for (const [body, field] of [
        [{ project_id: 'x', since: 'yesterday' }, 'since'],
        [{ project_id: 'x', until: '99999-01-01T00:00:00Z' }, 'until'],
        [{ project_id: 'x', limit: 0 }, 'limit'],
        [{ project_id: 'x', offset: -1 }, 'offset'],
        [{ project_id: 'x', extra: 1 }, '(request)'],
      ] as const) {
        assert.throws(
          () => parseHistoryRequest(body),
          (err: unknown) => errorCode(err) === 'STATUS_ERR_INVALID' && (err as Error).message.includes(field),
          JSON.stringify(body),
        );
      }
    });

    test('the retention cleanup deletes only changes past it, in batches', async () => {
      const now = Date.parse('2026-06-01T00:00:00.000Z');
      const old = Array.from({ length: 5200 }, (_, i) => ({
        project_id: 'ret-old',
        from_state: 'offline',
        to_state: 'online',
        reason: 'register',
        at: new Date(now - 31 * DAY - i).toISOString(),
      }));
      for (let i = 0; i < old.length; i += 1000) await h.db('project_status_history').insert(old.slice(i, i + 1000));
      await h.db('project_status_history').insert({
        project_id: 'ret-old',
        from_state: 'online',
        to_state: 'offline',
        reason: 'disconnect',
        at: new Date(now - 29 * DAY).toISOString(),
      });
      const before = Number((await h.db('project_status_history').count({ n: '*' }))[0].n);
      // the rows of the first test are from January: past 30 days on June 1st too
      const deleted = await cleanupHistory(h.db, now, 30 * DAY);
      assert.ok(deleted >= 5200, `deleted ${deleted}`);
      const left = await h.db('project_status_history').where('at', '<', new Date(now - 30 * DAY).toISOString());
      assert.equal(left.length, 0);
      const kept = await readHistory(h.db, parseHistoryRequest({ project_id: 'ret-old' }));
      assert.deepEqual(
        kept.items.map((c) => c.reason),
        ['disconnect'],
      );
      assert.equal(Number((await h.db('project_status_history').count({ n: '*' }))[0].n), before - deleted);
      assert.equal(await cleanupHistory(h.db, now, 30 * DAY), 0, 'nothing left to delete');
    });

    test('audit records: written, listed newest first with filters, refused when malformed, cleaned up', async () => {
      const store = new AuditStore(() => h.db);
      const base = Date.parse('2026-03-01T00:00:00.000Z');
      const rec = (i: number, over: Record<string, unknown> = {}) => ({
        action: 'command.sent',
        token_id: 'tokens[0]',
        role: 'admin',
        interface: 'rest',
        project_id: 'aud-p',
        targets: { project_id: 'aud-p', command_id: `c-${i}` },
        outcome: 'ok',
        at: base + i * 1000,
        ...over,
      });
      const first = await store.write(rec(0));
      assert.equal(first.at, new Date(base).toISOString());
      assert.deepEqual(first.targets, { project_id: 'aud-p', command_id: 'c-0' });
      await store.write(rec(1, { action: 'project.rotated', token_id: 'tokens[1]', interface: 'grpc' }));
      await store.write(rec(2, { project_id: null, targets: { module: 'status' }, action: 'module.restarted' }));
      await store.write(rec(3, { outcome: 'CMD_ERR_NOT_FOUND', action: 'command.cancelled' }));

      const all = await store.list({});
      assert.equal(all.total, 4);
      assert.deepEqual(
        all.items.map((e) => e.action),
        ['command.cancelled', 'module.restarted', 'project.rotated', 'command.sent'],
      );
      assert.equal(all.items[1].project_id, null);
      assert.equal((await store.list({ token_id: 'tokens[1]' })).items[0].interface, 'grpc');
      assert.equal((await store.list({ action: 'command.sent' })).total, 1);
      assert.equal((await store.list({ project_id: 'aud-p' })).total, 3);
      const win = await store.list({ since: base + 1000, until: new Date(base + 2000).toISOString() });
      assert.deepEqual(
        win.items.map((e) => e.action),
        ['module.restarted', 'project.rotated'],
      );
      const paged = await store.list({ limit: 1, offset: 3 });
      assert.equal(paged.items[0].action, 'command.sent');

      for (const [body, field] of [
        [rec(9, { action: 'command.deleted' }), 'action'],
        [rec(9, { interface: 'smtp' }), 'interface'],
        [rec(9, { token_id: 'a\u0000b' }), 'token_id'],
        [rec(9, { targets: { secret: { nested: true } } }), 'targets'],
      ] as const) {
        await assert.rejects(
          store.write(body),
          (err: unknown) => errorCode(err) === 'AUDIT_ERR_INVALID' && (err as Error).message.includes(field),
        );
      }
      await assert.rejects(store.list({ since: 'soon' }), (err: unknown) => errorCode(err) === 'AUDIT_ERR_INVALID');
      await assert.rejects(store.list({ action: 'x' }), (err: unknown) => errorCode(err) === 'AUDIT_ERR_INVALID');
      assert.equal((await store.list({})).total, 4, 'a refused record wrote nothing');

      assert.equal(await store.cleanup(base + 365 * DAY + 1500, 365 * DAY), 2);
      assert.deepEqual(
        (await store.list({})).items.map((e) => e.action),
        ['command.cancelled', 'module.restarted'],
      );
    });

    test('audit records of one moment share a statement; each caller gets its own record; a record the database refuses fails alone', async () => {
      const store = new AuditStore(() => h.db);
      const at = Date.parse('2026-04-01T00:00:00.000Z');
      const rec = (i: number, token_id = 'tokens[0]') => ({
        action: 'command.sent',
        token_id,
        role: 'operator',
        interface: 'rest',
        project_id: 'aud-group',
        targets: { project_id: 'aud-group', command_id: `g-${i}` },
        outcome: 'ok',
        at: at + i,
      });
      const before = store.statements;
      const written = await Promise.all(Array.from({ length: 300 }, (_, i) => store.write(rec(i))));
      assert.ok(store.statements - before <= 3, `300 records took ${store.statements - before} statements`);
      written.forEach((e, i) => {
        assert.equal(e.targets.command_id, `g-${i}`);
        assert.equal(e.at, new Date(at + i).toISOString());
      });
      const ids = written.map((e) => BigInt(e.audit_id));
      assert.ok(
        ids.every((id, i) => i === 0 || id > ids[i - 1]),
        'ids follow the order the records came in',
      );
      // a lone surrogate passes the record's checks but not PostgreSQL's jsonb: that record alone fails
      const mixed = await Promise.allSettled([
        store.write(rec(1000)),
        store.write(rec(1001, 'tok\uD800')),
        store.write(rec(1002)),
      ]);
      assert.deepEqual(
        mixed.map((r) => r.status),
        ['fulfilled', 'rejected', 'fulfilled'],
      );
      assert.equal((await store.list({ project_id: 'aud-group', limit: 500 })).total, 302);
    });
  });
}
