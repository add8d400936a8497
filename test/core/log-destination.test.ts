/**
 * The hub's log destination (core/log-destination.ts): pino's asynchronous sonic-boom with a
 * `write` that keeps the byte length of the chunk it appends to. sonic-boom's own measured that
 * chunk on every line, and while a write is in flight it is a rope of every line since, so each
 * line flattened (copied) up to 16 KB: 25 KB of the 164 KB the hub allocated per async command.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, describe, test } from 'node:test';
import pino from 'pino';
import { measuredAppends } from '../../core/log-destination.js';

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'gmq-logdest-'));
after(() => fs.rmSync(dir, { recursive: true, force: true }));

type Boom = pino.DestinationStream & {
  end(): void;
  on(event: string, fn: (...a: unknown[]) => void): void;
};

function destination(name: string, opts: { maxLength?: number } = {}): { boom: Boom; file: string } {
  const file = path.join(dir, name);
  const boom = pino.destination({ dest: file, sync: false, minLength: 0, ...opts }) as unknown as Boom;
  return { boom, file };
}

async function ready(boom: Boom): Promise<void> {
  await new Promise<void>((r) => boom.on('ready', () => r()));
}

async function closed(boom: Boom): Promise<void> {
  await new Promise<void>((r) => {
    boom.on('close', () => r());
    boom.end();
  });
}

/** Lines of different sizes, multi-byte UTF-8 among them, so chunks fill at odd byte counts. */
function lineOf(i: number): string {
  const pad = i % 7 === 0 ? 'é✓'.repeat(40 + (i % 50)) : 'x'.repeat(20 + ((i * 37) % 400));
  return `${JSON.stringify({ i, msg: 'command completed', pad })}\n`;
}

describe('log destination: measured appends', () => {
  test('the installed sonic-boom is one it knows (else the hub would log through the quadratic write)', () => {
    const { boom } = destination('known.log');
    assert.equal(measuredAppends(boom), true);
    (boom as unknown as { destroy(): void }).destroy();
  });

  test('a destination in buffer mode is left as it is', () => {
    const file = path.join(dir, 'buffer-mode.log');
    const boom = pino.destination({ dest: file, sync: false, contentMode: 'buffer' } as never) as unknown as Boom & {
      write: unknown;
      destroy(): void;
    };
    const before = boom.write;
    assert.equal(measuredAppends(boom), false);
    assert.equal(boom.write, before);
    boom.destroy();
  });

  test('every line arrives, whole and in order, across bursts, chunk limits and writes taking chunks', async () => {
    const { boom, file } = destination('order.log');
    assert.equal(measuredAppends(boom), true);
    await ready(boom);
    const expected: string[] = [];
    let i = 0;
    for (let burst = 0; burst < 60; burst++) {
      // bursts of 1 to 180 lines: within a chunk, and larger than one (16 KB) while a write is in flight
      const n = 1 + ((burst * 53) % 180);
      for (let k = 0; k < n; k++) {
        const line = lineOf(i++);
        expected.push(line);
        boom.write(line);
      }
      // now and then long enough for writes to finish and take chunks off the list (and the one
      // being appended to): the next write starts a chunk or re-measures
      if (burst % 5 === 4) await new Promise((r) => setTimeout(r, 5));
      else await new Promise((r) => setImmediate(r));
    }
    await closed(boom);
    assert.equal(fs.readFileSync(file, 'utf8'), expected.join(''));
  });

  test('the chunk being appended to is never measured again: only each new line is', async () => {
    const { boom } = destination('measure.log');
    assert.equal(measuredAppends(boom), true);
    await ready(boom);
    const original = Buffer.byteLength;
    let longest = 0;
    let calls = 0;
    // biome-ignore lint/suspicious/noExplicitAny: a spy on the global the quadratic path went through
    (Buffer as any).byteLength = (s: string | ArrayBufferView, enc?: BufferEncoding) => {
      calls++;
      if (typeof s === 'string') longest = Math.max(longest, s.length);
      return original(s as string, enc);
    };
    let maxLine = 0;
    try {
      // one write goes out, the rest of the burst queues behind it in one chunk
      for (let k = 0; k < 400; k++) {
        const line = lineOf(k);
        maxLine = Math.max(maxLine, line.length);
        boom.write(line);
      }
    } finally {
      Buffer.byteLength = original;
    }
    assert.ok(calls >= 400, `every line measured once (${calls})`);
    // as shipped, sonic-boom measured the queued chunk on every line: up to 16 KB a call
    assert.ok(longest <= maxLine, `longest string measured ${longest}, longest line ${maxLine}`);
    await closed(boom);
  });

  test('maxLength still drops what would not fit, and says so', async () => {
    const { boom, file } = destination('drop.log', { maxLength: 4096 });
    assert.equal(measuredAppends(boom), true);
    await ready(boom);
    const dropped: unknown[] = [];
    boom.on('drop', (d) => dropped.push(d));
    let written = '';
    for (let k = 0; k < 200; k++) {
      const line = lineOf(k);
      const before = dropped.length;
      boom.write(line);
      if (dropped.length === before) written += line;
    }
    assert.ok(dropped.length > 0, 'a burst past maxLength drops lines');
    await closed(boom);
    assert.equal(fs.readFileSync(file, 'utf8'), written);
  });
});
