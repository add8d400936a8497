import assert from 'node:assert/strict';
import { test } from 'node:test';
import { type GraphNode, ModuleGraph } from '../../core/module-graph.js';

const node = (requires: string[] = [], after: string[] = [], ingress = false): GraphNode => ({
  requires,
  after,
  ingress,
});

/** Asserts that building throws HOST_ERR_DEPENDENCY naming this cycle. */
function refuses(nodes: Array<[string, GraphNode]>, cycle: string[]): void {
  assert.throws(
    () => ModuleGraph.build(nodes),
    (err: Error & { code?: string; details?: { cycle?: string[] } }) => {
      assert.equal(err.code, 'HOST_ERR_DEPENDENCY', err.message);
      assert.equal(err.message, `dependency cycle ${cycle.join(' -> ')}`);
      assert.deepEqual(err.details?.cycle, cycle);
      return true;
    },
  );
}

test('start: dependencies first, file order otherwise; stop is exactly the reverse', () => {
  const g = ModuleGraph.build([
    ['web', node(['status', 'db'])],
    ['status', node([], ['db'])],
    ['grpc', node()],
    ['db', node()],
    ['command', node([], ['web'])],
  ]);
  assert.deepEqual(g.start, ['grpc', 'db', 'status', 'web', 'command']);
  assert.deepEqual(g.stop, ['command', 'web', 'status', 'db', 'grpc']);
});

test('a declared (soft) dependency that is not in the graph is ignored; a required one is refused', () => {
  assert.deepEqual(ModuleGraph.build([['bridge', node([], ['broker'])]]).start, ['bridge']);
  assert.throws(
    () => ModuleGraph.build([['bridge', node(['broker'])]]),
    (err: Error & { code?: string }) => {
      assert.equal(err.code, 'HOST_ERR_DEPENDENCY');
      assert.equal(err.message, 'modules.bridge.depends_on: broker is not an enabled module');
      return true;
    },
  );
});

test('an ingress starts after every module that is not one, whatever the file order, unless a dependency needs it', () => {
  const g = ModuleGraph.build([
    ['web', node([], [], true)],
    ['bridge', node([], ['broker'], true)],
    ['broker', node([], [], true)],
    ['status', node()],
    ['command', node([], ['status'])],
  ]);
  assert.deepEqual(g.start, ['status', 'command', 'web', 'broker', 'bridge']);
  assert.deepEqual(g.stop, ['bridge', 'broker', 'web', 'command', 'status']);
  // a module that depends on an ingress waits for it: the dependency wins
  const h = ModuleGraph.build([
    ['bridge', node([], [], true)],
    ['tap', node(['bridge'])],
    ['status', node()],
  ]);
  assert.deepEqual(h.start, ['status', 'bridge', 'tap']);
});

test('cycles are refused whatever they are made of: soft, hard, mixed, self', () => {
  // soft: two providers declaring each other (the command/bridge bug) is no longer broken by key order
  refuses(
    [
      ['command', node([], ['mqtt-bridge'])],
      ['mqtt-bridge', node([], ['command'])],
    ],
    ['command', 'mqtt-bridge', 'command'],
  );
  refuses(
    [
      ['a', node(['b'])],
      ['b', node(['c'])],
      ['c', node(['a'])],
    ],
    ['a', 'b', 'c', 'a'],
  );
  refuses(
    [
      ['a', node(['b'])],
      ['b', node([], ['a'])],
    ],
    ['a', 'b', 'a'],
  );
  refuses([['a', node(['a'])]], ['a', 'a']);
  refuses([['a', node([], ['a'])]], ['a', 'a']);
  // a cycle further down is named from where it closes
  refuses(
    [
      ['x', node(['a'])],
      ['a', node(['b'])],
      ['b', node([], ['a'])],
    ],
    ['a', 'b', 'a'],
  );
});

test('an empty graph has empty orders; orders are frozen', () => {
  const g = ModuleGraph.build([]);
  assert.deepEqual(g.start, []);
  assert.deepEqual(g.stop, []);
  assert.ok(Object.isFrozen(ModuleGraph.build([['a', node()]]).start));
});
