/**
 * The outbox service against a real PostgreSQL and a real HTTP receiver: declarations and the
 * refusal of undeclared types (the business transaction rolls back), signed webhooks, retries
 * with backoff into dead, replay, ordering per key, two instances relaying one table, and a
 * dead instance's lease taken over.
 */
import assert from 'node:assert/strict';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, before, describe, test } from 'node:test';
import { parseConfig } from '../../../core/config.js';
import { errorCode } from '../../../core/errors.js';
import { silentLogger } from '../../../core/log.js';
import { DbPool } from '../../../core/services/db.js';
import { type OutboxConfig, outboxSchema } from '../../../core/services/outbox/contract.js';
import { backoffMs } from '../../../core/services/outbox/relay.js';
import { OutboxService } from '../../../core/services/outbox/service.js';
import { verifyWebhook } from '../../../core/services/outbox/signature.js';
import { claim } from '../../../core/services/outbox/tables.js';
import { withPgSchema } from '../../helpers/db.js';
import { until } from '../../helpers/wait.js';

const SECRET = 'a-webhook-secret-of-some-length';
const TABLE = 'test_event_outbox';

interface Received {
  event_id: string;
  key: string;
  seq: number;
  signed: boolean;
}

/** A webhook receiver: records every request; `failFor(n)` answers 500 to the next n. */
class Receiver {
  readonly got: Received[] = [];
  private failing = 0;
  private readonly server = http.createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c) => chunks.push(c));
    req.on('end', () => {
      const body = Buffer.concat(chunks).toString('utf8');
      if (this.failing > 0) {
        this.failing--;
        res.writeHead(500).end();
        return;
      }
      const env = JSON.parse(body);
      const signed = verifyWebhook(
        SECRET,
        req.headers['x-gmq-timestamp'] as string,
        body,
        req.headers['x-gmq-signature'] as string,
      );
      assert.equal(req.headers['x-gmq-event-id'], env.event_id);
      this.got.push({ event_id: env.event_id, key: env.key, seq: env.data.seq, signed });
      res.writeHead(204).end();
    });
  });
  url = '';

  async start(): Promise<void> {
    await new Promise<void>((r) => this.server.listen(0, '127.0.0.1', r));
    this.url = `http://127.0.0.1:${(this.server.address() as AddressInfo).port}/hook`;
  }
  failFor(n: number): void {
    this.failing = n;
  }
  ids(): string[] {
    return this.got.map((g) => g.event_id);
  }
  close(): Promise<void> {
    this.server.closeAllConnections();
    return new Promise((r) => this.server.close(() => r()));
  }
}

function outboxConfig(url: string, over: Record<string, unknown> = {}): OutboxConfig {
  return outboxSchema.parse({
    poll_interval_ms: 50,
    lease_ms: 2_000,
    routes: {
      hook: {
        events: ['command.completed', 'command.failed'],
        destination: { type: 'webhook', url, secret: SECRET, timeout_ms: 1_000 },
        backoff: { initial_ms: 20, max_ms: 100 },
        max_attempts: 4,
        ...over,
      },
    },
  });
}

describe('outbox service (PostgreSQL, webhook)', () => {
  let pg: { config: import('../../../core/services/db.js').DbConfig; drop(): Promise<void> };
  const receiver = new Receiver();
  const cleanups: Array<() => Promise<unknown>> = [];

  before(async () => {
    pg = await withPgSchema();
    await receiver.start();
  });
  after(async () => {
    for (const c of cleanups.reverse()) await c().catch(() => undefined);
    await receiver.close();
    await pg.drop();
  });

  async function instance(cfg: OutboxConfig): Promise<{ svc: OutboxService; pool: DbPool }> {
    const pool = new DbPool({ default: pg.config }, silentLogger());
    const svc = new OutboxService(cfg, pool, silentLogger());
    cleanups.push(async () => {
      await svc.stop();
      await pool.close();
    });
    const mod = svc.forModule('command');
    await pool.migrate('command', [mod.migration('001_event_outbox', TABLE)]);
    mod.declare({ table: TABLE, events: ['command.completed', 'command.failed', 'command.timeout'] });
    return { svc, pool };
  }

  async function write(svc: OutboxService, pool: DbPool, key: string, seqs: number[]): Promise<string[]> {
    const mod = svc.forModule('command');
    const ids: string[] = [];
    await pool.get().transaction(async (trx) => {
      for (const seq of seqs) ids.push((await mod.add(trx, 'command.completed', key, { seq }))!);
    });
    return ids;
  }

  test('an undeclared event type is refused with a code and the business transaction rolls back', async () => {
    const { svc, pool } = await instance(outboxConfig(receiver.url));
    await pool.get().raw('CREATE TABLE IF NOT EXISTS business (id int)');
    const status = svc.forModule('status'); // declared nothing
    await assert.rejects(
      pool.get().transaction(async (trx) => {
        await trx('business').insert({ id: 1 });
        await status.add(trx, 'project.online', 'p', {});
      }),
      (err) => errorCode(err) === 'OUTBOX_ERR_UNDECLARED_EVENT',
    );
    assert.equal((await pool.get()('business').count('* as n'))[0].n, '0', 'the business row rolled back');
    // another module cannot take over a type the command module declared
    assert.throws(
      () => status.declare({ table: 'status_x', events: ['command.completed'] }),
      (err) => errorCode(err) === 'OUTBOX_ERR_EVENT_OWNED',
    );
    assert.throws(
      () => status.declare({ table: 'status_x', events: ['job.finished'] }),
      (err) => errorCode(err) === 'OUTBOX_ERR_UNKNOWN_EVENT',
    );
    // a declared type no route wants writes nothing
    assert.equal(await svc.forModule('command').add(pool.get(), 'command.timeout', 'p', {}), null);
    await svc.stop();
  });

  test('a receiver answering 500 for a while gets each event once, signed, in key order', async () => {
    receiver.got.length = 0;
    const { svc, pool } = await instance(outboxConfig(receiver.url));
    receiver.failFor(3);
    const a = await write(svc, pool, 'k1', [1, 2, 3]);
    const b = await write(svc, pool, 'k2', [1, 2]);
    await until(() => receiver.got.length >= 5, 10_000, 'five deliveries');
    await until(async () => (await svc.stats()).routes[0].pending === 0, 10_000, 'nothing pending');
    assert.deepEqual(receiver.ids().sort(), [...a, ...b].sort(), 'each event id exactly once');
    assert.ok(
      receiver.got.every((g) => g.signed),
      'every signature verifies',
    );
    const seqOf = (k: string) => receiver.got.filter((g) => g.key === k).map((g) => g.seq);
    assert.deepEqual(seqOf('k1'), [1, 2, 3], 'per key in commit order despite the failures');
    assert.deepEqual(seqOf('k2'), [1, 2]);
    const s = (await svc.stats()).routes[0];
    assert.equal(s.published, 5);
    assert.ok(s.retried >= 1, `retried ${s.retried}`);
    await svc.stop();
  });

  test('an event dies after max_attempts, is listed, and a replay delivers it', async () => {
    receiver.got.length = 0;
    const { svc, pool } = await instance(outboxConfig(receiver.url, { max_attempts: 2 }));
    receiver.failFor(2);
    const [id] = await write(svc, pool, 'dead-key', [7]);
    await until(async () => (await svc.stats()).routes[0].dead === 1, 10_000, 'the event dead');
    const dead = await svc.deadList({ route: 'hook' });
    assert.equal(dead.total, 1);
    assert.equal(dead.items[0].event_id, id);
    assert.equal(dead.items[0].attempts, 2);
    assert.match(dead.items[0].last_error ?? '', /answered 500/);
    assert.equal(receiver.got.length, 0);
    await assert.rejects(svc.replay({ event_id: id, route: 'nope' }), (e) => errorCode(e) === 'OUTBOX_ERR_NOT_FOUND');
    assert.deepEqual(await svc.replay({ event_id: id }), { event_id: id, routes: ['hook'] });
    await until(() => receiver.got.length === 1, 10_000, 'the replayed event delivered');
    assert.equal(receiver.got[0].event_id, id);
    assert.equal((await svc.deadList({})).total, 0);
    await assert.rejects(svc.replay({ event_id: id }), (e) => errorCode(e) === 'OUTBOX_ERR_NOT_FOUND');
    await svc.stop();
  });

  test('two instances relaying one table never send an event twice', async () => {
    receiver.got.length = 0;
    const one = await instance(outboxConfig(receiver.url, { concurrency: 8 }));
    const two = await instance(outboxConfig(receiver.url, { concurrency: 8 }));
    const ids: string[] = [];
    for (let i = 0; i < 20; i++) {
      const by = i % 2 === 0 ? one : two;
      ids.push(...(await write(by.svc, by.pool, `key-${i % 7}`, [i * 10, i * 10 + 1, i * 10 + 2])));
    }
    await until(() => receiver.got.length >= ids.length, 20_000, `${ids.length} deliveries`);
    await until(async () => (await one.svc.stats()).routes[0].pending === 0, 10_000, 'nothing pending');
    assert.equal(receiver.got.length, ids.length, 'no event sent twice');
    assert.equal(new Set(receiver.ids()).size, ids.length);
    const published = (await one.svc.stats()).routes[0].published + (await two.svc.stats()).routes[0].published;
    assert.equal(published, ids.length);
    for (let k = 0; k < 7; k++) {
      const seqs = receiver.got.filter((g) => g.key === `key-${k}`).map((g) => g.seq);
      assert.deepEqual(
        seqs,
        [...seqs].sort((x, y) => x - y),
        `key-${k} in order`,
      );
    }
    await one.svc.stop();
    await two.svc.stop();
  });

  test("a dead instance's claim is taken over when its lease ends", async () => {
    receiver.got.length = 0;
    const { svc, pool } = await instance(outboxConfig(receiver.url));
    await svc.stop(); // this one only writes
    const [id] = await write(svc, pool, 'lease', [1]);
    // an instance that claimed it and then died (never marks it)
    const claimed = await claim(pool.get(), TABLE, 'hook', 'dead-instance', 1_000, 10);
    assert.deepEqual(
      claimed.map((r) => r.event_id),
      [id],
    );
    const other = await instance(outboxConfig(receiver.url));
    await until(() => receiver.got.length === 1, 10_000, 'the event delivered by the other instance');
    assert.equal(receiver.got[0].event_id, id);
    await other.svc.stop();
  });
});

describe('outbox config and backoff', () => {
  test('a route naming an unknown event type is refused with the key named', () => {
    const yaml = `outbox:
  routes:
    lake:
      events: [command.completed, job.finished]
      destination: { type: mqtt, url: "mqtt://127.0.0.1:1883" }
`;
    assert.throws(
      () => parseConfig(yaml, 'config.yml', {}),
      (err: Error) =>
        errorCode(err) === 'HOST_ERR_CONFIG_INVALID' &&
        err.message.includes('outbox.routes.lake.events[1]') &&
        err.message.includes('job.finished'),
    );
  });

  test('destination settings are validated with their key', () => {
    const yaml = `outbox:
  lease_ms: 1000
  routes:
    hook:
      events: [project.online]
      destination: { type: webhook, url: "http://x/", secret: "0123456789abcdef", timeout_ms: 5000 }
`;
    assert.throws(
      () => parseConfig(yaml, 'config.yml', {}),
      (err: Error) => err.message.includes('outbox.routes.hook.destination.timeout_ms'),
    );
    const ok = parseConfig(yaml.replace('lease_ms: 1000', 'lease_ms: 10000'), 'config.yml', {});
    assert.equal(ok.outbox.routes.hook.max_attempts, 10);
    assert.equal(parseConfig('', 'config.yml', {}).outbox.lease_ms, 30_000, 'no outbox section: defaults, no routes');
  });

  test('backoff doubles, is capped, and jitters within 50-100 %', () => {
    const b = { initial_ms: 100, max_ms: 1000 };
    assert.equal(
      backoffMs(0, b, () => 1),
      100,
    );
    assert.equal(
      backoffMs(3, b, () => 1),
      800,
    );
    assert.equal(
      backoffMs(10, b, () => 1),
      1000,
    );
    assert.equal(
      backoffMs(3, b, () => 0),
      400,
    );
  });
});
