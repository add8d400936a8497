import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { parseConfig } from '../../core/config.js';
import type { ModuleInfo } from '../../core/host.js';
import { Host } from '../../core/host.js';
import { HOST_TOPICS } from '../../core/host-topics.js';
import { silentLogger } from '../../core/log.js';
import { allReceived, fixtureRegistry, newJournal } from '../fixtures/providers.js';
import { startHost } from '../helpers/host.js';
import { deferred, withTimeout } from '../helpers/wait.js';

const three = (extra = '') => `
modules:
  a:
    provider: recorder
  b:
    provider: recorder
    depends_on: [c]
  c:
    provider: recorder
${extra}`;

describe('lifecycle', () => {
  test('starts in dependency order and stops in exactly the reverse order', async () => {
    const j = newJournal();
    const h = await startHost(three(), fixtureRegistry(j));
    assert.deepEqual(j.lifecycle, ['start a', 'start c', 'start b']);
    await h.stop();
    assert.deepEqual(j.lifecycle.slice(3), ['stop b', 'stop c', 'stop a']);
  });

  test('a failing stop is logged and does not block the others', async () => {
    const j = newJournal();
    const h = await startHost(
      `modules:\n  a: { provider: recorder }\n  b: { provider: recorder, fail_stop: true }\n  c: { provider: recorder }\n`,
      fixtureRegistry(j),
    );
    await h.stop();
    assert.deepEqual(j.lifecycle.slice(3), ['stop c', 'stop b', 'stop a']);
  });

  test('unknown provider and bad settings fail at load naming the config key', async () => {
    const j = newJournal();
    await assert.rejects(
      startHost(`modules:\n  x: { provider: nope }\n`, fixtureRegistry(j)),
      (err: Error & { code?: string }) => {
        assert.equal(err.code, 'HOST_ERR_UNKNOWN_MODULE');
        assert.match(err.message, /modules\.x\.provider/);
        return true;
      },
    );
    await assert.rejects(
      startHost(`modules:\n  r: { provider: recorder, slow_ms: fast }\n`, fixtureRegistry(j)),
      (err: Error & { code?: string }) => {
        assert.equal(err.code, 'HOST_ERR_CONFIG_INVALID');
        assert.match(err.message, /modules\.r\.slow_ms: /);
        return true;
      },
    );
    await assert.rejects(
      startHost(`modules:\n  r: { provider: recorder, colour: blue }\n`, fixtureRegistry(j)),
      /modules\.r/,
    );
  });

  test('the host answers the module list over the bus with mailbox counters', async () => {
    const j = newJournal();
    const h = await startHost(three(`  d:\n    provider: recorder\n    enable: false\n`), fixtureRegistry(j));
    try {
      h.host.bus.publish('rec/a/x', 1);
      await h.host.bus.drain(1000);
      const list = await h.host.bus.request<ModuleInfo[]>(HOST_TOPICS.listModules, {});
      const byName = Object.fromEntries(list.map((m) => [m.name, m]));
      assert.equal(byName.a.state, 'running');
      assert.equal(byName.a.type, 'inner');
      assert.equal(byName.a.mailbox?.handled, 1);
      assert.equal(byName.d.state, 'disabled');
      assert.ok(byName.b.started_at);
    } finally {
      await h.stop();
    }
  });

  test('graceful stop drains queued events before modules stop', async () => {
    const j = newJournal();
    const h = await startHost(`modules:\n  s: { provider: recorder, slow_ms: 1 }\n`, fixtureRegistry(j));
    for (let i = 0; i < 200; i++) h.host.bus.publish('rec/s/e', i);
    await h.stop();
    assert.equal(allReceived(j, 's').length, 200);
  });

  test('a config object can be given directly (no file, no reload)', async () => {
    const j = newJournal();
    const host = new Host({
      config: parseConfig(`modules:\n  a: { provider: recorder }\n`, '/virtual/config.yml', {}),
      registry: fixtureRegistry(j),
      log: silentLogger(),
    });
    await host.start();
    assert.deepEqual((await host.bus.request('rec/a/ask', {})) as object, { instance: 1, greeting: 'hi' });
    await host.stop();
    await host.stop(); // idempotent
  });
});

describe('reload', () => {
  test('editing one block restarts only that module; the others keep their instance', async () => {
    const j = newJournal();
    const h = await startHost(three(), fixtureRegistry(j));
    try {
      const applied = deferred<unknown>();
      h.host.bus.mailbox('t').subscribe(HOST_TOPICS.configApplied, (p) => applied.resolve(p));
      h.writeConfig(
        three().replace('  c:\n    provider: recorder\n', '  c:\n    provider: recorder\n    greeting: hello\n'),
      );
      const outcome = await h.host.reload();
      assert.deepEqual(outcome.restarted, ['c']);
      assert.deepEqual(outcome.started, []);
      assert.deepEqual(outcome.stopped, []);
      await withTimeout(applied.promise, 1000, 'host/config/applied');
      assert.deepEqual(await h.host.bus.request('rec/c/ask', {}), { instance: 2, greeting: 'hello' });
      assert.deepEqual(await h.host.bus.request('rec/a/ask', {}), { instance: 1, greeting: 'hi' });
      assert.deepEqual(await h.host.bus.request('rec/b/ask', {}), { instance: 1, greeting: 'hi' });
    } finally {
      await h.stop();
    }
  });

  test('added modules start, removed and disabled ones stop', async () => {
    const j = newJournal();
    const h = await startHost(three(), fixtureRegistry(j));
    try {
      h.writeConfig(
        `modules:\n  a: { provider: recorder, enable: false }\n  c: { provider: recorder }\n  e: { provider: recorder }\n`,
      );
      const outcome = await h.host.reload();
      assert.deepEqual(outcome.started, ['e']);
      assert.deepEqual(outcome.stopped.sort(), ['a', 'b']);
      const states = Object.fromEntries(h.host.list().map((m) => [m.name, m.state]));
      assert.deepEqual(states, { a: 'disabled', c: 'running', e: 'running' });
      await assert.rejects(h.host.bus.request('rec/b/ask', {}), { code: 'BUS_ERR_NO_RESPONDER' });
    } finally {
      await h.stop();
    }
  });

  test('an invalid edit is rejected with an event naming the key; the running config stays', async () => {
    const j = newJournal();
    const h = await startHost(three(), fixtureRegistry(j));
    try {
      const rejected = deferred<{ code: string; message: string }>();
      h.host.bus.mailbox('t').subscribe(HOST_TOPICS.configRejected, (p) => rejected.resolve(p as never));
      h.writeConfig(three().replace('depends_on: [c]', 'depends_on: [c]\n    slow_ms: "x"'));
      const outcome = await h.host.reload();
      assert.equal(outcome.applied, false);
      const ev = await withTimeout(rejected.promise, 1000, 'host/config/rejected');
      assert.equal(ev.code, 'HOST_ERR_CONFIG_INVALID');
      assert.match(ev.message, /modules\.b\.slow_ms/);
      h.writeConfig('modules: [oops');
      assert.equal((await h.host.reload()).error?.code, 'HOST_ERR_CONFIG_YAML');
      assert.deepEqual(await h.host.bus.request('rec/b/ask', {}), { instance: 1, greeting: 'hi' });
      assert.equal(h.host.list().filter((m) => m.state === 'running').length, 3);
    } finally {
      await h.stop();
    }
  });

  test('the file watcher applies an edit saved by rename', async () => {
    const j = newJournal();
    const h = await startHost(`modules:\n  a: { provider: recorder }\n`, fixtureRegistry(j), { watch: true });
    try {
      const applied = deferred<{ restarted: string[] }>();
      h.host.bus.mailbox('t').subscribe(HOST_TOPICS.configApplied, (p) => applied.resolve(p as never));
      h.writeConfig(`modules:\n  a: { provider: recorder, greeting: yo }\n`);
      const ev = await withTimeout(applied.promise, 5000, 'the watcher to apply the edit');
      assert.deepEqual(ev.restarted, ['a']);
      assert.deepEqual(await h.host.bus.request('rec/a/ask', {}), { instance: 2, greeting: 'yo' });
    } finally {
      await h.stop();
    }
  });

  test('20 restarts while 50 000 events are published: every event exactly once, in order', async () => {
    const j = newJournal();
    const h = await startHost(
      `modules:\n  r:\n    provider: recorder\n    mailbox: { capacity: 100000, overflow: block, block_timeout_ms: 30000 }\n`,
      fixtureRegistry(j),
    );
    try {
      const total = 50_000;
      const publishing = (async () => {
        for (let i = 0; i < total; i++) {
          const r = h.host.bus.publish('rec/r/e', i);
          if (r !== true) assert.equal(await r, true);
          if (i % 500 === 0) await new Promise((res) => setImmediate(res));
        }
      })();
      const restarting = (async () => {
        for (let k = 0; k < 20; k++) {
          await h.host.restartModule('r');
          await new Promise((res) => setImmediate(res));
        }
      })();
      await Promise.all([publishing, restarting]);
      assert.equal(await h.host.bus.drain(10_000), true);
      const got = allReceived(j, 'r') as number[];
      assert.equal(j.instances.get('r'), 21);
      assert.equal(got.length, total);
      for (let i = 0; i < total; i++) if (got[i] !== i) assert.fail(`event ${i} out of place: got ${got[i]}`);
      assert.equal(h.host.bus.mailbox('r').stats().dropped, 0);
    } finally {
      await h.stop();
    }
  });
});
