import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import fc from 'fast-check';
import { TopicIndex } from '../../core/topic-index.js';
import { compilePattern } from '../../core/topics.js';

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
    const level = fc.constantFrom('a', 'b', 'c', '');
    const filterLevel = fc.constantFrom('a', 'b', 'c', '+', '');
    const filter = fc
      .tuple(fc.array(filterLevel, { minLength: 1, maxLength: 4 }), fc.boolean())
      .map(([ls, hash]) => [...ls, ...(hash ? ['#'] : [])].join('/'))
      .filter((f) => f.length > 0);
    const topic = fc
      .array(level, { minLength: 1, maxLength: 5 })
      .map((ls) => ls.join('/'))
      .filter((t) => t.length > 0);
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
