import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { HOST_TOPICS } from '../../core/host-topics.js';
import { ProviderRegistry } from '../../core/registry.js';
import { recordEvents } from '../fixtures/bus-events.js';
import { captureLog, LEVEL } from '../fixtures/capture-log.js';
import { startHost } from '../helpers/host.js';
import { backoffBound, scaled, until } from '../helpers/wait.js';

// the compiled test runs from dist/test/core/: the repo root is three levels up
const ROOT = fileURLToPath(new URL('../../../', import.meta.url));
const ECHO = `${ROOT}examples/exe/echo_module.py`;
// the restart backoff of every test here; waits for restarts are derived from it. A run longer
// than max_ms would reset the backoff, and on a loaded machine the crash after two events can
// take that long: reset_after_ms keeps the sequence the test checks independent of the load
const RESTART = { initial_ms: 100, max_ms: 400, reset_after_ms: 600_000 };

const exeConfig = (extra = '') => `
modules:
  py:
    type: exe
    command: python3
    args: [${JSON.stringify(ECHO)}]
    restart: ${JSON.stringify(RESTART)}
${extra}`;

interface Echo {
  echo: unknown;
  from: string;
  pid: number;
}

const processGone = (pid: number) => {
  try {
    process.kill(pid, 0);
    return false;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'ESRCH';
  }
};

describe('exe module (python, line-delimited JSON over stdio)', () => {
  test('answers a bus request with a reply', async () => {
    const h = await startHost(exeConfig(), new ProviderRegistry());
    try {
      const r = await h.host.bus.request<Echo>('py/ask', { n: 1, s: 'é ✓' });
      assert.deepEqual(r.echo, { n: 1, s: 'é ✓' });
      assert.equal(r.from, 'python');
      assert.ok(Number.isInteger(r.pid));
      const info = h.host.list().find((m) => m.name === 'py')!;
      assert.equal(info.type, 'exe');
      assert.equal(info.state, 'running');
      assert.deepEqual(info.mailbox?.subscriptions.sort(), ['py/ask', 'py/crash', 'py/echo/#', 'py/relay']);
    } finally {
      await h.stop();
    }
  });

  test('events it gets are republished by it, in order', async () => {
    const h = await startHost(exeConfig(), new ProviderRegistry());
    try {
      const seen = recordEvents(h.host, ['py/echoed/#']);
      h.host.bus.publish('py/echo/a', { x: 1 });
      const [first] = await seen.waitFor('py/echoed/', 1);
      assert.deepEqual(first, { topic: 'py/echoed/a', payload: { x: 1 } });
      for (let i = 0; i < 200; i++) h.host.bus.publish(`py/echo/n/${i % 3}`, i);
      const got = await seen.waitFor('py/echoed/n/', 200);
      assert.deepEqual(
        got.map((e) => e.payload),
        Array.from({ length: 200 }, (_, i) => i),
      );
      assert.equal(got[5].topic, 'py/echoed/n/2');
    } finally {
      await h.stop();
    }
  });

  test("the process's own request to the host is answered", async () => {
    const h = await startHost(
      `${exeConfig()}  other:\n    type: exe\n    command: python3\n    args: [${JSON.stringify(ECHO)}]\n    enable: false\n`,
      new ProviderRegistry(),
    );
    try {
      const seen = recordEvents(h.host, ['py/relayed']);
      h.host.bus.publish('py/relay', {});
      const [ev] = await seen.waitFor('py/relayed', 1);
      // it asked host/modules/list and counted the answer: py itself and the disabled `other`
      assert.deepEqual(ev.payload, { count: 2 });
    } finally {
      await h.stop();
    }
  });

  test('malformed lines from the process are counted and logged; it keeps working', async () => {
    const cap = captureLog();
    const h = await startHost(exeConfig('    bad_lines: true\n'), new ProviderRegistry(), { log: cap.log });
    try {
      // the example prints 9 bad lines before `ready`: not JSON, an array, no op, unknown op, a reply
      // for no event, a bad filter, a bad publish topic, a request on a wildcard, a line over 1 MiB
      await until(() => cap.find('peer sent a malformed message', 'py').length >= 9, 5000, '9 malformed lines');
      const bad = cap.find('peer sent a malformed message', 'py');
      assert.equal(bad.length, 9);
      assert.deepEqual(
        bad.map((l) => l.rejected),
        [1, 2, 3, 4, 5, 6, 7, 8, 9],
      );
      assert.ok(bad.every((l) => l.level === LEVEL.warn));
      const reasons = bad.map((l) => String(l.reason));
      assert.equal(reasons[0], 'line is not JSON');
      assert.match(reasons[3], /unknown op teleport/);
      assert.match(reasons[4], /unknown event id/);
      assert.match(reasons[5], /valid topic filter/);
      assert.match(reasons[6], /publish refused/);
      assert.match(reasons[7], /request refused: not a publishable topic/);
      assert.match(reasons[8], /longer than 1048576 bytes/);
      // no raw line content reaches the log (it could be anything, and huge)
      assert.ok(cap.lines.every((l) => JSON.stringify(l).length < 4000));
      const r = await h.host.bus.request<Echo>('py/ask', 'still here');
      assert.equal(r.echo, 'still here');
      // the module's own {op:'log'} lines land in the host log under its name
      const hello = cap.find('python module subscribed', 'py');
      assert.equal(hello.length, 1);
      assert.equal(hello[0].pid, r.pid);
    } finally {
      await h.stop();
    }
  });

  test('a crash is reported, restarted with growing backoff; events sent while down reach the next process', async () => {
    const h = await startHost(exeConfig('    crash_after: 2\n'), new ProviderRegistry());
    try {
      const pausedWhenFailed: boolean[] = [];
      const queuedWhenFailed: number[] = [];
      const seen = recordEvents(h.host, [HOST_TOPICS.moduleFailed, HOST_TOPICS.moduleRestarted, 'py/echoed/#'], (e) => {
        if (e.topic !== HOST_TOPICS.moduleFailed) return;
        // runs as the failure is announced: the next process is not started yet
        const box = h.host.bus.mailbox('py');
        pausedWhenFailed.push(box.paused);
        const n = pausedWhenFailed.length;
        if (n === 1) h.host.bus.publish('py/echo/down-1', { n: 1 });
        if (n === 2 || n === 3) {
          // two events wait in the mailbox, and crash the next process as soon as it takes them
          h.host.bus.publish(`py/echo/down-${n}a`, { n });
          h.host.bus.publish(`py/echo/down-${n}b`, { n });
        }
        queuedWhenFailed.push(box.stats().queued);
      });

      const a = await h.host.bus.request<Echo>('py/ask', 1);
      const b = await h.host.bus.request<Echo>('py/ask', 2); // answered, then the process exits with 3
      assert.equal(a.pid, b.pid);
      const [failed1] = await seen.waitFor(HOST_TOPICS.moduleFailed, 1, backoffBound(RESTART, 1));
      const f1 = failed1.payload as { name: string; error: { message: string }; failures: number; retry_in_ms: number };
      assert.equal(f1.name, 'py');
      assert.match(f1.error.message, /code 3/);
      assert.equal(f1.retry_in_ms, 100);
      assert.deepEqual(pausedWhenFailed, [true]);
      assert.deepEqual(queuedWhenFailed, [1]);
      await until(() => processGone(a.pid), 2000, 'the crashed process to be reaped');

      const [restarted1] = await seen.waitFor(HOST_TOPICS.moduleRestarted, 1, backoffBound(RESTART, 1));
      assert.deepEqual(restarted1.payload, { name: 'py', restarts: 1, reason: 'crash' });
      // the event published while it was down reached the new process
      const [echoed] = await seen.waitFor('py/echoed/', 1);
      assert.deepEqual(echoed, { topic: 'py/echoed/down-1', payload: { n: 1 } });
      const c = await h.host.bus.request<Echo>('py/ask', 3); // its second event: it crashes again
      assert.notEqual(c.pid, a.pid);
      assert.equal(c.echo, 3);

      // crashes 3 and 4 come from the events queued while it was down
      const failed = await seen.waitFor(HOST_TOPICS.moduleFailed, 4, backoffBound(RESTART, 4));
      assert.deepEqual(
        failed.map((e) => (e.payload as { retry_in_ms: number }).retry_in_ms),
        [100, 200, 400, 400],
      );
      assert.deepEqual(
        failed.map((e) => (e.payload as { failures: number }).failures),
        [1, 2, 3, 4],
      );
      assert.deepEqual(pausedWhenFailed, [true, true, true, true]);
      assert.deepEqual(queuedWhenFailed, [1, 2, 2, 0]);
      const echoedAll = await seen.waitFor('py/echoed/', 5);
      assert.deepEqual(
        echoedAll.map((e) => e.topic),
        ['py/echoed/down-1', 'py/echoed/down-2a', 'py/echoed/down-2b', 'py/echoed/down-3a', 'py/echoed/down-3b'],
      );
      await seen.waitFor(HOST_TOPICS.moduleRestarted, 4, backoffBound(RESTART, 4));
      const d = await h.host.bus.request<Echo>('py/ask', 4);
      assert.equal(d.echo, 4);
      const info = h.host.list().find((m) => m.name === 'py')!;
      assert.equal(info.restarts, 4);
      assert.equal(info.state, 'running');
      assert.equal(info.mailbox?.dropped, 0);
    } finally {
      await h.stop();
    }
  });

  test('a crash while the pipe to it is full does not wedge its mailbox', async () => {
    const h = await startHost(exeConfig(), new ProviderRegistry());
    try {
      const seen = recordEvents(h.host, [HOST_TOPICS.moduleRestarted, 'py/echoed/#']);
      const big = 'x'.repeat(8192);
      const total = 3000; // 24 MiB: far more than a pipe holds, so the host waits for 'drain' when it dies
      h.host.bus.publish('py/crash', {});
      for (let i = 0; i < total; i++) {
        const r = h.host.bus.publish('py/echo/flood', { i, big });
        if (r !== true) assert.equal(await r, true);
      }
      await seen.waitFor(HOST_TOPICS.moduleRestarted, 1, backoffBound(RESTART, 1));
      // the events written into the dead pipe are gone; every later one reaches the next process
      const r = await h.host.bus.request<Echo>('py/ask', 'after', { timeoutMs: scaled(20_000) });
      assert.equal(r.echo, 'after');
      // it wrote its echoes before that reply; they reach the test's own mailbox a moment later
      const flood = () => seen.on('py/echoed/flood').map((e) => (e.payload as { i: number }).i);
      // 24 MiB of echoes cross the pipe and the JSON parser: on a loaded 2-core machine that can
      // take more than 5 s (it did, once in ten runs), so the bound matches the request's above
      await until(() => flood().at(-1) === total - 1, 20_000, 'the last echo').catch((err: Error) => {
        const g = flood();
        throw new Error(`${err.message}: ${g.length} echoes, the last ${g.at(-1)}`);
      });
      const got = flood();
      assert.ok(got.length > 0 && got.length < total, `echoed ${got.length}`);
      assert.equal(got[got.length - 1], total - 1);
      for (let k = 1; k < got.length; k++) assert.equal(got[k], got[k - 1] + 1);
      assert.equal(h.host.bus.mailbox('py').stats().queued, 0);
    } finally {
      await h.stop();
    }
  });

  test('a child whose input closed before its exit was seen: the events of that moment wait for the next process', async () => {
    // Seen beside another suite: the child died, its pipe broke (EPIPE) at once, and its exit
    // came seconds later; every event handed over in between was dropped as written, so the
    // next process saw none of 3000. Here the child closes its input and exits 2 s later.
    const h = await startHost(exeConfig(), new ProviderRegistry());
    try {
      const seen = recordEvents(h.host, [HOST_TOPICS.moduleRestarted, 'py/echoed/#']);
      const first = await h.host.bus.request<Echo>('py/ask', 'before');
      h.host.bus.publish('py/crash', { linger_s: 2 });
      // its input is closed once this write of the pipe fails: wait until the host's side is broken
      await until(() => h.host.bus.mailbox('py').stats().queued === 0, 5_000, 'the crash event taken');
      await new Promise((r) => setTimeout(r, 300));
      const total = 100;
      for (let i = 0; i < total; i++) {
        const r = h.host.bus.publish('py/echo/late', { i });
        if (r !== true) assert.equal(await r, true);
      }
      await seen.waitFor(HOST_TOPICS.moduleRestarted, 1, backoffBound(RESTART, 1) + 5_000);
      const late = () => seen.on('py/echoed/late').map((e) => (e.payload as { i: number }).i);
      // one event may be lost into the broken pipe (the write that found it broken); the rest go on
      await until(() => late().at(-1) === total - 1, 20_000, 'the last late echo').catch((err: Error) => {
        throw new Error(`${err.message}: ${late().length} of ${total} echoed`);
      });
      const got = late();
      assert.ok(got.length >= total - 2, `echoed ${got.length} of ${total}`);
      for (let k = 1; k < got.length; k++) assert.equal(got[k], got[k - 1] + 1);
      const after = await h.host.bus.request<Echo>('py/ask', 'after');
      assert.notEqual(after.pid, first.pid);
    } finally {
      await h.stop();
    }
  });

  test('graceful stop sends stop; the process exits 0 and is reaped', async () => {
    const cap = captureLog();
    const h = await startHost(exeConfig(), new ProviderRegistry(), { log: cap.log });
    const { pid } = await h.host.bus.request<Echo>('py/ask', 'x');
    assert.equal(processGone(pid), false);
    await h.stop();
    const stopped = cap.find('exe process stopped', 'py');
    assert.equal(stopped.length, 1);
    assert.equal(stopped[0].pid, pid);
    assert.equal(stopped[0].code, 0); // it left on its own after `stop`: no SIGTERM was needed
    assert.equal(stopped[0].signal, null);
    assert.equal(cap.find('python module stopping', 'py').length, 1);
    assert.throws(() => process.kill(pid, 0), { code: 'ESRCH' }); // no zombie, no orphan
  });

  test('a command that cannot run fails the start with a clear error', async () => {
    await assert.rejects(
      startHost(
        'modules:\n  nope:\n    type: exe\n    command: /nonexistent/gmq-hub-test-binary\n',
        new ProviderRegistry(),
      ),
      (err: Error & { code?: string }) => {
        assert.equal(err.code, 'HOST_ERR_START_FAILED');
        assert.match(err.message, /cannot run \/nonexistent\/gmq-hub-test-binary: .*ENOENT/);
        return true;
      },
    );
  });
});
