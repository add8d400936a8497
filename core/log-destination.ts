import fs from 'node:fs';
import pino from 'pino';
import { HubError } from './errors.js';

/** The parts of a sonic-boom (pino's destination) that its string `write` and the held-line writers work with. */
interface Boom {
  write(data: string): boolean;
  emit(event: string, data: unknown): boolean;
  once(event: string, fn: () => void): unknown;
  flush(): void;
  flushSync(): void;
  destroyed: boolean;
  maxLength: number;
  maxWrite: number;
  minLength: number;
  _bufs: unknown[];
  _len: number;
  _hwm: number;
  _writing: boolean;
  _actualWrite(): void;
}

/**
 * Bytes of log lines gathered before they are handed to a write (sonic-boom's `minLength`) when
 * `LOG_FLUSH_MS` asks for batches. One asynchronous write is a request to libuv's thread pool:
 * the event loop wakes a pool thread, which on a machine with few cores takes the CPU from the
 * loop, and the loop is woken again when the write is done. Line by line, a quiet hub's three
 * info lines per command cost the loop about 0.12 ms each of wall time in `fs.write` (docs/benchmarks.md
 * "Log lines in batches, when asked").
 */
const LOG_BATCH_BYTES = 8192;

/**
 * `LOG_FLUSH_MS`: 0 (the default) writes each line at once, as pino's own destination does (a
 * regular file's lines at the end of their turn: `turnWrites`); a positive value gathers lines
 * until `LOG_BATCH_BYTES` or for at most that many ms. Off by default: a SIGKILL (the kernel's OOM killer sends one) loses what is gathered, and the lines
 * just before a crash are the ones an operator needs. Throws on a value that is not a whole
 * number of ms up to 10 000 (HOST_ERR_CONFIG_ENV), as pino does on an unknown LOG_LEVEL.
 */
export function logFlushMs(env: NodeJS.ProcessEnv = process.env): number {
  const raw = env.LOG_FLUSH_MS?.trim();
  if (raw === undefined || raw === '') return 0;
  const ms = Number(raw);
  if (!Number.isInteger(ms) || ms < 0 || ms > 10_000)
    throw new HubError(
      'HOST_ERR_CONFIG_ENV',
      `LOG_FLUSH_MS must be a whole number of ms from 0 to 10000, not ${JSON.stringify(raw)}`,
      { path: 'LOG_FLUSH_MS' },
    );
  return ms;
}

/**
 * The hub's destination on a file descriptor (stdout by default), with `measuredAppends`:
 * - `flushMs` > 0: asynchronous, in batches of `LOG_BATCH_BYTES` or every `flushMs`, whichever
 *   comes first;
 * - else, on a regular file: each turn's lines in one synchronous write (`turnWrites`);
 * - else (a pipe, a socket: a collector that may fall behind), asynchronous, each line at once.
 * Whatever is held is written synchronously at exit (process.exit, an uncaught exception, the end
 * of a graceful stop): by pino for the asynchronous ones, by `turnWrites` for a file.
 */
export function logDestination(opts: { fd?: number; flushMs?: number } = {}): pino.DestinationStream {
  const { fd = process.stdout.fd ?? 1, flushMs = 0 } = opts;
  const batched = flushMs > 0;
  if (!batched && isRegularFile(fd)) {
    const dest = pino.destination({ dest: fd, minLength: LOG_BATCH_BYTES, sync: true });
    // turnWrites works on the fields measuredAppends knows; a sonic-boom without them would hold
    // lines until a batch filled, so such a one writes asynchronously below
    if (measuredAppends(dest)) {
      turnWrites(dest);
      return dest;
    }
  }
  const dest = pino.destination({ dest: fd, minLength: batched ? LOG_BATCH_BYTES : 0, sync: false });
  measuredAppends(dest);
  if (batched) flushWhileHeld(dest, flushMs);
  return dest;
}

/** Whether `fd` is a regular file (not a pipe, a socket or a terminal). */
function isRegularFile(fd: number): boolean {
  try {
    return fs.fstatSync(fd).isFile();
  } catch {
    return false;
  }
}

/** File destinations holding lines until their turn ends (`turnWrites`), written at exit. */
const heldAtExit = new Set<Boom>();
let exitHooked = false;

/**
 * Makes a synchronous destination whose `minLength` holds lines write them when the turn of the
 * event loop that logged them ends (setImmediate), in one `write(2)` on the loop's thread, or at
 * once when a turn's lines reach `minLength`.
 *
 * Why, for a regular file: an asynchronous write is a request to libuv's thread pool. The loop
 * wakes a pool thread (a futex), the thread writes and signals back (an eventfd), and the loop
 * wakes again to read that: five system calls, two thread switches and a wake-up of the loop
 * for each line on a quiet hub, which logs three lines a command. A write to a file's page cache
 * does not block on a reader, so one call on the loop's thread costs less than the hand-off. A
 * pipe or a socket can stay full while its reader falls behind, and a synchronous write would
 * then stall the loop, so those stay asynchronous (`logDestination`). A SIGKILL loses at most the
 * lines of the turn it interrupts; an asynchronous destination loses the write in flight and
 * everything queued behind it.
 */
function turnWrites(dest: pino.DestinationStream): void {
  const boom = dest as unknown as Boom;
  const append = boom.write;
  let due = false;
  const writeHeld = (): void => {
    due = false;
    // one chunk a call (sonic-boom's chunks are `maxWrite` long); stop when a write took nothing
    // (an error sonic-boom has emitted) rather than spin on it
    for (let before = Number.POSITIVE_INFINITY; boom._len > 0 && boom._len < before; ) {
      if (boom.destroyed || boom._writing) return;
      before = boom._len;
      boom._actualWrite();
    }
  };
  boom.write = function write(this: Boom, data: string): boolean {
    const below = append.call(this, data);
    if (!due && this._len > 0) {
      due = true;
      setImmediate(writeHeld);
    }
    return below;
  };
  if (!exitHooked) {
    exitHooked = true;
    process.once('exit', writeAllHeld);
  }
  heldAtExit.add(boom);
  boom.once('close', () => heldAtExit.delete(boom));
}

/** At exit: what each file destination holds, written before the process ends. */
function writeAllHeld(): void {
  for (const boom of heldAtExit) {
    if (boom.destroyed || boom._len === 0) continue;
    try {
      boom.flushSync();
    } catch {
      // the process is ending; a destination that cannot be written has nothing more to give
    }
  }
}

/**
 * Writes what a destination holds below its `minLength` every `ms`, only when it holds some and
 * no write is under way (sonic-boom's own `periodicFlush` writes an empty string every period
 * when there is nothing: a pool request for nothing). The timer does not keep the process alive.
 */
function flushWhileHeld(dest: pino.DestinationStream, ms: number): void {
  const boom = dest as unknown as Boom;
  const timer = setInterval(() => {
    if (boom.destroyed || boom._writing || boom._len === 0) return;
    boom.flush();
  }, ms);
  timer.unref();
  boom.once('close', () => clearInterval(timer));
}

/**
 * Replaces sonic-boom's string `write` with one that keeps the byte length of the chunk it
 * appends to. sonic-boom's asks `Buffer.byteLength` of that chunk on every line; while a write is
 * in flight the chunk is a rope of every line since, and measuring it flattens it: a copy of up
 * to `maxWrite` (16 KB) per line, quadratic in a burst. In the hub under load that was 25 KB of
 * the 164 KB it allocated per async command, for about 1.2 KB of log text (docs/benchmarks.md "Log lines
 * without copying the buffer"). Everything else (when to write, the limits, 'drop', flush, exit)
 * is sonic-boom's, on the same fields.
 *
 * Returns false, leaving the destination as it was, when it is not one this knows (a version
 * of sonic-boom with other fields, or its buffer mode): a test checks the installed one is.
 */
export function measuredAppends(dest: pino.DestinationStream): boolean {
  const boom = dest as unknown as Boom;
  if (
    // sonic-boom's buffer mode writes through `writeBuffer`, with arrays of buffers as chunks
    boom.write?.name !== 'write' ||
    !Array.isArray(boom._bufs) ||
    typeof boom._len !== 'number' ||
    typeof boom._hwm !== 'number' ||
    typeof boom.maxWrite !== 'number' ||
    typeof boom._actualWrite !== 'function' ||
    boom._bufs.some((b) => typeof b !== 'string')
  ) {
    return false;
  }
  // the chunk this write last appended to (compared by identity: still the last one?) and its bytes
  let tail: string | null = null;
  let tailBytes = 0;
  boom.write = function write(this: Boom, input: string): boolean {
    if (this.destroyed) throw new Error('SonicBoom destroyed');
    const data = `${input}`;
    const dataLen = Buffer.byteLength(data);
    const len = this._len + dataLen;
    const bufs = this._bufs as string[];
    if (this.maxLength && len > this.maxLength) {
      this.emit('drop', data);
      return this._len < this._hwm;
    }
    const last = bufs.length - 1;
    if (last >= 0 && bufs[last] !== tail) {
      // sonic-boom changed its chunks (a write took one, flushSync put one back): measure once
      tail = bufs[last];
      tailBytes = Buffer.byteLength(tail);
    }
    if (last < 0 || tailBytes + dataLen > this.maxWrite) {
      bufs.push(data);
      tail = data;
      tailBytes = dataLen;
    } else {
      tail = `${bufs[last]}${data}`;
      bufs[last] = tail;
      tailBytes += dataLen;
    }
    this._len = len;
    if (!this._writing && this._len >= this.minLength) this._actualWrite();
    return this._len < this._hwm;
  };
  return true;
}
