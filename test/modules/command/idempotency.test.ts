/**
 * Idempotent sends in the command module, on both drivers: a key names one command; the same
 * request again answers it (flagged as a replay), another request is refused; concurrent sends
 * with one key make one command (in one hub, and on PostgreSQL across two hubs sharing the
 * tables); keys survive a module restart and go after the retention; malformed keys are refused.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { errorCode } from '../../../core/errors.js';
import { COMMAND, type CommandView, type SentCommand } from '../../../modules/command/contract/topics.js';
import { until } from '../../helpers/wait.js';
import { DRIVERS, type Driver, FAST, type Hub, startHub } from './harness.js';

type Page = { items: CommandView[]; total: number };

async function refusal(p: Promise<unknown>): Promise<{ code: string | undefined; message: string; details: unknown }> {
  try {
    await p;
  } catch (err) {
    return {
      code: errorCode(err),
      message: (err as Error).message,
      details: (err as { details?: unknown }).details,
    };
  }
  assert.fail('expected a refusal');
}

for (const driver of DRIVERS) {
  describe(`idempotent sends (${driver.name})`, () => {
    let hub: Hub;
    before(async () => {
      hub = await startHub(driver);
    });
    after(async () => {
      await hub?.stop();
    });

    const send = (r: Record<string, unknown>) => hub.req<SentCommand>(COMMAND.send, r);
    const count = async (project_id: string) =>
      (await hub.req<Page>(COMMAND.list, { project_id, limit: 500 })).items.length;

    test('same key and request: the first command, flagged; executed once', async () => {
      hub.project('i-same');
      const req = {
        project_id: 'i-same',
        command_type: 'echo',
        payload: { a: 1, b: [1, 2] },
        timeout_ms: 5000,
        idempotency_key: 'order-1',
      };
      const first = await send(req);
      assert.equal(first.idempotent_replayed, undefined);
      await hub.waitStatus(first.command_id, (d) => d.status === 'completed', 'completed');
      // the payload's key order does not count (canonical JSON)
      const again = await send({ ...req, payload: { b: [1, 2], a: 1 } });
      assert.equal(again.command_id, first.command_id);
      assert.equal(again.idempotent_replayed, true);
      assert.equal(again.status, 'completed', 'the current view, not the one first answered');
      // a sync retry of the async send (is_sync and command_id are not part of the request's identity)
      const sync = await send({ ...req, is_sync: true, command_id: '3b0a3b55-1f52-4f4d-9c37-000000000001' });
      assert.equal(sync.command_id, first.command_id);
      assert.equal(await count('i-same'), 1);
      // every downlink of the project carried that one command (the relay may re-publish it before the ack)
      const ids = hub.w.published.filter((p) => p.msg.project_id === 'i-same').map((p) => p.msg.message_id);
      assert.deepEqual([...new Set(ids)], [first.command_id]);
      const stats = await hub.req<Record<string, number>>(COMMAND.stats, {});
      assert.ok(stats.idempotent_replays >= 2);
    });

    test('same key, another request: CMD_ERR_IDEMPOTENCY_MISMATCH naming the first command', async () => {
      hub.project('i-diff');
      const req = { project_id: 'i-diff', command_type: 'echo', payload: { n: 1 }, idempotency_key: 'k-diff' };
      const first = await send(req);
      for (const other of [
        { ...req, payload: { n: 2 } },
        { ...req, command_type: 'other' },
        { ...req, timeout_ms: 1234 },
        { ...req, offline_policy: 'queue' },
        { ...req, operator_id: 'someone' },
      ]) {
        const r = await refusal(send(other));
        assert.equal(r.code, 'CMD_ERR_IDEMPOTENCY_MISMATCH', JSON.stringify(other));
        assert.match(r.message, new RegExp(first.command_id));
        assert.deepEqual(r.details, { field: 'idempotency_key', command_id: first.command_id });
      }
      assert.equal(await count('i-diff'), 1);
      const stats = await hub.req<Record<string, number>>(COMMAND.stats, {});
      assert.ok(stats.idempotency_mismatches >= 5);
    });

    test('a known key is answered even once the project is offline or disabled', async () => {
      hub.project('i-off');
      const req = { project_id: 'i-off', command_type: 'echo', idempotency_key: 'k-off' };
      const first = await send(req);
      hub.setState('i-off', 'offline');
      hub.project('i-off', 'offline', 'auto', false);
      const again = await send(req);
      assert.equal(again.command_id, first.command_id);
      assert.equal(again.idempotent_replayed, true);
      // a new key is refused as before
      const r = await refusal(send({ ...req, idempotency_key: 'k-off-2' }));
      assert.equal(r.code, 'CMD_ERR_INVALID');
    });

    test('a refused send stores no key: the retry after the cause is gone makes the command', async () => {
      hub.project('i-later', 'offline');
      const req = { project_id: 'i-later', command_type: 'echo', idempotency_key: 'k-later' };
      assert.equal((await refusal(send(req))).code, 'CMD_ERR_PROJECT_OFFLINE');
      hub.setState('i-later', 'online');
      const made = await send(req);
      assert.equal(made.idempotent_replayed, undefined);
      assert.equal((await send(req)).command_id, made.command_id);
    });

    test('50 concurrent sends with one key make one command', async () => {
      hub.project('i-race');
      const req = { project_id: 'i-race', command_type: 'echo', payload: { x: 1 }, idempotency_key: 'race' };
      const views = await Promise.all(Array.from({ length: 50 }, () => send(req)));
      assert.equal(new Set(views.map((v) => v.command_id)).size, 1);
      assert.equal(views.filter((v) => !v.idempotent_replayed).length, 1, 'exactly one answer made it');
      // and with different bodies racing, one wins and the others are refused
      const mixed = await Promise.allSettled(
        Array.from({ length: 20 }, (_, i) => send({ ...req, idempotency_key: 'race-mixed', payload: { i } })),
      );
      assert.equal(mixed.filter((m) => m.status === 'fulfilled').length, 1);
      for (const m of mixed) {
        if (m.status === 'rejected') assert.equal(errorCode(m.reason), 'CMD_ERR_IDEMPOTENCY_MISMATCH');
      }
      assert.equal(await count('i-race'), 2);
      await hub.waitStatus(views[0].command_id, (d) => d.status === 'completed', 'completed');
    });

    test('keys are refused when malformed; the same key with many commands in one group', async () => {
      hub.project('i-bad');
      for (const key of ['', ' lead', 'trail ', 'é', 'tab\there', 'x'.repeat(256), 42]) {
        const r = await refusal(send({ project_id: 'i-bad', command_type: 'echo', idempotency_key: key }));
        assert.equal(r.code, 'CMD_ERR_INVALID', JSON.stringify(key));
        assert.deepEqual(r.details, { field: 'idempotency_key' });
      }
      const longest = 'k'.repeat(255);
      const printable = ' !"#$%&\'()*+,-./09:;<=>?@AZ[\\]^_`az{|}~'.trim();
      for (const key of [longest, printable, 'with inner space']) {
        const v = await send({ project_id: 'i-bad', command_type: 'echo', idempotency_key: key });
        assert.equal(
          (await send({ project_id: 'i-bad', command_type: 'echo', idempotency_key: key })).command_id,
          v.command_id,
        );
      }
      // keyed and plain sends of the same moment share a statement and each gets its own command
      const mixed = await Promise.all(
        Array.from({ length: 30 }, (_, i) =>
          send({
            project_id: 'i-bad',
            command_type: 'echo',
            payload: { i },
            ...(i % 2 ? { idempotency_key: `g-${i}` } : {}),
          }),
        ),
      );
      assert.equal(new Set(mixed.map((v) => v.command_id)).size, 30);
    });

    test('a caller command_id taken by another command is refused with a key, and stores no key', async () => {
      hub.project('i-cid');
      const taken = await send({ project_id: 'i-cid', command_type: 'echo' });
      const r = await refusal(
        send({ project_id: 'i-cid', command_type: 'echo', command_id: taken.command_id, idempotency_key: 'k-cid' }),
      );
      assert.equal(r.code, 'CMD_ERR_INVALID');
      const fresh = await send({ project_id: 'i-cid', command_type: 'echo', idempotency_key: 'k-cid' });
      assert.notEqual(fresh.command_id, taken.command_id);
      assert.equal(fresh.idempotent_replayed, undefined);
    });

    test('keys survive a restart of the command module', async () => {
      hub.project('i-restart');
      const req = { project_id: 'i-restart', command_type: 'echo', idempotency_key: 'k-restart' };
      const first = await send(req);
      await hub.h.host.restartModule('command');
      const again = await send(req);
      assert.equal(again.command_id, first.command_id);
      assert.equal(again.idempotent_replayed, true);
    });
  });

  describe(`idempotency key retention (${driver.name})`, () => {
    let hub: Hub;
    before(async () => {
      hub = await startHub(driver, { ...FAST, idempotency_retention_ms: 400, idempotency_sweep_interval_ms: 50 });
    });
    after(async () => {
      await hub?.stop();
    });

    test('a key older than the retention is swept: the same key then makes a new command', async () => {
      hub.project('i-ttl');
      const req = { project_id: 'i-ttl', command_type: 'echo', idempotency_key: 'k-ttl' };
      const first = await hub.req<SentCommand>(COMMAND.send, req);
      assert.equal((await hub.req<SentCommand>(COMMAND.send, req)).command_id, first.command_id);
      await until(
        async () => (await hub.req<Record<string, number>>(COMMAND.stats, {})).idempotency_keys_expired >= 1,
        10_000,
        'the key swept',
      );
      const second = await hub.req<SentCommand>(COMMAND.send, req);
      assert.notEqual(second.command_id, first.command_id);
      // the first command itself stays
      assert.equal((await hub.get(first.command_id)).command_id, first.command_id);
    });
  });
}

const pg = DRIVERS.find((d) => d.name === 'pg')!;

describe('idempotent sends across two hub instances on one PostgreSQL (pg)', () => {
  const hubs: Hub[] = [];
  let drop: (() => Promise<void>) | undefined;
  before(async () => {
    const db = await pg.db();
    drop = db.cleanup;
    // both hubs on the same schema; the schema is dropped once, after both stopped
    const shared: Driver = { name: 'pg', db: async () => ({ config: db.config, cleanup: async () => undefined }) };
    hubs.push(await startHub(shared));
    hubs.push(await startHub(shared));
  });
  after(async () => {
    for (const h of hubs) await h.stop();
    await drop?.();
  });

  test('concurrent sends with one key on both instances make one command', async () => {
    for (const h of hubs) h.project('i-two');
    for (let round = 0; round < 10; round++) {
      const req = { project_id: 'i-two', command_type: 'echo', payload: { round }, idempotency_key: `two-${round}` };
      const views = await Promise.all(
        Array.from({ length: 10 }, (_, i) => hubs[i % 2].req<SentCommand>(COMMAND.send, req)),
      );
      assert.equal(new Set(views.map((v) => v.command_id)).size, 1, `round ${round}`);
      assert.equal(views.filter((v) => !v.idempotent_replayed).length, 1, `round ${round}`);
    }
    const page = await hubs[0].req<Page>(COMMAND.list, { project_id: 'i-two', limit: 500 });
    assert.equal(page.total, 10);
  });
});
