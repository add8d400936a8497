/**
 * The hub's log destination (core/log-destination.ts): pino's asynchronous sonic-boom with a
 * `write` that keeps the byte length of the chunk it appends to. sonic-boom's own measured that
 * chunk on every line, and while a write is in flight it is a rope of every line since, so each
 * line flattened (copied) up to 16 KB: 25 KB of the 164 KB the hub allocated per async command.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import pino from 'pino';
import { logDestination, logFlushMs, measuredAppends } from '../../core/log-destination.js';

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

/**
 * A process that logs five lines with the root logger, then ends as `ending` says; the `i` of each
 * line that reached its stdout (a pipe, or the file `out` when given), in order.
 */
function heldLinesAtExit(ending: string, env: Record<string, string>, out?: string): { seen: number[]; why: string } {
  const logModule = fileURLToPath(new URL('../../core/log.js', import.meta.url));
  const script = `import { createRootLogger } from ${JSON.stringify(logModule)};
    const log = createRootLogger({ name: 'exit-test' });
    for (let i = 0; i < 5; i++) log.info({ i }, 'held line');
    ${ending}`;
  const fd = out === undefined ? undefined : fs.openSync(out, 'w');
  try {
    const r = spawnSync(process.execPath, ['--input-type=module', '-e', script], {
      env: { ...process.env, LOG_FORMAT: 'json', LOG_LEVEL: 'info', ...env },
      stdio: ['ignore', fd ?? 'pipe', 'pipe'],
      encoding: 'utf8',
      timeout: 60_000,
    });
    assert.equal(r.error, undefined, `${r.error}`);
    const text = out === undefined ? r.stdout : fs.readFileSync(out, 'utf8');
    const seen = text
      .split('\n')
      .filter((l) => l.includes('held line'))
      .map((l) => (JSON.parse(l) as { i: number }).i);
    return { seen, why: `${text} ${r.stderr}` };
  } finally {
    if (fd !== undefined) fs.closeSync(fd);
  }
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

describe('log destination: lines in batches when LOG_FLUSH_MS asks', () => {
  test('LOG_FLUSH_MS: unset or empty is 0 (each line at once); a whole number of ms up to 10 000; anything else refused', () => {
    assert.equal(logFlushMs({}), 0);
    assert.equal(logFlushMs({ LOG_FLUSH_MS: ' ' }), 0);
    assert.equal(logFlushMs({ LOG_FLUSH_MS: '0' }), 0);
    assert.equal(logFlushMs({ LOG_FLUSH_MS: '100' }), 100);
    for (const bad of ['abc', '-1', '1.5', '10001', '1e3x'])
      assert.throws(() => logFlushMs({ LOG_FLUSH_MS: bad }), /LOG_FLUSH_MS must be a whole number of ms/, bad);
  });

  test('lines written one per turn go out a batch at a time, all of them, in order, within the flush period', async () => {
    const file = path.join(dir, 'batched.log');
    const fd = fs.openSync(file, 'w');
    const original = fs.write;
    let writes = 0;
    // biome-ignore lint/suspicious/noExplicitAny: a spy on the call each asynchronous write makes
    (fs as any).write = (...args: unknown[]) => {
      writes++;
      return (original as (...a: unknown[]) => void)(...args);
    };
    const expected: string[] = [];
    try {
      const boom = logDestination({ fd, flushMs: 50 }) as unknown as Boom;
      // a quiet hub: one line a turn, each of which used to be a write of its own
      for (let i = 0; i < 300; i++) {
        const line = lineOf(i);
        expected.push(line);
        boom.write(line);
        await new Promise((r) => setImmediate(r));
      }
      const bytes = Buffer.byteLength(expected.join(''));
      // the last lines are below a batch: the flush period writes them without another line
      const deadline = Date.now() + 30_000;
      while (fs.statSync(file).size < bytes && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
      assert.equal(fs.readFileSync(file, 'utf8'), expected.join(''));
      // one write per batch, plus what the flush period sent before a batch filled
      assert.ok(writes < 300 / 4, `${writes} writes for 300 lines (${bytes} bytes)`);
      await closed(boom);
    } finally {
      fs.write = original;
    }
  });

  test('a process logging in batches that exits (by itself, by process.exit, by an uncaught exception) writes what it held', () => {
    const endings: Record<string, string> = {
      'the loop runs empty (the flush timer does not hold the process)': '',
      'process.exit': 'process.exit(3);',
      'an uncaught exception': "setImmediate(() => { throw new Error('boom'); });",
    };
    for (const [how, ending] of Object.entries(endings)) {
      const { seen, why } = heldLinesAtExit(ending, { LOG_FLUSH_MS: '1000' });
      assert.deepEqual(seen, [0, 1, 2, 3, 4], `${how}: ${why}`);
    }
  });
});

describe('log destination: a regular file gets each turn of the event loop in one synchronous write', () => {
  /** Counts the writes each kind of call makes while `fn` runs. */
  async function counting<T>(fn: () => Promise<T>): Promise<{ sync: number; async: number; out: T }> {
    const original = { write: fs.write, writeSync: fs.writeSync };
    const n = { sync: 0, async: 0 };
    // biome-ignore lint/suspicious/noExplicitAny: spies on the calls sonic-boom makes
    (fs as any).write = (...args: unknown[]) => {
      n.async++;
      return (original.write as (...a: unknown[]) => void)(...args);
    };
    // biome-ignore lint/suspicious/noExplicitAny: as above
    (fs as any).writeSync = (...args: unknown[]) => {
      n.sync++;
      return (original.writeSync as (...a: unknown[]) => number)(...args);
    };
    try {
      const out = await fn();
      return { ...n, out };
    } finally {
      Object.assign(fs, original);
    }
  }

  test('lines of one turn leave together at its end, one write a turn, none on the thread pool, all in order', async () => {
    const file = path.join(dir, 'turns.log');
    const fd = fs.openSync(file, 'w');
    const expected: string[] = [];
    const { sync, async: pooled } = await counting(async () => {
      const boom = logDestination({ fd }) as unknown as Boom;
      for (let turn = 0; turn < 100; turn++) {
        // a quiet hub logs a line a turn; a busy one several
        const lines = 1 + (turn % 4);
        for (let k = 0; k < lines; k++) {
          const line = lineOf(expected.length);
          expected.push(line);
          boom.write(line);
        }
        assert.ok(fs.statSync(file).size < Buffer.byteLength(expected.join('')), 'held until the turn ends');
        await new Promise((r) => setImmediate(r));
        await new Promise((r) => setImmediate(r));
        // written by the time the next turn runs: no timer, no later batch
        assert.equal(fs.statSync(file).size, Buffer.byteLength(expected.join('')), `turn ${turn}`);
      }
      await closed(boom);
    });
    assert.equal(fs.readFileSync(file, 'utf8'), expected.join(''));
    assert.equal(pooled, 0, 'no asynchronous write');
    assert.equal(sync, 100, `one write a turn (${sync})`);
  });

  test('a turn logging more than a batch writes as it goes and keeps every line', async () => {
    const file = path.join(dir, 'big-turn.log');
    const fd = fs.openSync(file, 'w');
    const boom = logDestination({ fd }) as unknown as Boom;
    const expected: string[] = [];
    for (let k = 0; k < 400; k++) {
      const line = lineOf(k);
      expected.push(line);
      boom.write(line);
    }
    // about 90 KB in one turn: the batches past 8 KB went out before the turn ended
    assert.ok(fs.statSync(file).size > 8192, `${fs.statSync(file).size} bytes written during the turn`);
    await new Promise((r) => setImmediate(r));
    assert.equal(fs.readFileSync(file, 'utf8'), expected.join(''));
    await closed(boom);
  });

  test('a pipe stays asynchronous (a reader that falls behind must not stall the loop)', () => {
    const r = spawnSync(
      process.execPath,
      [
        '--input-type=module',
        '-e',
        `import { logDestination } from ${JSON.stringify(fileURLToPath(new URL('../../core/log-destination.js', import.meta.url)))};
         const d = logDestination({ fd: 1 }); process.stderr.write(String(d.sync));`,
      ],
      { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'], timeout: 60_000 },
    );
    assert.equal(r.stderr, 'false', r.stderr);
  });

  test('a process logging to a file that exits (by itself, by process.exit, by an uncaught exception) writes the turn it held', () => {
    const endings: Record<string, string> = {
      'the loop runs empty': '',
      'process.exit': 'process.exit(3);',
      'an uncaught exception': "throw new Error('boom');",
    };
    for (const [how, ending] of Object.entries(endings)) {
      // the lines and the ending in the same turn: nothing was written before the process ends
      const file = path.join(dir, `exit-${how.replace(/\W+/g, '-')}.log`);
      const { seen, why } = heldLinesAtExit(ending, { LOG_FLUSH_MS: '' }, file);
      assert.deepEqual(seen, [0, 1, 2, 3, 4], `${how}: ${why}`);
    }
  });
});
