import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { z } from 'zod';
import { HOST_TOPICS } from '../../core/host-topics.js';
import type { ModuleProvider } from '../../core/module.js';
import { fixtureRegistry, type Journal, newJournal } from '../fixtures/providers.js';
import { startHost } from '../helpers/host.js';
import { deferred, until, withTimeout } from '../helpers/wait.js';

/**
 * `waiter`: starts, then begins its work on ctx.onReady, recording both in the journal;
 * `fail_start: true` fails its start, `fail_ready: true` throws from its ready callback once.
 */
function waiterProvider(j: Journal): ModuleProvider<{ fail_start: boolean; fail_ready: boolean }> {
  let readyFailures = 0;
  return {
    name: 'waiter',
    schema: z.object({ fail_start: z.boolean().default(false), fail_ready: z.boolean().default(false) }).strict(),
    create(ctx) {
      const n = (j.instances.get(ctx.name) ?? 0) + 1;
      j.instances.set(ctx.name, n);
      return {
        start() {
          if (ctx.config.fail_start) throw new Error('start failed on purpose');
          j.lifecycle.push(`start ${ctx.name}`);
          ctx.onReady(() => {
            j.lifecycle.push(`ready ${ctx.name}#${n}`);
            if (ctx.config.fail_ready && readyFailures++ === 0) throw new Error('ready work failed on purpose');
          });
        },
        stop() {
          j.lifecycle.push(`stop ${ctx.name}`);
        },
      };
    },
  };
}

/** A provider named `name` that declares `dependencies` (the soft kind). */
function declaring(name: string, dependencies: string[]): ModuleProvider<unknown> {
  return { name, schema: z.unknown(), dependencies, create: () => ({}) };
}

const registry = (j: Journal) => fixtureRegistry(j).register(waiterProvider(j));

describe('ready phase', () => {
  test('a module waiting on ready starts its work only after every module started; host/ready names them', async () => {
    const j = newJournal();
    const h = await startHost(
      `modules:\n  a: { provider: recorder }\n  w: { provider: waiter }\n  b: { provider: recorder, topic: "${HOST_TOPICS.ready}" }\n  c: { provider: recorder }\n`,
      registry(j),
    );
    try {
      await until(() => j.lifecycle.includes('ready w#1'), 2000, 'the ready callback');
      assert.deepEqual(j.lifecycle, ['start a', 'start w', 'start b', 'start c', 'ready w#1']);
      // b subscribed to host/ready in its start, before the event went out
      await until(() => (j.received.get('b#1') ?? []).length === 1, 2000, 'host/ready on the bus');
      assert.deepEqual(j.received.get('b#1'), [{ modules: ['a', 'w', 'b', 'c'] }]);
    } finally {
      await h.stop();
    }
  });

  test('a module restarted after ready sees it at once, and host/ready is not announced again', async () => {
    const j = newJournal();
    const h = await startHost(
      `modules:\n  w: { provider: waiter }\n  r: { provider: recorder, topic: "${HOST_TOPICS.ready}" }\n`,
      registry(j),
    );
    try {
      await until(() => j.lifecycle.includes('ready w#1'), 2000, 'the first ready callback');
      await h.host.restartModule('w');
      await until(() => j.lifecycle.includes('ready w#2'), 2000, 'the restarted instance to see ready');
      assert.deepEqual(j.lifecycle.slice(-3), ['stop w', 'start w', 'ready w#2']);
      await h.host.bus.drain(1000);
      assert.equal(j.received.get('r#1')?.length, 1);
    } finally {
      await h.stop();
    }
  });

  test('a host that fails to start is never ready: the modules stopped meanwhile are not called', async () => {
    const j = newJournal();
    await assert.rejects(
      startHost(`modules:\n  w: { provider: waiter }\n  x: { provider: waiter, fail_start: true }\n`, registry(j)),
      { code: 'HOST_ERR_START_FAILED' },
    );
    await new Promise((r) => setImmediate(r));
    // (x's instance is stopped too: its start failed)
    assert.deepEqual(j.lifecycle, ['start w', 'stop x', 'stop w']);
  });

  test('a ready callback that throws is a crash: the instance is restarted and sees ready again', async () => {
    const j = newJournal();
    const h = await startHost(
      `modules:\n  w: { provider: waiter, fail_ready: true, restart: { initial_ms: 10, max_ms: 10 } }\n`,
      registry(j),
    );
    try {
      const restarted = deferred<{ name: string; reason: string }>();
      h.host.bus.mailbox('t').subscribe(HOST_TOPICS.moduleRestarted, (p) => restarted.resolve(p as never));
      await withTimeout(restarted.promise, 2000, 'host/module/restarted');
      await until(() => j.lifecycle.includes('ready w#2'), 2000, 'the new instance to see ready');
      assert.equal(h.host.list()[0].state, 'running');
    } finally {
      await h.stop();
    }
  });
});

describe('module graph in the host', () => {
  test('providers declaring each other (a soft cycle) are refused at start, whatever the key order', async () => {
    for (const keys of [
      ['one', 'two'],
      ['two', 'one'],
    ]) {
      const reg = fixtureRegistry(newJournal())
        .register(declaring('one', ['two']))
        .register(declaring('two', ['one']));
      await assert.rejects(startHost(`modules:\n${keys.map((k) => `  ${k}: {}\n`).join('')}`, reg), (err: Error) => {
        assert.equal((err as { code?: string }).code, 'HOST_ERR_DEPENDENCY');
        assert.match(err.message, /^dependency cycle (one -> two -> one|two -> one -> two)$/);
        return true;
      });
    }
  });

  test('a provider depending on itself is refused; a config edit making a cycle is rejected and the config stays', async () => {
    const self = fixtureRegistry(newJournal()).register(declaring('loop', ['loop']));
    await assert.rejects(startHost('modules:\n  loop: {}\n', self), {
      code: 'HOST_ERR_DEPENDENCY',
      message: 'dependency cycle loop -> loop',
    });
    const j = newJournal();
    const reg = fixtureRegistry(j)
      .register(declaring('one', ['two']))
      .register(declaring('two', ['one']));
    const h = await startHost('modules:\n  a: { provider: recorder }\n  one: {}\n', reg);
    try {
      h.writeConfig('modules:\n  a: { provider: recorder }\n  one: {}\n  two: {}\n');
      const outcome = await h.host.reload();
      assert.equal(outcome.applied, false);
      assert.equal(outcome.error?.code, 'HOST_ERR_DEPENDENCY');
      assert.deepEqual(
        h.host.list().map((m) => m.name),
        ['a', 'one'],
      );
    } finally {
      await h.stop();
    }
  });
});
