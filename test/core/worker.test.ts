import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { z } from 'zod';
import type { ModuleInfo } from '../../core/host.js';
import { HOST_TOPICS } from '../../core/host-topics.js';
import type { ModuleProvider } from '../../core/module.js';
import { ProviderRegistry } from '../../core/registry.js';
import { recordEvents } from '../fixtures/bus-events.js';
import { startHost, type TestHost } from '../helpers/host.js';
import { backoffBound, deferred, scaled, until, withTimeout } from '../helpers/wait.js';

// the compiled test runs from dist/test/core/: the repo root is three levels up
const ROOT = fileURLToPath(new URL('../../../', import.meta.url));
const GREETER = path.join(ROOT, 'examples/worker/greeter.mjs');

/**
 * A worker module file: answers `w/ask` with its version and thread, counts `w/e` events (checking
 * they come in order), answers `w/count`, and announces its tally on `w/final` when stopped.
 */
const workerSource = (version: number, extra = '') => `
import { threadId } from 'node:worker_threads';
const VERSION = ${version};
const tally = { version: VERSION, count: 0, first: null, last: null, gaps: 0 };
let bus;
export async function start(ctx) {
  bus = ctx.bus;
  ctx.bus.subscribe('w/ask', (p) => ({ version: VERSION, thread: threadId, hello: p.name, config: ctx.config }));
  ctx.bus.subscribe('w/e', (i) => {
    if (tally.last !== null && i !== tally.last + 1) tally.gaps++;
    if (tally.first === null) tally.first = i;
    tally.last = i;
    tally.count++;
  });
  ctx.bus.subscribe('w/count', () => ({ ...tally, thread: threadId }));
  ctx.bus.subscribe('w/relay', async () => ({ modules: (await ctx.bus.request('host/modules/list', {})).length }));
  ${extra}
}
export async function stop() {
  bus.publish('w/final', tally);
}
`;

// the restart backoff of every worker here; waits for restarts are derived from it
const RESTART = { initial_ms: 50, max_ms: 400 };

const workerConfig = (file: string, extra = '') => `
modules:
  w:
    type: worker
    path: ${file}
    restart: ${JSON.stringify(RESTART)}
${extra}`;

interface Answer {
  version: number;
  thread: number;
  hello: string;
  config: Record<string, unknown>;
}
interface Tally {
  version: number;
  count: number;
  first: number | null;
  last: number | null;
  gaps: number;
  thread?: number;
}

/** Saves a file the way editors do: a temporary file renamed over the original. */
function saveLikeAnEditor(h: TestHost, name: string, text: string): void {
  const file = path.join(h.dir, name);
  fs.writeFileSync(`${file}.swp`, text);
  fs.renameSync(`${file}.swp`, file);
}

describe('worker module (worker_thread)', () => {
  test('the example greeter answers requests; a bad request gets its error code', async () => {
    const h = await startHost(`modules:\n  greeter:\n    type: worker\n    path: ${GREETER}\n`, new ProviderRegistry());
    try {
      assert.deepEqual(await h.host.bus.request('greet/ask', { name: 'ann' }), { greeting: 'hello ann', version: 1 });
      await assert.rejects(h.host.bus.request('greet/ask', {}), { code: 'BUS_ERR_HANDLER', message: /needs \{ name/ });
      const info = h.host.list().find((m) => m.name === 'greeter')!;
      assert.equal(info.type, 'worker');
      assert.equal(info.state, 'running');
      assert.deepEqual(info.mailbox?.subscriptions, ['greet/ask']);
    } finally {
      await h.stop();
    }
  });

  test('config reaches the worker; its own requests to the host are answered', async () => {
    const h = await startHost(
      workerConfig('w.mjs', '    colour: blue\n    limits: { n: 3 }\n'),
      new ProviderRegistry(),
      {
        files: { 'w.mjs': workerSource(1) },
      },
    );
    try {
      const a = await h.host.bus.request<Answer>('w/ask', { name: 'x' });
      assert.deepEqual(a.config, { colour: 'blue', limits: { n: 3 } });
      assert.ok(a.thread > 0);
      assert.deepEqual(await h.host.bus.request('w/relay', {}), { modules: 1 });
    } finally {
      await h.stop();
    }
  });

  test('hot swap: saving a new version of the file restarts the module on the new code', async () => {
    const h = await startHost(workerConfig('w.mjs'), new ProviderRegistry(), { files: { 'w.mjs': workerSource(1) } });
    try {
      const seen = recordEvents(h.host, [HOST_TOPICS.moduleRestarted]);
      const before = await h.host.bus.request<Answer>('w/ask', { name: 'a' });
      assert.equal(before.version, 1);
      saveLikeAnEditor(h, 'w.mjs', workerSource(2));
      const [restarted] = await seen.waitFor(HOST_TOPICS.moduleRestarted, 1, backoffBound(RESTART, 1));
      assert.deepEqual(restarted.payload, { name: 'w', restarts: 1, reason: 'request' });
      const after = await h.host.bus.request<Answer>('w/ask', { name: 'b' });
      assert.equal(after.version, 2); // the new code answers, in a new thread
      assert.notEqual(after.thread, before.thread);
    } finally {
      await h.stop();
    }
  });

  test('changing `path` in config.yml swaps to the other file', async () => {
    const h = await startHost(workerConfig('one.mjs'), new ProviderRegistry(), {
      files: { 'one.mjs': workerSource(1), 'two.mjs': workerSource(2) },
    });
    try {
      assert.equal((await h.host.bus.request<Answer>('w/ask', { name: 'a' })).version, 1);
      h.writeConfig(workerConfig('two.mjs'));
      const outcome = await h.host.reload();
      assert.deepEqual(outcome.restarted, ['w']);
      assert.equal((await h.host.bus.request<Answer>('w/ask', { name: 'b' })).version, 2);
      assert.equal(h.host.list()[0].provider, path.join(h.dir, 'two.mjs'));
    } finally {
      await h.stop();
    }
  });

  test('5 000 events published across a hot swap: each handled once, in order, none lost', async () => {
    const h = await startHost(workerConfig('w.mjs'), new ProviderRegistry(), { files: { 'w.mjs': workerSource(1) } });
    try {
      const total = 5000;
      const half = total / 2;
      let publishedWhilePaused = 0;
      const seen = recordEvents(h.host, ['w/final', HOST_TOPICS.moduleRestarted], (e) => {
        if (e.topic !== 'w/final') return;
        // the old code is stopping: its mailbox holds events for the new code. Publish the rest now.
        const box = h.host.bus.mailbox('w');
        for (let i = half; i < total; i++) {
          if (box.paused) publishedWhilePaused++;
          assert.equal(h.host.bus.publish('w/e', i), true);
        }
      });
      for (let i = 0; i < half; i++) assert.equal(h.host.bus.publish('w/e', i), true);
      await until(() => h.host.bus.mailbox('w').stats().handled > 0, 5000, 'the old worker to take events');
      saveLikeAnEditor(h, 'w.mjs', workerSource(2));
      await seen.waitFor(HOST_TOPICS.moduleRestarted, 1, backoffBound(RESTART, 1));
      const [final] = await seen.waitFor('w/final', 1);
      const old = final.payload as Tally;
      const now = await h.host.bus.request<Tally>('w/count', {}, { timeoutMs: scaled(20_000) });
      assert.equal(old.version, 1);
      assert.equal(now.version, 2);
      assert.equal(publishedWhilePaused, half); // all of them while no code was attached
      assert.equal(old.gaps, 0);
      assert.equal(now.gaps, 0);
      assert.equal(old.first, 0);
      assert.ok(old.count > 0);
      assert.equal(now.first, old.last! + 1); // the new code takes up exactly where the old one left
      assert.equal(now.last, total - 1);
      assert.equal(old.count + now.count, total);
      const stats = h.host.bus.mailbox('w').stats();
      assert.equal(stats.dropped, 0);
      assert.equal(stats.errors, 0);
    } finally {
      await h.stop();
    }
  });

  test('a worker that throws in start: the start failure is reported', async () => {
    const broken = workerSource(1, "throw Object.assign(new Error('no database'), { code: 'DB_ERR_CONFIG' });");
    await assert.rejects(
      startHost(workerConfig('w.mjs'), new ProviderRegistry(), { files: { 'w.mjs': broken } }),
      (err: Error & { code?: string }) => {
        assert.equal(err.code, 'HOST_ERR_START_FAILED');
        assert.match(err.message, /module w failed to start: .*no database/);
        return true;
      },
    );
    // swapped in while running: reported as a failure, retried, and running again once fixed
    const h = await startHost(workerConfig('w.mjs'), new ProviderRegistry(), { files: { 'w.mjs': workerSource(1) } });
    try {
      const seen = recordEvents(h.host, [HOST_TOPICS.moduleFailed, HOST_TOPICS.moduleRestarted, 'w/final']);
      saveLikeAnEditor(h, 'w.mjs', broken);
      const [failed] = await seen.waitFor(HOST_TOPICS.moduleFailed, 1, backoffBound(RESTART, 1));
      const f = failed.payload as { name: string; error: { code: string; message: string }; retry_in_ms: number };
      assert.equal(f.name, 'w');
      assert.equal(f.error.code, 'HOST_ERR_START_FAILED');
      assert.match(f.error.message, /no database/);
      assert.equal(h.host.list()[0].state, 'failed');
      h.host.bus.publish('w/e', 0); // waits for working code
      saveLikeAnEditor(h, 'w.mjs', workerSource(3));
      // the backoff retry may pick the fixed file up first; the watcher's restart always comes last
      await until(
        () => seen.on(HOST_TOPICS.moduleRestarted).some((e) => (e.payload as { reason: string }).reason === 'request'),
        5000,
        'the restart on the fixed file',
      );
      const now = await h.host.bus.request<Tally>('w/count', {});
      assert.equal(now.version, 3);
      // the event published while no code could run was handled once, by version 3
      const finals = seen.on('w/final').map((e) => e.payload as Tally);
      assert.equal(now.count + finals.reduce((n, t) => n + t.count, 0), 1);
      assert.ok(finals.every((t) => t.count === 0 || t.version === 3));
      assert.equal(h.host.list()[0].state, 'running');
    } finally {
      await h.stop();
    }
  });

  test('a worker that exits later: failed, restarted; events queued behind the crash reach the new one', async () => {
    const src = workerSource(1, "ctx.bus.subscribe('w/exit', () => process.exit(1));");
    // a long stop timeout: if stopping the dead worker waited for it, the restart would come far too late
    const h = await startHost(workerConfig('w.mjs', '    stop_timeout_ms: 60000\n'), new ProviderRegistry(), {
      files: { 'w.mjs': src },
    });
    try {
      const seen = recordEvents(h.host, [HOST_TOPICS.moduleFailed, HOST_TOPICS.moduleRestarted]);
      const before = await h.host.bus.request<Answer>('w/ask', { name: 'a' });
      h.host.bus.publish('w/exit', {});
      for (let i = 0; i < 100; i++) h.host.bus.publish('w/e', i);
      const [failed] = await seen.waitFor(HOST_TOPICS.moduleFailed, 1, backoffBound(RESTART, 1));
      assert.match((failed.payload as { error: { message: string } }).error.message, /worker exited with code 1/);
      const [restarted] = await seen.waitFor(HOST_TOPICS.moduleRestarted, 1, backoffBound(RESTART, 1));
      assert.equal((restarted.payload as { reason: string }).reason, 'crash');
      const now = await h.host.bus.request<Tally>('w/count', {});
      assert.notEqual(now.thread, before.thread);
      assert.deepEqual(
        { count: now.count, first: now.first, last: now.last, gaps: now.gaps },
        {
          count: 100,
          first: 0,
          last: 99,
          gaps: 0,
        },
      );
      const [info] = await h.host.bus.request<ModuleInfo[]>(HOST_TOPICS.listModules, {});
      assert.equal(info.restarts, 1);
      assert.equal(info.mailbox?.errors, 1); // only the event it died on
    } finally {
      await h.stop();
    }
  });

  test('a crash while the host is busy restarting another module: queued events still wait', async () => {
    const gate = deferred();
    const slowStop: ModuleProvider<Record<string, never>> = {
      name: 'slow',
      schema: z.object({}).strict(),
      create: () => ({ stop: () => gate.promise }),
    };
    const src = workerSource(1, "ctx.bus.subscribe('w/exit', () => process.exit(1));");
    const h = await startHost(workerConfig('w.mjs', '  slow: {}\n'), new ProviderRegistry().register(slowStop), {
      files: { 'w.mjs': src },
    });
    try {
      const seen = recordEvents(h.host, [HOST_TOPICS.moduleRestarted]);
      await h.host.bus.request<Answer>('w/ask', { name: 'a' });
      const restarting = h.host.restartModule('slow'); // holds the host's lifecycle queue until `gate`
      h.host.bus.publish('w/exit', {});
      for (let i = 0; i < 100; i++) h.host.bus.publish('w/e', i);
      const box = h.host.bus.mailbox('w');
      await until(() => box.stats().errors === 1, 5000, 'the event the worker died on to fail');
      // the crash handling waits its turn behind the slow restart, but the mailbox is held already
      assert.equal(box.paused, true);
      assert.equal(box.stats().queued, 100);
      gate.resolve();
      await restarting;
      await seen.waitFor(HOST_TOPICS.moduleRestarted, 2, backoffBound(RESTART, 2)); // slow (request), then w (crash)
      const now = await h.host.bus.request<Tally>('w/count', {});
      assert.equal(now.count, 100);
      assert.equal(box.stats().errors, 1);
    } finally {
      gate.resolve();
      await h.stop();
    }
  });

  test('an uncaught throw inside a worker: failed, restarted, answering again', async () => {
    const src = workerSource(
      1,
      "ctx.bus.subscribe('w/throw', () => { setTimeout(() => { throw new Error('boom'); }); });",
    );
    const h = await startHost(workerConfig('w.mjs', '    stop_timeout_ms: 60000\n'), new ProviderRegistry(), {
      files: { 'w.mjs': src },
    });
    try {
      const seen = recordEvents(h.host, [HOST_TOPICS.moduleFailed, HOST_TOPICS.moduleRestarted]);
      const before = await h.host.bus.request<Answer>('w/ask', { name: 'a' });
      h.host.bus.publish('w/throw', {});
      const [failed] = await seen.waitFor(HOST_TOPICS.moduleFailed, 1, backoffBound(RESTART, 1));
      assert.match((failed.payload as { error: { message: string } }).error.message, /boom/);
      await seen.waitFor(HOST_TOPICS.moduleRestarted, 1, backoffBound(RESTART, 1));
      const after = await h.host.bus.request<Answer>('w/ask', { name: 'b' });
      assert.notEqual(after.thread, before.thread);
      assert.equal(h.host.list()[0].failures, 1);
    } finally {
      await h.stop();
    }
  });

  test('a restart does not wait for ever on a handler that never returns', async () => {
    const src = workerSource(1, "ctx.bus.subscribe('w/hang', () => new Promise(() => {}));");
    const h = await startHost(workerConfig('w.mjs', '    stop_timeout_ms: 60000\n'), new ProviderRegistry(), {
      files: { 'w.mjs': src },
    });
    try {
      h.host.bus.publish('w/hang', {});
      h.host.bus.publish('w/e', 0);
      await until(() => h.host.bus.mailbox('w').stats().queued === 1, 5000, 'the hanging event to be in flight');
      await withTimeout(h.host.restartModule('w'), 15_000, 'the restart past a hung handler');
      const now = await h.host.bus.request<Tally>('w/count', {});
      assert.equal(now.count, 1); // the event queued behind the hung one went to the new worker
      assert.equal(h.host.bus.mailbox('w').stats().errors, 1); // the hung one failed when its thread ended
    } finally {
      await h.stop();
    }
  });
});
