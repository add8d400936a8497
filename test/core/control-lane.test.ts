/**
 * The control lane (core/mailbox.ts, SubscribeOptions.lane): introspection never waits behind
 * data. Issue 13 measured the memory suite dying because its stats request queued behind 100 000
 * heartbeats; these tests would have caught it: a control request is answered while a backlog
 * waits and while an async data handler holds the mailbox, and every stats/metrics/list
 * subscription in the code declares the lane.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { describe, test } from 'node:test';
import { Bus, CONTROL } from '../../core/bus.js';
import { silentLogger } from '../../core/log.js';
import { REPO_ROOT } from '../helpers/process.js';
import { deferred, scaled, withTimeout } from '../helpers/wait.js';

const BACKLOG = 100_000;

describe('control lane', () => {
  test('a stats request is answered while an async data handler holds the mailbox and 100 000 events wait', async () => {
    const bus = new Bus(silentLogger());
    const m = bus.mailbox('status', { capacity: 200_000, overflow: 'block', block_timeout_ms: 1000 });
    const gate = deferred();
    const handled: number[] = [];
    m.subscribe('data/heartbeat', async (p) => {
      if (handled.length === 0) await gate.promise; // the first event holds the mailbox
      handled.push(p as number);
    });
    m.subscribe('status/stats', () => ({ queued: m.stats().queued, handled: handled.length }), CONTROL);
    for (let i = 0; i < BACKLOG; i++) bus.publish('data/heartbeat', i);

    const answer = await withTimeout(
      bus.request<{ queued: number; handled: number }>('status/stats', {}, { timeoutMs: scaled(5_000) }),
      scaled(10_000),
      'the stats answer',
    );
    assert.equal(answer.handled, 0, 'answered before any data event finished');
    assert.ok(answer.queued >= BACKLOG - 1, `the backlog was still waiting: ${answer.queued}`);

    gate.resolve();
    assert.equal(await bus.drain(scaled(60_000)), true);
    assert.equal(handled.length, BACKLOG);
    assert.ok(
      handled.every((v, i) => v === i),
      'the data lane kept its order',
    );
    const s = m.stats();
    assert.equal(s.control_handled, 1);
    assert.equal(s.handled, BACKLOG + 1);
  });

  test('a topic that also reaches a data subscription stays in order on the data lane', async () => {
    const bus = new Bus(silentLogger());
    const m = bus.mailbox('mod');
    const seen: string[] = [];
    m.subscribe('x/#', (_p, msg) => {
      seen.push(`data:${msg.topic}`);
    });
    m.subscribe(
      'x/stats',
      () => {
        seen.push('control');
      },
      CONTROL,
    );
    bus.publish('x/a', 1);
    bus.publish('x/stats', 2);
    bus.publish('x/b', 3);
    await bus.drain(scaled(1000));
    assert.deepEqual(seen, ['data:x/a', 'data:x/stats', 'control', 'data:x/b']);
    assert.equal(m.stats().control_handled, 0);
  });

  test('settled() is the barrier a caller awaits before a control answer that must include what it published', async () => {
    const bus = new Bus(silentLogger());
    const m = bus.mailbox('mod');
    let count = 0;
    m.subscribe('e', async () => {
      await new Promise((r) => setImmediate(r));
      count++;
    });
    m.subscribe('mod/stats', () => count, CONTROL);
    for (let i = 0; i < 50; i++) bus.publish('e', i);
    const early = await bus.request<number>('mod/stats', {}, { timeoutMs: scaled(5_000) });
    assert.ok(early < 50, `answered ahead of the queue (${early} handled)`);
    await bus.settled('mod');
    assert.equal(await bus.request<number>('mod/stats', {}, { timeoutMs: scaled(5_000) }), 50);
    await bus.settled('no-such-module');
  });

  test('control requests wait while the module restarts and go to the new instance', async () => {
    const bus = new Bus(silentLogger());
    const m = bus.mailbox('mod');
    m.subscribe('mod/stats', () => 'old', CONTROL);
    m.pause();
    const pending = bus.request<string>('mod/stats', {}, { timeoutMs: scaled(5_000) });
    await new Promise((r) => setTimeout(r, 20));
    m.subscribe('mod/stats', () => 'new', CONTROL);
    m.resume();
    assert.equal(await pending, 'new');
  });

  test('an async control handler answers; its error reaches the requester', async () => {
    const bus = new Bus(silentLogger());
    const m = bus.mailbox('mod');
    m.subscribe('mod/stats', async () => ({ ok: true }), CONTROL);
    m.subscribe(
      'mod/list',
      async () => {
        throw Object.assign(new Error('store down'), { code: 'DB_ERR_UNAVAILABLE' });
      },
      CONTROL,
    );
    assert.deepEqual(await bus.request('mod/stats', {}, { timeoutMs: scaled(5_000) }), { ok: true });
    await assert.rejects(bus.request('mod/list', {}, { timeoutMs: scaled(5_000) }), { code: 'DB_ERR_UNAVAILABLE' });
    assert.equal(await bus.drain(scaled(1000)), true);
  });
});

/** Every `subscribe(` call in core/ and modules/, as its full argument text. */
function subscribeCalls(): Array<{ file: string; text: string }> {
  const out: Array<{ file: string; text: string }> = [];
  for (const dir of ['core', 'modules']) {
    for (const entry of fs.readdirSync(path.join(REPO_ROOT, dir), { withFileTypes: true, recursive: true })) {
      if (!entry.isFile() || !entry.name.endsWith('.ts')) continue;
      const file = path.join(entry.parentPath, entry.name);
      const src = fs.readFileSync(file, 'utf8');
      for (const m of src.matchAll(/\bsubscribe(?:<[^>(]*>)?\(/g)) {
        let depth = 1;
        let i = m.index + m[0].length;
        for (; i < src.length && depth > 0; i++) {
          if (src[i] === '(') depth++;
          else if (src[i] === ')') depth--;
        }
        out.push({ file: path.relative(REPO_ROOT, file), text: src.slice(m.index, i) });
      }
    }
  }
  return out;
}

describe('introspection subscriptions', () => {
  test('every stats, metrics, module-list and info subscription is on the control lane', () => {
    const calls = subscribeCalls();
    const introspection = calls.filter(({ text }) =>
      /^subscribe(?:<[^>(]*>)?\(\s*(?:[A-Z_]+\.(?:stats|busStats|listModules|info)\b|metricsTopic\()/.test(text),
    );
    assert.ok(introspection.length >= 10, `found ${introspection.length} introspection subscriptions`);
    const missing = introspection.filter(({ text }) => !/\bCONTROL\b/.test(text));
    assert.deepEqual(
      missing.map(({ file, text }) => `${file}: ${text.split('\n')[0]}`),
      [],
      'declare them with CONTROL (core/mailbox.ts)',
    );
  });
});
