import pino from 'pino';

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
 * pino's asynchronous destination on a file descriptor (stdout by default), flushed at exit as
 * pino's own default is, with `measuredAppends`.
 */
export function logDestination(fd: number = process.stdout.fd ?? 1): pino.DestinationStream {
  const dest = pino.destination({ dest: fd, minLength: 0, sync: false });
  measuredAppends(dest);
  return dest;
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
