/**
 * Buffered task logs (seed 004 `LogBuffer`): a handler's output for one command is gathered and
 * sent as `log_result` chunks {command_id, seq, content} when `flushBytes` have accumulated or
 * `flushMs` after the first unsent byte, whichever comes first. `seq` counts from 0 per command.
 */
import type { ModuleTimers } from '../../core/module.js';

export interface LogChunk {
  command_id: string;
  seq: number;
  content: string;
}

interface Buffer_ {
  seq: number;
  parts: string[];
  bytes: number;
  timer: NodeJS.Timeout | null;
}

/** The largest content of one chunk; a bigger burst is split (messages stay well under 256 KiB). */
export const MAX_CHUNK_BYTES = 64 * 1024;

export class LogBuffers {
  private readonly buffers = new Map<string, Buffer_>();
  private readonly flushBytes: number;
  private readonly flushMs: number;
  private readonly timers: ModuleTimers;
  private readonly emit: (chunk: LogChunk) => void;

  constructor(opts: { flushBytes: number; flushMs: number; timers: ModuleTimers; emit: (chunk: LogChunk) => void }) {
    this.flushBytes = opts.flushBytes;
    this.flushMs = opts.flushMs;
    this.timers = opts.timers;
    this.emit = opts.emit;
  }

  /** Adds output of a command. */
  append(commandId: string, content: string): void {
    if (content.length === 0) return;
    let b = this.buffers.get(commandId);
    if (!b) {
      b = { seq: 0, parts: [], bytes: 0, timer: null };
      this.buffers.set(commandId, b);
    }
    b.parts.push(content);
    b.bytes += Buffer.byteLength(content, 'utf8');
    if (b.bytes >= this.flushBytes) this.flushOne(commandId, b);
    else if (!b.timer) {
      const buf = b;
      b.timer = this.timers.setTimeout(() => {
        buf.timer = null;
        this.flushOne(commandId, buf);
      }, this.flushMs);
    }
  }

  /** Sends what is buffered for the command now; the seq counter stays for later output. */
  flush(commandId: string): void {
    const b = this.buffers.get(commandId);
    if (b) this.flushOne(commandId, b);
  }

  /** Flushes and forgets the command (its next chunk, if output still arrives, restarts at `seq`). */
  close(commandId: string): number {
    const b = this.buffers.get(commandId);
    if (!b) return 0;
    this.flushOne(commandId, b);
    this.buffers.delete(commandId);
    return b.seq;
  }

  /** Continues a closed command's sequence (late output after its result). */
  reopen(commandId: string, seq: number): void {
    if (!this.buffers.has(commandId)) this.buffers.set(commandId, { seq, parts: [], bytes: 0, timer: null });
  }

  /** Flushes everything (on stop). */
  flushAll(): void {
    for (const [id, b] of this.buffers) this.flushOne(id, b);
  }

  get size(): number {
    return this.buffers.size;
  }

  private flushOne(commandId: string, b: Buffer_): void {
    if (b.timer) {
      this.timers.clear(b.timer);
      b.timer = null;
    }
    if (b.parts.length === 0) return;
    const text = b.parts.join('');
    b.parts = [];
    b.bytes = 0;
    for (const piece of splitUtf8(text, MAX_CHUNK_BYTES)) {
      this.emit({ command_id: commandId, seq: b.seq++, content: piece });
    }
  }
}

/** Splits text into pieces of at most `maxBytes` UTF-8 bytes, never inside a character. */
export function splitUtf8(text: string, maxBytes: number): string[] {
  if (Buffer.byteLength(text, 'utf8') <= maxBytes) return [text];
  const out: string[] = [];
  let start = 0;
  let bytes = 0;
  for (let i = 0; i < text.length; ) {
    const cp = text.codePointAt(i)!;
    const units = cp > 0xffff ? 2 : 1;
    const size = cp < 0x80 ? 1 : cp < 0x800 ? 2 : cp < 0x10000 ? 3 : 4;
    if (bytes + size > maxBytes && i > start) {
      out.push(text.slice(start, i));
      start = i;
      bytes = 0;
    }
    bytes += size;
    i += units;
  }
  if (start < text.length) out.push(text.slice(start));
  return out;
}

/** The longest prefix of `text` within `maxBytes` UTF-8 bytes. */
export function capUtf8(text: string, maxBytes: number): { text: string; truncated: boolean } {
  if (text.length <= maxBytes / 3 || Buffer.byteLength(text, 'utf8') <= maxBytes) return { text, truncated: false };
  if (maxBytes <= 0) return { text: '', truncated: true };
  return { text: splitUtf8(text, maxBytes)[0] ?? '', truncated: true };
}
