import pino from 'pino';
import { HubError } from './errors.js';

/** The parts of a sonic-boom (pino's destination) that its string `write` works with. */
interface Boom {
  write(data: string): boolean;
  emit(event: string, data: unknown): boolean;
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
 * info lines per command cost the loop about 0.12 ms each of wall time in `fs.write` (README
 * "Log lines in batches, when asked").
 */
const LOG_BATCH_BYTES = 8192;

/**
 * `LOG_FLUSH_MS`: 0 (the default) writes each line at once, as pino's own destination does; a
 * positive value gathers lines until `LOG_BATCH_BYTES` or for at most that many ms. Off by
 * default: a SIGKILL (the kernel's OOM killer sends one) loses what is gathered, and the lines
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
 * pino's asynchronous destination on a file descriptor (stdout by default), with
 * `measuredAppends`; with `flushMs` > 0 it writes lines in batches of `LOG_BATCH_BYTES` or every
 * `flushMs`, whichever comes first. Either way pino writes what is held synchronously at exit
 * (process.exit, an uncaught exception, the end of a graceful stop).
 */
export function logDestination(opts: { fd?: number; flushMs?: number } = {}): pino.DestinationStream {
  const { fd = process.stdout.fd ?? 1, flushMs = 0 } = opts;
  const batched = flushMs > 0;
  const dest = pino.destination({ dest: fd, minLength: batched ? LOG_BATCH_BYTES : 0, sync: false });
  measuredAppends(dest);
  if (batched) flushWhileHeld(dest, flushMs);
  return dest;
}

/**
 * Writes what a destination holds below its `minLength` every `ms`, only when it holds some and
 * no write is under way (sonic-boom's own `periodicFlush` writes an empty string every period
 * when there is nothing: a pool request for nothing). The timer does not keep the process alive.
 */
function flushWhileHeld(dest: pino.DestinationStream, ms: number): void {
  const boom = dest as unknown as Boom & { flush(): void; once(event: string, fn: () => void): void };
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
 * the 164 KB it allocated per async command, for about 1.2 KB of log text (README "Log lines
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
