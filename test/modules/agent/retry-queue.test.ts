import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { describe, test } from 'node:test';
import { HubError } from '../../../core/errors.js';
import { silentLogger } from '../../../core/log.js';
import type { ModuleTimers } from '../../../core/module.js';
import { type QueuedUplink, RetryQueue, type RetryQueueOptions } from '../../../modules/agent/retry-queue.js';
import { until } from '../../helpers/wait.js';

const timers: ModuleTimers = {
  setTimeout: (fn, ms) => setTimeout(fn, ms),
  setInterval: (fn, ms) => setInterval(fn, ms),
  clear: (t) => clearTimeout(t),
};

function tmpDir(): string {
  return fs.mkdtempSync(path.join(os.tmpdir(), 'agent-rq-'));
}

function queue(dir: string, o: Partial<RetryQueueOptions> = {}): RetryQueue {
  const q = new RetryQueue({
    dir,
    memoryMax: 3,
    diskMax: 100,
    ttlMs: 60_000,
    maxRetries: 3,
    window: 2,
    retryDelayMs: 1,
    log: silentLogger(),
    timers,
    ...o,
  });
  q.load();
  return q;
}

/** A sender that records what it published (the `n` of each payload). */
function recorder() {
  const sent: number[] = [];
  const send = async (e: QueuedUplink) => {
    sent.push((e.payload as { n: number }).n);
  };
  return { sent, send };
}

const files = (dir: string) => fs.readdirSync(dir).filter((f) => f.endsWith('.json'));

describe('retry queue', () => {
  test('online and empty: published at once, in order', async () => {
    const dir = tmpDir();
    const q = queue(dir);
    const r = recorder();
    q.online(r.send);
    for (let n = 0; n < 5; n++) q.enqueue('log_result', { n });
    await until(() => r.sent.length === 5, 2000, 'five sent');
    assert.deepEqual(r.sent, [0, 1, 2, 3, 4]);
    assert.equal(q.stats().sent, 5);
    assert.equal(files(dir).length, 0, 'nothing touched the disk');
    fs.rmSync(dir, { recursive: true });
  });

  test('offline: memory fills, then disk; the drain keeps FIFO order across both', async () => {
    const dir = tmpDir();
    const q = queue(dir);
    for (let n = 0; n < 10; n++) q.enqueue('log_result', { n });
    assert.deepEqual({ m: q.stats().queue_memory, d: q.stats().queue_disk }, { m: 3, d: 7 });
    assert.equal(files(dir).length, 10, 'offline, the memory part has a disk copy too');
    const r = recorder();
    q.online(r.send);
    // new messages while disk entries wait go behind them
    q.enqueue('log_result', { n: 10 });
    await until(() => r.sent.length === 11, 2000, 'all sent');
    assert.deepEqual(
      r.sent,
      Array.from({ length: 11 }, (_, i) => i),
    );
    assert.equal(files(dir).length, 0, 'sent files are removed');
    assert.deepEqual(q.stats(), { queue_memory: 0, queue_disk: 0, sent: 11, retried: 0, expired: 0, dropped: 0 });
    fs.rmSync(dir, { recursive: true });
  });

  test('persist on stop, load in a new queue: everything arrives, oldest first', async () => {
    const dir = tmpDir();
    const q1 = queue(dir);
    for (let n = 0; n < 5; n++) q1.enqueue('exec_result', { n });
    await q1.close();
    assert.equal(q1.persist(), 3);
    assert.equal(files(dir).length, 5);
    fs.writeFileSync(path.join(dir, '.half-written.tmp'), '{"v":1,');
    const q2 = queue(dir);
    assert.equal(q2.diskCount, 5);
    assert.equal(fs.existsSync(path.join(dir, '.half-written.tmp')), false, 'incomplete files are removed');
    const r = recorder();
    q2.online(r.send);
    await until(() => r.sent.length === 5, 2000, 'all sent');
    assert.deepEqual(r.sent, [0, 1, 2, 3, 4]);
    fs.rmSync(dir, { recursive: true });
  });

  test('entries older than ttl_ms expire, in memory and on disk', async () => {
    const dir = tmpDir();
    let now = 1_000_000;
    const q = queue(dir, { ttlMs: 1000, now: () => now });
    for (let n = 0; n < 5; n++) q.enqueue('log_result', { n });
    now += 500;
    q.enqueue('log_result', { n: 5 });
    now += 600; // the first five are 1100 ms old, the last 600
    q.sweep();
    assert.equal(q.stats().expired, 5);
    const r = recorder();
    q.online(r.send);
    await until(() => r.sent.length === 1, 2000, 'the live one sent');
    assert.deepEqual(r.sent, [5]);
    assert.equal(files(dir).length, 0);
    fs.rmSync(dir, { recursive: true });
  });

  test('a failed publish goes back to the front; after max_retries it is dropped and counted', async () => {
    const dir = tmpDir();
    const q = queue(dir, { maxRetries: 3 });
    for (let n = 0; n < 2; n++) q.enqueue('log_result', { n });
    let calls = 0;
    q.online(async () => {
      calls++;
      throw new HubError('AGENT_ERR_OFFLINE', 'broker said no');
    });
    await until(() => q.stats().dropped === 2, 2000, 'both dropped');
    assert.equal(calls, 6);
    assert.equal(q.stats().retried, 4);
    assert.equal(q.stats().queue_memory, 0);
    fs.rmSync(dir, { recursive: true });
  });

  test('a connection lost mid-drain keeps the order for the next connection', async () => {
    const dir = tmpDir();
    const q = queue(dir, { window: 4 });
    for (let n = 0; n < 6; n++) q.enqueue('log_result', { n });
    const first: number[] = [];
    q.online(async (e) => {
      const n = (e.payload as { n: number }).n;
      if (n >= 2) {
        q.offline();
        throw new HubError('AGENT_ERR_OFFLINE', 'connection closed before the PUBACK');
      }
      first.push(n);
    });
    await until(() => q.stats().retried === 2, 2000, 'two back in the queue');
    assert.deepEqual(first, [0, 1]);
    const r = recorder();
    q.online(r.send);
    await until(() => r.sent.length === 4, 2000, 'the rest sent');
    assert.deepEqual(r.sent, [2, 3, 4, 5]);
    fs.rmSync(dir, { recursive: true });
  });

  test('offline, nothing waits only in memory: a killed process (no persist) loses nothing', async () => {
    const dir = tmpDir();
    const q1 = queue(dir, { window: 4 });
    // connected: memory only, the disk is not touched
    const first: number[] = [];
    const inFlight: Array<(err: Error) => void> = [];
    q1.online((e) => {
      const n = (e.payload as { n: number }).n;
      if (n === 0) {
        first.push(n);
        return Promise.resolve();
      }
      return new Promise<void>((_, reject) => inFlight.push(reject));
    });
    q1.enqueue('exec_result', { n: 0 });
    await until(() => first.length === 1, 2000, 'the first sent');
    assert.equal(files(dir).length, 0);
    // one publish in flight, one more waiting behind it; then the connection closes (connection.ts
    // reports the loss, then fails the publishes still waiting for their PUBACK)
    q1.enqueue('exec_result', { n: 1 });
    await until(() => inFlight.length === 1, 2000, 'one publish in flight');
    q1.enqueue('exec_result', { n: 2 });
    q1.offline();
    for (const reject of inFlight) reject(new HubError('AGENT_ERR_OFFLINE', 'connection closed before the PUBACK'));
    await until(() => q1.stats().retried === 1, 2000, 'the in-flight one back in the queue');
    q1.enqueue('exec_result', { n: 3 });
    assert.equal(files(dir).length, 3, 'everything waiting is on disk');
    // SIGKILL: no close(), no persist(); a new process finds all of it, in order
    const q2 = queue(dir);
    assert.equal(q2.diskCount, 3);
    const r = recorder();
    q2.online(r.send);
    await until(() => r.sent.length === 3, 2000, 'all sent');
    assert.deepEqual(r.sent, [1, 2, 3]);
    assert.equal(files(dir).length, 0);
    fs.rmSync(dir, { recursive: true });
  });

  test('a message that cannot be built is dropped at once', async () => {
    const dir = tmpDir();
    const q = queue(dir, { maxRetries: 10 });
    q.enqueue('log_result', { n: 0 });
    q.online(async () => {
      throw new HubError('PROTO_ERR_SCHEMA', 'payload.seq: required');
    });
    await until(() => q.stats().dropped === 1, 2000, 'dropped');
    assert.equal(q.stats().retried, 0);
    fs.rmSync(dir, { recursive: true });
  });

  test('memory and disk full: new messages are dropped and counted', () => {
    const dir = tmpDir();
    const q = queue(dir, { memoryMax: 1, diskMax: 2 });
    for (let n = 0; n < 5; n++) q.enqueue('log_result', { n });
    assert.deepEqual({ ...q.stats() }, { queue_memory: 1, queue_disk: 2, sent: 0, retried: 0, expired: 0, dropped: 2 });
    fs.rmSync(dir, { recursive: true });
  });

  test('an unreadable file on disk is dropped and the rest is delivered', async () => {
    const dir = tmpDir();
    const q1 = queue(dir, { memoryMax: 1 });
    for (let n = 0; n < 3; n++) q1.enqueue('log_result', { n });
    q1.persist();
    const [firstFile] = files(dir).sort();
    fs.writeFileSync(path.join(dir, firstFile), 'not json');
    const q2 = queue(dir);
    const r = recorder();
    q2.online(r.send);
    await until(() => r.sent.length === 2, 2000, 'the readable two');
    assert.deepEqual(r.sent, [1, 2]);
    assert.equal(q2.stats().dropped, 1);
    fs.rmSync(dir, { recursive: true });
  });
});
