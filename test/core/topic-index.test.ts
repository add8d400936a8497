import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import fc from 'fast-check';
import { Bus } from '../../core/bus.js';
import { silentLogger } from '../../core/log.js';
import { RouteCache, RouteKeys, TopicIndex } from '../../core/topic-index.js';
import { compilePattern } from '../../core/topics.js';

/** Filters (literals, `+`, a trailing `#`) and topics over small level alphabets, so they meet often. */
function filtersAndTopics(topicLevels: string[], filterLevels: string[]) {
  const filter = fc
    .tuple(fc.array(fc.constantFrom(...filterLevels), { minLength: 1, maxLength: 4 }), fc.boolean())
    .map(([ls, hash]) => [...ls, ...(hash ? ['#'] : [])].join('/'))
    .filter((f) => f.length > 0);
  const topic = fc
    .array(fc.constantFrom(...topicLevels), { minLength: 1, maxLength: 5 })
    .map((ls) => ls.join('/'))
    .filter((t) => t.length > 0);
  return { filter, topic };
}

describe('TopicIndex', () => {
  test('matches like the compiled filters: +, #, the parent of #, exact', () => {
    const filters = ['a/b/c', 'a/+/c', 'a/#', '#', '+/+', 'hub/uplink/+/data/heartbeat', 'hub/uplink/+/+/#', 'x'];
    const index = new TopicIndex<string>();
    for (const f of filters) index.add(f, f);
    for (const topic of ['a', 'a/b', 'a/b/c', 'a/x/c', 'a/x/y/c', 'b/a', 'x', 'hub/uplink/p1/data/heartbeat']) {
      const want = filters.filter((f) => compilePattern(f)(topic)).sort();
      assert.deepEqual(index.match(topic.split('/')).sort(), want, topic);
      assert.equal(index.test(topic.split('/')), want.length > 0, topic);
    }
  });

  test('any filters and topics: the same answer as compilePattern (property)', () => {
    const { filter, topic } = filtersAndTopics(['a', 'b', 'c', ''], ['a', 'b', 'c', '+', '']);
    fc.assert(
      fc.property(fc.uniqueArray(filter, { maxLength: 8 }), topic, (filters, t) => {
        const index = new TopicIndex<string>();
        for (const f of filters) index.add(f, f);
        const want = filters.filter((f) => compilePattern(f)(t)).sort();
        assert.deepEqual(index.match(t.split('/')).sort(), want);
      }),
      { numRuns: 500 },
    );
  });
});

describe('RouteKeys', () => {
  const { filter, topic } = filtersAndTopics(['a', 'b', 'c', '', 'ab', 'p1', 'p22'], ['a', 'b', 'c', '+', '', 'ab']);

  test('topics with one key are matched by the same filters (property)', () => {
    fc.assert(
      fc.property(fc.uniqueArray(filter, { maxLength: 8 }), topic, topic, (filters, t1, t2) => {
        const keys = new RouteKeys(filters);
        const matching = (t: string) => filters.filter((f) => compilePattern(f)(t)).sort();
        if (keys.key(t1) === keys.key(t2)) assert.deepEqual(matching(t1), matching(t2), `${t1} ~ ${t2}`);
        // a topic whose every level is some filter's literal at that depth is its own key
        assert.equal(keys.key(t1).split('/').length, t1.split('/').length);
      }),
      { numRuns: 2000 },
    );
  });

  test('the route cache answers every topic as the filters say, across clears past its size (property)', () => {
    fc.assert(
      fc.property(
        fc.uniqueArray(filter, { maxLength: 8 }),
        fc.array(topic, { minLength: 1, maxLength: 30 }),
        fc.integer({ min: 1, max: 6 }),
        (filters, topics, max) => {
          const matching = (t: string) => filters.filter((f) => compilePattern(f)(t)).sort();
          let computed = 0;
          const cache = new RouteCache<string[]>(
            max,
            () => filters,
            (t) => {
              computed++;
              return matching(t);
            },
          );
          for (const t of [...topics, ...topics]) assert.deepEqual(cache.get(t), matching(t), t);
          // routes are shared by key: never more computations than lookups, fewer once keys repeat
          assert.ok(computed <= topics.length * 2);
        },
      ),
      { numRuns: 2000 },
    );
  });

  test('a fleet of project topics is one cached route', () => {
    const filters = ['hub/uplink/+/data/heartbeat', 'hub/uplink/+/data/exec_result', 'command/send'];
    let computed = 0;
    const cache = new RouteCache<number>(
      16,
      () => filters,
      () => ++computed,
    );
    for (let i = 0; i < 1000; i++) assert.equal(cache.get(`hub/uplink/p-${i}/data/heartbeat`), 1);
    assert.equal(cache.get('hub/uplink/p-1/data/exec_result'), 2);
    assert.equal(cache.get('command/send'), 3);
    assert.equal(computed, 3);
    // a refused topic is refused on every lookup, cached route or not
    const strict = new RouteCache<number>(
      16,
      () => filters,
      () => 1,
      (t) => {
        if (t.includes('+')) throw new Error('refused');
      },
    );
    assert.equal(strict.get('hub/uplink/p/data/heartbeat'), 1);
    assert.throws(() => strict.get('hub/uplink/+/data/heartbeat'), /refused/);
  });

  test('a fleet of project topics shares one key; the fixed levels stay', () => {
    const keys = new RouteKeys(['hub/uplink/+/data/heartbeat', 'hub/uplink/+/data/exec_result', 'command/send', 'x/#']);
    assert.equal(keys.key('hub/uplink/p-1/data/heartbeat'), 'hub/uplink/+/data/heartbeat');
    assert.equal(keys.key('hub/uplink/p-2/data/heartbeat'), 'hub/uplink/+/data/heartbeat');
    assert.equal(keys.key('hub/uplink/p-2/data/other'), 'hub/uplink/+/data/+');
    assert.equal(keys.key('command/send'), 'command/send');
    assert.equal(keys.key('x/y/z'), 'x/+/+');
  });

  test('the bus delivers as the filters say, past the topic cache (100 000 topics, then a new pattern)', async () => {
    const bus = new Bus(silentLogger());
    const got = new Map<string, string[]>();
    const box = (name: string, patterns: string[]) => {
      const b = bus.mailbox(name, { capacity: 1_000_000, overflow: 'reject', block_timeout_ms: 1000 });
      // one list per mailbox, appended to (a copy per delivery made this test quadratic: 13 minutes in CI)
      const topics: string[] = [];
      got.set(name, topics);
      for (const p of patterns) b.subscribe(p, (_payload, msg) => topics.push(msg.topic));
      return b;
    };
    box('status', ['hub/uplink/+/data/heartbeat']);
    box('command', ['hub/uplink/+/data/exec_result']);
    box('all', ['hub/#']);
    const n = 100_000;
    for (let i = 0; i < n; i++) bus.publish(`hub/uplink/p-${i}/data/${i % 10 === 0 ? 'exec_result' : 'heartbeat'}`, i);
    // a subscription added later applies to topics seen before (the caches are dropped)
    const late = box('late', ['hub/uplink/p-7/data/+']);
    bus.publish('hub/uplink/p-7/data/heartbeat', -1);
    await Promise.all(['status', 'command', 'all', 'late'].map((m) => bus.settled(m)));
    assert.equal(got.get('status')?.length, n - n / 10 + 1);
    assert.equal(got.get('command')?.length, n / 10);
    assert.equal(got.get('all')?.length, n + 1);
    assert.deepEqual(got.get('late'), ['hub/uplink/p-7/data/heartbeat']);
    assert.ok(late);
    assert.throws(() => bus.publish('hub/uplink/+/data/heartbeat', 0), /not a publishable topic/);
  });
});
