import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { Bus } from '../../core/bus.js';
import { errorCode, HubError } from '../../core/errors.js';
import { silentLogger } from '../../core/log.js';
// the refusal test throws the command domain's codes: their declarations say they are a caller's mistake
import '../../modules/contracts.js';
import { compilePattern, isValidPattern } from '../../core/topics.js';
import { captureLog, LEVEL } from '../fixtures/capture-log.js';
import { deferred, scaled, until, withTimeout } from '../helpers/wait.js';

const box = (capacity = 10_000, overflow: 'block' | 'drop-oldest' | 'reject' = 'block', block_timeout_ms = 1000) => ({
  capacity,
  overflow,
  block_timeout_ms,
});

describe('topic filters', () => {
  test('+ matches one level, # the rest including the parent', () => {
    const cases: Array<[string, string, boolean]> = [
      ['a/b/c', 'a/b/c', true],
      ['a/+/c', 'a/x/c', true],
      ['a/+/c', 'a/x/y/c', false],
      ['a/+', 'a', false],
      ['a/#', 'a', true],
      ['a/#', 'a/b/c/d', true],
      ['a/#', 'b/a', false],
      ['#', 'anything/at/all', true],
      ['+/+', 'a/b', true],
      ['+/+', 'a/b/c', false],
      ['wdd/RDMC/command/down/+', 'wdd/RDMC/command/down/p1', true],
    ];
    for (const [pattern, topic, expected] of cases) {
      assert.equal(compilePattern(pattern)(topic), expected, `${pattern} vs ${topic}`);
    }
  });

  test('invalid filters are refused', () => {
    for (const bad of ['', 'a/#/b', 'a/b#', 'a/+b', '#a']) assert.equal(isValidPattern(bad), false, bad);
    const bus = new Bus(silentLogger());
    assert.throws(() => bus.mailbox('m').subscribe('a/#/b', () => undefined), { code: 'BUS_ERR_BAD_TOPIC' });
    assert.throws(() => bus.publish('a/+', 1), { code: 'BUS_ERR_BAD_TOPIC' });
  });
});

describe('bus delivery', () => {
  test('wildcard subscribers each get the event once; non-matching ones do not', async () => {
    const bus = new Bus(silentLogger());
    const seen: string[] = [];
    bus.mailbox('a').subscribe('x/+/z', (_p, m) => seen.push(`a:${m.topic}`));
    bus.mailbox('b').subscribe('x/#', (_p, m) => seen.push(`b:${m.topic}`));
    bus.mailbox('c').subscribe('y/#', (_p, m) => seen.push(`c:${m.topic}`));
    bus.publish('x/1/z', {});
    bus.publish('x/2', {});
    assert.equal(await bus.drain(1000), true);
    assert.deepEqual(seen.sort(), ['a:x/1/z', 'b:x/1/z', 'b:x/2']);
  });

  test('one mailbox with overlapping filters handles the event once per filter, in one pass', async () => {
    const bus = new Bus(silentLogger());
    const seen: string[] = [];
    const m = bus.mailbox('m');
    m.subscribe('a/#', () => seen.push('hash'));
    m.subscribe('a/b', () => seen.push('exact'));
    bus.publish('a/b', 1);
    await bus.drain(1000);
    assert.deepEqual(seen, ['hash', 'exact']);
    assert.equal(m.stats().handled, 1);
  });

  test('each subscriber sees events in publish order, async handlers included', async () => {
    const bus = new Bus(silentLogger());
    const got: number[] = [];
    bus.mailbox('slowish').subscribe('n', async (p) => {
      if ((p as number) % 7 === 0) await new Promise((r) => setImmediate(r));
      got.push(p as number);
    });
    for (let i = 0; i < 5000; i++) bus.publish('n', i);
    await bus.drain(5000);
    assert.deepEqual(
      got,
      Array.from({ length: 5000 }, (_, i) => i),
    );
  });

  test('a slow subscriber does not delay a fast one', async () => {
    const bus = new Bus(silentLogger());
    const gate = deferred();
    const fastDone = deferred();
    let fast = 0;
    bus.mailbox('slow').subscribe('t', () => gate.promise);
    bus.mailbox('fast').subscribe('t', () => {
      if (++fast === 100) fastDone.resolve();
    });
    for (let i = 0; i < 100; i++) bus.publish('t', i);
    await withTimeout(fastDone.promise, 2000, 'the fast subscriber to get all 100 events');
    assert.equal(bus.mailbox('slow').stats().handled, 0, 'slow one is still stuck on its first event');
    gate.resolve();
    await bus.drain(2000);
    assert.equal(bus.mailbox('slow').stats().handled, 100);
  });

  test('slow handlers yield to the event loop every few events, not every 256', async () => {
    const bus = new Bus(silentLogger());
    // each event takes 1 ms of busy CPU: the mailbox must notice within a few events that its
    // 2 ms slice is spent, whatever the load on the machine (a preempted handler only means fewer)
    const busyMs = 1;
    bus.mailbox('slow').subscribe('t', () => {
      const until = performance.now() + busyMs;
      while (performance.now() < until) {
        // spin
      }
    });
    const perTurn: number[] = [];
    let last = 0;
    let turning = true;
    const turn = () => {
      const handled = bus.mailbox('slow').stats().handled;
      perTurn.push(handled - last);
      last = handled;
      if (turning) setImmediate(turn);
    };
    setImmediate(turn);
    for (let i = 0; i < 120; i++) bus.publish('t', i);
    await bus.drain(10_000);
    turning = false;
    assert.equal(bus.mailbox('slow').stats().handled, 120);
    // the first turn reads the clock after 16 events (nothing measured yet); later ones after each event
    const later = perTurn.slice(perTurn.findIndex((n) => n > 0) + 1);
    assert.ok(later.length > 10, `the event loop got only ${perTurn.length} turns: ${perTurn.join(',')}`);
    assert.ok(Math.max(...later) <= 8, `events handled per turn: ${perTurn.join(',')}`);
  });

  test('a throwing handler is counted and logged; the bus and the next events go on', async () => {
    const bus = new Bus(silentLogger());
    const ok: number[] = [];
    bus.mailbox('m').subscribe('t', (p) => {
      if (p === 2) throw new Error('boom');
      ok.push(p as number);
    });
    for (const i of [1, 2, 3]) bus.publish('t', i);
    await bus.drain(1000);
    assert.deepEqual(ok, [1, 3]);
    const s = bus.mailbox('m').stats();
    assert.equal(s.errors, 1);
    assert.equal(s.handled, 3);
  });

  test('a caller’s mistake (a 4xx-class code) is answered, not logged as an error, not counted; a failure is both', async () => {
    const { log, lines } = captureLog();
    const bus = new Bus(log);
    bus.mailbox('m').subscribe('ask', (p) => {
      if (p === 'offline') throw new HubError('CMD_ERR_PROJECT_OFFLINE', 'project p-1 is offline');
      if (p === 'unknown') throw new HubError('CMD_ERR_UNKNOWN_PROJECT', 'unknown project p-2');
      if (p === 'invalid') throw new HubError('CMD_ERR_INVALID', 'payload: too deep');
      throw new Error('a real failure');
    });
    for (const [what, code] of [
      ['offline', 'CMD_ERR_PROJECT_OFFLINE'],
      ['unknown', 'CMD_ERR_UNKNOWN_PROJECT'],
      ['invalid', 'CMD_ERR_INVALID'],
    ]) {
      await assert.rejects(
        bus.request('ask', what, { timeoutMs: scaled(5000) }),
        (e: unknown) => errorCode(e) === code,
      );
    }
    assert.equal(bus.mailbox('m').stats().errors, 0, 'refusals are not module errors');
    assert.deepEqual(
      lines.filter((l) => l.level >= LEVEL.warn),
      [],
      'no warning or error line for a caller mistake',
    );
    const refusals = lines.filter((l) => l.msg === 'bus handler refused the request');
    assert.equal(refusals.length, 3);
    assert.ok(refusals.every((l) => l.level === LEVEL.debug && l.err === undefined && typeof l.code === 'string'));

    await assert.rejects(bus.request('ask', 'boom', { timeoutMs: scaled(5000) }));
    assert.equal(bus.mailbox('m').stats().errors, 1);
    const failed = lines.filter((l) => l.msg === 'bus handler failed');
    assert.equal(failed.length, 1);
    assert.equal(failed[0].level, LEVEL.error);
    assert.match(String((failed[0].err as { stack?: string }).stack), /a real failure/);
  });

  test('payloads are shared, never copied; with freeze on they are frozen', async () => {
    const plain = new Bus(silentLogger(), { freeze: false });
    const shared = { a: 1 };
    const seen = deferred<unknown>();
    plain.mailbox('m').subscribe('t', (p) => seen.resolve(p));
    plain.publish('t', shared);
    assert.equal(await withTimeout(seen.promise, 1000, 'event'), shared);
    assert.equal(Object.isFrozen(shared), false);

    const bus = new Bus(silentLogger(), { freeze: true });
    const payload = { a: 1 };
    const got = deferred<unknown>();
    bus.mailbox('m').subscribe('t', (p) => got.resolve(p));
    bus.publish('t', payload);
    const p = await withTimeout(got.promise, 1000, 'event');
    assert.equal(p, payload);
    assert.ok(Object.isFrozen(payload));
    // Buffers cannot be frozen; they pass through untouched
    assert.equal(bus.publish('t', Buffer.from('x')), true);
  });
});

describe('overflow policies', () => {
  test('reject refuses the event and counts it; publish says false', async () => {
    const bus = new Bus(silentLogger());
    const gate = deferred();
    const m = bus.mailbox('m', box(2, 'reject'));
    m.subscribe('t', () => gate.promise);
    const results = [1, 2, 3, 4].map((i) => bus.publish('t', i));
    // the first is taken straight into the handler on the next turn, so only after that are 2 waiting
    assert.deepEqual(results, [true, true, false, false]);
    assert.equal(m.stats().rejected, 2);
    gate.resolve();
    await bus.drain(1000);
  });

  test('drop-oldest keeps the newest events and counts the dropped', async () => {
    const bus = new Bus(silentLogger());
    const got: number[] = [];
    const m = bus.mailbox('m', box(3, 'drop-oldest'));
    m.subscribe('t', (p) => {
      got.push(p as number);
    });
    for (let i = 0; i < 10; i++) bus.publish('t', i);
    await bus.drain(1000);
    assert.deepEqual(got, [7, 8, 9]);
    assert.equal(m.stats().dropped, 7);
  });

  test('block makes the publisher wait for room, bounded by block_timeout_ms', async () => {
    const bus = new Bus(silentLogger());
    const gate = deferred();
    const got: number[] = [];
    const m = bus.mailbox('m', box(1, 'block', 10_000));
    m.subscribe('t', async (p) => {
      await gate.promise;
      got.push(p as number);
    });
    assert.equal(bus.publish('t', 1), true);
    await until(() => m.stats().queued === 0, 1000, 'first event taken by the handler');
    assert.equal(bus.publish('t', 2), true, 'fills the one free place');
    const third = bus.publish('t', 3);
    assert.ok(third instanceof Promise, 'a full block mailbox hands the publisher a promise');
    let settled = false;
    void (third as Promise<boolean>).then(() => {
      settled = true;
    });
    await new Promise((r) => setImmediate(r));
    assert.equal(settled, false, 'publisher is still waiting while the mailbox is full');
    gate.resolve();
    assert.equal(await third, true);
    await bus.drain(1000);
    assert.deepEqual(got, [1, 2, 3]);

    const stuck = bus.mailbox('stuck', box(1, 'block', 50));
    stuck.subscribe('s', () => new Promise(() => undefined));
    bus.publish('s', 1);
    bus.publish('s', 2); // waits in the mailbox
    const timedOut = await bus.publish('s', 3);
    assert.equal(timedOut, false, 'the wait runs out and the event is dropped');
    assert.equal(stuck.stats().dropped, 1);
  });
});

describe('request/reply', () => {
  test('the first defined return value answers the request', async () => {
    const bus = new Bus(silentLogger());
    bus.mailbox('audit').subscribe('math/#', () => undefined);
    bus.mailbox('math').subscribe('math/add', (p) => (p as number[]).reduce((a, b) => a + b, 0));
    assert.equal(await bus.request('math/add', [1, 2, 3]), 6);
  });

  test('an async handler may answer', async () => {
    const bus = new Bus(silentLogger());
    bus.mailbox('m').subscribe('q', async (p) => ({ echo: p }));
    assert.deepEqual(await bus.request('q', 'hi'), { echo: 'hi' });
  });

  test('no subscriber fails fast; silence times out with a typed error', async () => {
    const bus = new Bus(silentLogger());
    await assert.rejects(bus.request('nobody', 1), { code: 'BUS_ERR_NO_RESPONDER' });
    bus.mailbox('m').subscribe('slow', () => new Promise(() => undefined));
    const t0 = Date.now();
    await assert.rejects(bus.request('slow', 1, { timeoutMs: 50 }), { code: 'BUS_ERR_REQUEST_TIMEOUT' });
    assert.ok(Date.now() - t0 >= 45);
    assert.equal(bus.stats().pending_requests, 0);
  });

  test('a handler error reaches the requester with its code', async () => {
    const bus = new Bus(silentLogger());
    bus.mailbox('m').subscribe('fail', () => {
      throw Object.assign(new Error('nope'), { code: 'CMD_ERR_INVALID' });
    });
    await assert.rejects(bus.request('fail', 1), { code: 'CMD_ERR_INVALID', message: 'nope' });
  });

  test('a request refused by a full reject-policy mailbox fails with BUS_ERR_MAILBOX_FULL', async () => {
    const bus = new Bus(silentLogger());
    const gate = deferred();
    const m = bus.mailbox('m', box(1, 'reject'));
    m.subscribe('q', () => gate.promise.then(() => 'ok'));
    const first = bus.request('q', 1);
    await until(() => m.stats().queued === 0, 1000, 'first request taken');
    const second = bus.request('q', 2);
    await assert.rejects(bus.request('q', 3), { code: 'BUS_ERR_MAILBOX_FULL' });
    gate.resolve();
    assert.equal(await first, 'ok');
    assert.equal(await second, 'ok');
  });
});

describe('mailbox pause and resume (module restarts)', () => {
  test('events wait while paused and go to the handler that re-subscribes', async () => {
    const bus = new Bus(silentLogger());
    const m = bus.mailbox('mod');
    const first: number[] = [];
    const second: number[] = [];
    m.subscribe('e', (p) => {
      first.push(p as number);
    });
    bus.publish('e', 1);
    await bus.drain(1000);
    m.pause();
    bus.publish('e', 2);
    bus.publish('e', 3);
    assert.equal(m.stats().queued, 2);
    m.subscribe('e', (p) => {
      second.push(p as number);
    });
    m.resume();
    await bus.drain(1000);
    assert.deepEqual(first, [1]);
    assert.deepEqual(second, [2, 3]);
  });

  test('patterns the new instance does not claim are removed on resume', async () => {
    const bus = new Bus(silentLogger());
    const m = bus.mailbox('mod');
    m.subscribe('old', () => undefined);
    m.pause();
    m.subscribe('new', () => undefined);
    m.resume();
    assert.deepEqual(m.stats().subscriptions, ['new']);
    assert.equal(bus.publish('old', 1), true);
    assert.equal(bus.stats().unrouted, 1);
  });
});

describe('concurrent subscriptions', () => {
  test('concurrency > 1 runs async calls side by side, bounded, and still answers requests', async () => {
    const bus = new Bus(silentLogger());
    const gates = [deferred(), deferred(), deferred()];
    let running = 0;
    let peak = 0;
    bus.mailbox('agent').subscribe(
      'task/+',
      async (p) => {
        running++;
        peak = Math.max(peak, running);
        await gates[p as number].promise;
        running--;
        return `done ${p}`;
      },
      { concurrency: 2 },
    );
    const r0 = bus.request('task/a', 0);
    const r1 = bus.request('task/b', 1);
    const r2 = bus.request('task/c', 2);
    await until(() => running === 2, 1000, 'two calls running at once');
    assert.equal(bus.mailbox('agent').stats().queued, 1, 'the third waits for a free slot');
    gates[1].resolve();
    assert.equal(await r1, 'done 1', 'a later call may finish first');
    gates[0].resolve();
    gates[2].resolve();
    assert.deepEqual(await Promise.all([r0, r2]), ['done 0', 'done 2']);
    assert.equal(peak, 2);
    assert.equal(await bus.drain(1000), true);
  });

  test('a failing concurrent call is counted and reaches its requester', async () => {
    const bus = new Bus(silentLogger());
    bus.mailbox('m').subscribe(
      'x',
      async () => {
        throw Object.assign(new Error('bad'), { code: 'AGENT_ERR_HANDLER' });
      },
      { concurrency: 4 },
    );
    await assert.rejects(bus.request('x', 1), { code: 'AGENT_ERR_HANDLER' });
    assert.equal(bus.mailbox('m').stats().errors, 1);
  });
});
