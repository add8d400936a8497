/**
 * Regression (found by test/e2e/crash-safety.test.ts, "a result published while the hub is down"):
 * `command` declared a dependency on `mqtt-bridge` and the bridge one on `command`. The host
 * breaks such a cycle where it meets it, so the start order followed the order of the keys in
 * config.yml: with `command` listed before `mqtt-bridge` the bridge started first, its persistent
 * session delivered the uplinks queued while the hub was down before `command` had subscribed,
 * and those exec_results were acknowledged to the broker and lost.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { orderModules } from '../../core/host.js';
import { builtinProviders } from '../../modules/index.js';

type Plan = Parameters<typeof orderModules>[0];
type Planned = Plan extends Map<string, infer P> ? P : never;

const HUB = ['broker', 'mqtt-bridge', 'status', 'command', 'web', 'grpc'];

function planOf(names: string[]): Plan {
  const registry = builtinProviders();
  const plan: Plan = new Map();
  for (const name of names) {
    const provider = registry.resolve(name, `modules.${name}`);
    // orderModules reads only block.depends_on and provider.dependencies
    plan.set(name, { block: { depends_on: [] }, provider, settings: {} } as unknown as Planned);
  }
  return plan;
}

function permutations<T>(xs: T[]): T[][] {
  if (xs.length <= 1) return [xs];
  return xs.flatMap((x, i) => permutations([...xs.slice(0, i), ...xs.slice(i + 1)]).map((p) => [x, ...p]));
}

test('the built-in providers declare no dependency cycle', () => {
  const registry = builtinProviders();
  const deps = (n: string) => registry.resolve(n, `modules.${n}`).dependencies ?? [];
  const state = new Map<string, 'visiting' | 'done'>();
  const visit = (n: string, trail: string[]) => {
    if (state.get(n) === 'done') return;
    assert.notEqual(state.get(n), 'visiting', `cycle: ${[...trail, n].join(' -> ')}`);
    state.set(n, 'visiting');
    for (const d of deps(n)) if (HUB.includes(d)) visit(d, [...trail, n]);
    state.set(n, 'done');
  };
  for (const n of HUB) visit(n, []);
});

test('whatever the order of keys in config.yml, the bridge starts after broker, status and command', () => {
  for (const keys of permutations(HUB)) {
    const order = orderModules(planOf(keys));
    for (const before of ['broker', 'status', 'command']) {
      assert.ok(
        order.indexOf(before) < order.indexOf('mqtt-bridge'),
        `keys ${keys.join(',')} started ${order.join(',')}`,
      );
    }
  }
});
