import assert from 'node:assert/strict';
import { appendFileSync, mkdtempSync, renameSync, rmSync, unlinkSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import { watchConfigFile } from '../../core/config-watch.js';
import { scaled } from '../helpers/wait.js';

const DEBOUNCE = 100;

/** Counts onChange calls and lets a test await the n-th one with a deadline. */
function recorder() {
  let calls = 0;
  let waiters: Array<() => boolean> = [];
  return {
    onChange: () => {
      calls++;
      waiters = waiters.filter((check) => !check());
    },
    get calls() {
      return calls;
    },
    waitFor(n: number, quietMs = 5000): Promise<void> {
      const timeoutMs = scaled(quietMs);
      return new Promise((resolve, reject) => {
        const timer = setTimeout(
          () => reject(new Error(`expected ${n} onChange call(s) within ${timeoutMs} ms, got ${calls}`)),
          timeoutMs,
        );
        const check = () => {
          if (calls < n) return false;
          clearTimeout(timer);
          resolve();
          return true;
        };
        if (!check()) waiters.push(check);
      });
    },
    /** Bounded negative check: no further call during a few debounce windows. */
    async expectNoMore(ms = DEBOUNCE * 3): Promise<void> {
      const before = calls;
      await new Promise((r) => setTimeout(r, ms));
      assert.equal(calls, before, 'no further onChange call expected');
    },
  };
}

function tempConfig(): { dir: string; file: string; cleanup: () => void } {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'gmq-watch-'));
  const file = path.join(dir, 'config.yml');
  writeFileSync(file, 'modules: {}\n');
  return { dir, file, cleanup: () => rmSync(dir, { recursive: true, force: true }) };
}

/** What an editor does: write a temporary file, then rename it over the original. */
function saveByRename(file: string, content: string): void {
  const tmp = `${file}.tmp-${process.pid}`;
  writeFileSync(tmp, content);
  renameSync(tmp, file);
}

const count = (kind: string) => process.getActiveResourcesInfo().filter((r) => r === kind).length;
const turn = () => new Promise((r) => setImmediate(r));

/** Polls the event loop until `ok()` holds; a closed handle is only dropped in a later loop turn. */
async function until(ok: () => boolean, what: string, timeoutMs = 5000): Promise<void> {
  const deadline = Date.now() + scaled(timeoutMs);
  while (!ok()) {
    assert.ok(Date.now() < deadline, what);
    await turn();
  }
}

test('a save by write-and-rename calls onChange exactly once, save after save', async () => {
  const { file, cleanup } = tempConfig();
  const rec = recorder();
  const w = watchConfigFile(file, rec.onChange, { debounceMs: DEBOUNCE });
  try {
    saveByRename(file, 'modules:\n  a: {}\n');
    await rec.waitFor(1);
    await rec.expectNoMore();

    // Several events in one burst (rename, then an in-place append) still make one call.
    saveByRename(file, 'modules:\n  b: {}\n');
    appendFileSync(file, '# touched\n');
    await rec.waitFor(2);
    await rec.expectNoMore();
    assert.equal(rec.calls, 2);
  } finally {
    w.close();
    cleanup();
  }
});

test('other files in the directory are ignored', async () => {
  const { dir, file, cleanup } = tempConfig();
  const rec = recorder();
  const w = watchConfigFile(file, rec.onChange, { debounceMs: DEBOUNCE });
  try {
    writeFileSync(path.join(dir, 'other.yml'), 'x: 1\n');
    saveByRename(path.join(dir, 'config.yml.bak'), 'x: 1\n');
    await rec.expectNoMore();
    assert.equal(rec.calls, 0);
  } finally {
    w.close();
    cleanup();
  }
});

test('keeps working after the file is deleted and recreated', async () => {
  const { file, cleanup } = tempConfig();
  const rec = recorder();
  const w = watchConfigFile(file, rec.onChange, { debounceMs: DEBOUNCE });
  try {
    unlinkSync(file);
    await rec.waitFor(1);
    writeFileSync(file, 'modules:\n  c: {}\n');
    await rec.waitFor(2);
    saveByRename(file, 'modules:\n  d: {}\n');
    await rec.waitFor(3);
    await rec.expectNoMore();
  } finally {
    w.close();
    cleanup();
  }
});

test('close() releases the watcher and a pending debounce timer', async () => {
  const { file, cleanup } = tempConfig();
  const rec = recorder();
  await turn(); // let handles closed by earlier tests leave the list
  await turn();
  const watchersBefore = count('FSEventWrap');
  const timersBefore = count('Timeout');
  const w = watchConfigFile(file, rec.onChange, { debounceMs: 10_000 });
  try {
    assert.equal(count('FSEventWrap'), watchersBefore + 1);
    writeFileSync(file, 'modules:\n  e: {}\n');
    // The debounce timer exists once the watch event has arrived.
    await until(() => count('Timeout') > timersBefore, 'the watch event never armed the debounce timer');
    w.close();
    w.close(); // idempotent
    await until(() => count('FSEventWrap') === watchersBefore, 'watcher handle left open');
    assert.equal(count('Timeout'), timersBefore, 'debounce timer left pending');
    assert.equal(rec.calls, 0, 'no call after close');
  } finally {
    w.close();
    cleanup();
  }
});
