import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { agentMaySubscribe, checkAgentPublish } from '../../../modules/broker/acl.js';
import { Authenticator } from '../../../modules/broker/auth.js';
import { BoundedEmitter, type MqLike, SINK_TOPIC } from '../../../modules/broker/emitter.js';
import { TokenBucket } from '../../../modules/shared/token-bucket.js';
import { until } from '../../helpers/wait.js';

/**
 * An mq whose subscribers complete synchronously (what made mqemitter's queue recurse), except
 * the first `hold` emits, which complete when the test says so.
 */
function fakeMq(hold: number) {
  const held: Array<() => void> = [];
  let emitted = 0;
  const mq: MqLike = {
    on: () => undefined,
    removeListener: () => undefined,
    emit(_p, cb) {
      if (emitted++ < hold) held.push(() => cb?.(null));
      else cb?.(null);
    },
    close: (cb) => setImmediate(cb),
  };
  return { mq, held, emitted: () => emitted };
}

describe('BoundedEmitter', () => {
  test('200 000 QoS 1 messages waiting behind a full gate drain without recursion', async () => {
    const inner = fakeMq(1);
    const gate = new BoundedEmitter(inner.mq, 1, 10);
    let done = 0;
    gate.emit({ topic: 'a/b', qos: 1 }, () => done++); // takes the only slot and holds it
    for (let i = 0; i < 200_000; i++) gate.emit({ topic: 'a/b', qos: 1 }, () => done++);
    assert.equal(gate.waitingCount, 200_000);
    inner.held[0]();
    await until(() => done === 200_001, 20_000, 'every waiting message');
    assert.equal(inner.emitted(), 200_001);
    assert.equal(gate.shed, 0);
    assert.equal(gate.waitingCount, 0);
    assert.equal(gate.inflight, 0);
  });

  test('QoS 0 is shed only when max_waiting messages already wait; $SYS and QoS 1 always wait', async () => {
    const inner = fakeMq(Infinity);
    const gate = new BoundedEmitter(inner.mq, 2, 3);
    const results: string[] = [];
    const emit = (topic: string, qos: number, tag: string) => gate.emit({ topic, qos }, () => results.push(tag));
    emit('t', 0, 'run1');
    emit('t', 0, 'run2'); // both slots taken
    emit('t', 0, 'wait1');
    emit('t', 0, 'wait2');
    emit('t', 1, 'wait3');
    emit('t', 0, 'shed1'); // three wait: shed
    emit('$SYS/x/heartbeat', 0, 'sys'); // never shed
    emit('t', 1, 'q1'); // never shed
    assert.equal(gate.shed, 1);
    assert.equal(gate.waitingCount, 5);
    await until(() => results.includes('shed1'), 1000, 'the shed callback');
    // finish deliveries one by one: the waiting ones follow in order
    while (results.length < 8) {
      inner.held.shift()?.();
      await new Promise((r) => setImmediate(r));
    }
    assert.deepEqual(results, ['shed1', 'run1', 'run2', 'wait1', 'wait2', 'wait3', 'sys', 'q1']);
    assert.equal(gate.inflight, 0);
  });

  test('refused publishes are dropped at the sink, asynchronously; close fails what still waits', async () => {
    const inner = fakeMq(Infinity);
    const gate = new BoundedEmitter(inner.mq, 1, 10);
    let sinkDone = false;
    gate.emit({ topic: SINK_TOPIC, qos: 1 }, () => {
      sinkDone = true;
    });
    assert.equal(sinkDone, false, 'never synchronously');
    await until(() => sinkDone, 1000, 'the sink callback');
    assert.equal(inner.emitted(), 0);
    assert.equal(gate.sunk, 1);

    gate.emit({ topic: 't', qos: 1 });
    const errors: unknown[] = [];
    gate.emit({ topic: 't', qos: 1 }, (err) => errors.push(err));
    await new Promise<void>((r) => gate.close(r));
    assert.equal(errors.length, 1);
    assert.match(String(errors[0]), /closed/);
    gate.emit({ topic: 't', qos: 0 }, (err) => errors.push(err));
    assert.equal(errors.length, 2);
  });
});

describe('agent ACL', () => {
  const body = (o: unknown) => Buffer.from(JSON.stringify(o));
  test('publish: only the uplinks, only JSON objects naming the own project, within the size limit', () => {
    const ok = body({ project_id: 'p1', type: 'message' });
    assert.equal(checkAgentPublish('p1', 'wdd/RDMC/command/up', ok, 1000), null);
    assert.equal(checkAgentPublish('p1', 'wdd/RDMC/message/up', ok, 1000), null);
    assert.equal(checkAgentPublish('p1', 'wdd/RDMC/message/up', JSON.stringify({ project_id: 'p1' }), 1000), null);
    assert.equal(checkAgentPublish('p1', 'wdd/RDMC/message/down/p1', ok, 1000), 'topic');
    assert.equal(checkAgentPublish('p1', 'wdd/RDMC/message/up/', ok, 1000), 'topic');
    assert.equal(checkAgentPublish('p1', 'WDD/RDMC/message/up', ok, 1000), 'topic');
    assert.equal(checkAgentPublish('p1', 'wdd/RDMC/message/up', ok, 10), 'too_large');
    assert.equal(checkAgentPublish('p1', 'wdd/RDMC/message/up', Buffer.from('{'), 1000), 'not_json');
    assert.equal(checkAgentPublish('p1', 'wdd/RDMC/message/up', Buffer.from('null'), 1000), 'not_json');
    assert.equal(checkAgentPublish('p1', 'wdd/RDMC/message/up', Buffer.from('"p1"'), 1000), 'not_json');
    assert.equal(checkAgentPublish('p1', 'wdd/RDMC/message/up', body([{ project_id: 'p1' }]), 1000), 'not_json');
    assert.equal(checkAgentPublish('p1', 'wdd/RDMC/message/up', body({ project_id: 'p2' }), 1000), 'project_id');
    assert.equal(checkAgentPublish('p1', 'wdd/RDMC/message/up', body({ project_id: ['p1'] }), 1000), 'project_id');
    assert.equal(checkAgentPublish('p1', 'wdd/RDMC/message/up', body({}), 1000), 'project_id');
  });

  test('subscribe: exactly the own two downlinks', () => {
    assert.ok(agentMaySubscribe('p1', 'wdd/RDMC/command/down/p1'));
    assert.ok(agentMaySubscribe('p1', 'wdd/RDMC/message/down/p1'));
    for (const t of [
      '#',
      '+/+/+/+/p1',
      'wdd/RDMC/command/down/+',
      'wdd/RDMC/command/down/#',
      'wdd/RDMC/command/down/p2',
      // as long as an own downlink, or ending in the project id, and still not one
      'wdd/RDMC/command/down/p11',
      'wdd/RDMC/command/down/xp1',
      'wdd/RDMC/command/dowX/p1',
      'wdd/RDMC/message/up//p1',
      'wdd/RDMC/command/down/',
    ]) {
      assert.equal(agentMaySubscribe('p1', t), false, t);
    }
  });
});

describe('TokenBucket', () => {
  test('allows the burst, then the refill rate', () => {
    const b = new TokenBucket(10, 3, 0);
    assert.deepEqual([b.take(0), b.take(0), b.take(0), b.take(0)], [true, true, true, false]);
    assert.equal(b.take(50), false); // half a token
    assert.equal(b.take(100), true); // one token after 100 ms at 10/s
    assert.equal(b.take(100), false);
    assert.deepEqual([b.take(10_000), b.take(10_000), b.take(10_000), b.take(10_000)], [true, true, true, false]);
    assert.equal(b.take(5), false, 'a clock going back never adds tokens');
  });
});

describe('Authenticator cache', () => {
  test('forget(project) drops every cached login of that project, and only of it', async () => {
    let asked = 0;
    const bus = {
      request: async (_t: string, body: { username: string; password: string }) => {
        asked++;
        return { ok: body.password === 'pw', project_id: body.username };
      },
    } as unknown as ConstructorParameters<typeof Authenticator>[0];
    const auth = new Authenticator(
      bus,
      { hubUsername: 'hub', hubPassword: 'h', timeoutMs: 1000, cacheMs: 60_000, cacheMax: 100, now: () => 0 },
      () => undefined,
    );
    for (const u of ['p1', 'p2']) assert.equal((await auth.check(u, Buffer.from('pw'))).ok, true);
    assert.equal(asked, 2);
    await auth.check('p1', Buffer.from('pw'));
    assert.equal(asked, 2, 'answered from the cache');
    assert.equal(auth.forget('p1'), 1);
    await auth.check('p1', Buffer.from('pw'));
    await auth.check('p2', Buffer.from('pw'));
    assert.equal(asked, 3, 'p1 asked again, p2 still cached');
  });

  test('full, the login used longest ago goes first (an LRU cache, not first in first out)', async () => {
    let asked = 0;
    const bus = {
      request: async (_t: string, body: { username: string; password: string }) => {
        asked++;
        return { ok: true, project_id: body.username };
      },
    } as unknown as ConstructorParameters<typeof Authenticator>[0];
    const auth = new Authenticator(
      bus,
      { hubUsername: 'hub', hubPassword: 'h', timeoutMs: 1000, cacheMs: 60_000, cacheMax: 2, now: () => 0 },
      () => undefined,
    );
    const login = (u: string) => auth.check(u, Buffer.from('pw'));
    await login('p1');
    await login('p2');
    await login('p1'); // from the cache: p1 is now the one used last
    assert.equal(asked, 2);
    await login('p3'); // the cache is full: p2 goes, not p1 that was cached first
    assert.equal(asked, 3);
    await login('p1');
    assert.equal(asked, 3, 'p1 still cached');
    await login('p2');
    assert.equal(asked, 4, 'p2 asked again');
  });
});
