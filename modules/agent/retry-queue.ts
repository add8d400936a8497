/**
 * The agent's uplink retry queue (seed 004 `RetryQueue`: memory plus disk). Every uplink that
 * must reach the hub (command_ack, log_result, exec_result …) goes through it; heartbeats and the
 * registration handshake do not (they are periodic or redone on every connect).
 *
 * - Connected and nothing waiting: the message is published at once (QoS 1, PUBACK awaited).
 * - Otherwise it waits in memory (`memory_max`), then spills to disk (`disk_max` files, one JSON
 *   file per message, written to a temp name and renamed so a file that exists is complete).
 *   While anything waits on disk new messages go to disk too, so the order stays FIFO.
 * - Entries older than `ttl_ms` are dropped as expired; an entry whose publish failed
 *   `max_retries` times is dropped; both are counted.
 * - While there is no connection, whatever waits in memory has a copy on disk too (written when
 *   it is queued, or when the connection goes): a process killed during an outage (SIGKILL, OOM,
 *   power) loses no result. Connected, memory is the fast path for acks and log chunks; a
 *   command's result (`durable`) gets its disk copy before it is sent even then, since the command
 *   is known done from then on and never run again: a process killed before the broker's PUBACK
 *   would otherwise lose it for good (the next one answered the hub's re-asks with an ack only).
 * - On stop the memory part is written to disk; a new process loads the folder at start.
 *
 * Entries hold the data type and payload, not a signed message: the message is built and signed
 * when it is published, so its timestamp passes the hub's ±300 s clock window even after a day on
 * disk (docs/wire-protocol.md#timestamps-and-the-clock-window). The message_id stays the same across attempts, so the hub's replay cache drops
 * a copy that did arrive before its PUBACK got lost.
 */
import { randomBytes, randomUUID } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { errorCode } from '../../core/errors.js';
import type { Logger } from '../../core/log.js';
import type { ModuleTimers } from '../../core/module.js';
import type { AgentStats } from './contract/topics.js';

export interface QueuedUplink {
  /** Sortable: `{created_at:15}-{seq:10}-{random}`; also the file name on disk. */
  key: string;
  message_id: string;
  data_type: string;
  payload: unknown;
  created_at: number;
  attempts: number;
  /** Set while a copy lives on disk (spilled, or loaded from disk and not yet sent). */
  file?: string;
}

/** Publishes one entry; resolves on the broker's PUBACK, rejects when it could not. */
export type UplinkSender = (entry: QueuedUplink) => Promise<void>;

export interface RetryQueueOptions {
  dir: string;
  memoryMax: number;
  diskMax: number;
  ttlMs: number;
  maxRetries: number;
  window: number;
  retryDelayMs: number;
  log: Logger;
  timers: ModuleTimers;
  now?: () => number;
}

/** The queue's part of the agent's stats (`agent/stats`). */
export type RetryQueueStats = Pick<
  AgentStats,
  'queue_memory' | 'queue_disk' | 'sent' | 'retried' | 'expired' | 'dropped'
>;

const LOAD_BATCH = 100;
const SUFFIX = '.json';

export class RetryQueue {
  private readonly o: RetryQueueOptions;
  private readonly now: () => number;
  private memory: QueuedUplink[] = [];
  /** File names on disk not loaded into memory yet, oldest first. */
  private disk: string[] = [];
  private diskHead = 0;
  private inflight = 0;
  private sender: UplinkSender | null = null;
  private pumping: Promise<void> | null = null;
  private retryTimer: NodeJS.Timeout | null = null;
  private closed = false;
  private persisted = false;
  private seq = 0;
  private readonly salt = randomBytes(3).toString('hex');
  private lastFullWarn = 0;
  private readonly c = { sent: 0, retried: 0, expired: 0, dropped: 0 };

  constructor(opts: RetryQueueOptions) {
    this.o = opts;
    this.now = opts.now ?? Date.now;
  }

  /** Creates the folder, removes half-written files and indexes what a previous run left. */
  load(): number {
    fs.mkdirSync(this.o.dir, { recursive: true });
    const names: string[] = [];
    for (const name of fs.readdirSync(this.o.dir)) {
      if (name.endsWith(SUFFIX) && !name.startsWith('.')) names.push(name);
      else if (name.endsWith('.tmp')) this.unlink(name);
    }
    names.sort();
    this.disk = names;
    this.diskHead = 0;
    this.sweep();
    return this.diskCount;
  }

  get diskCount(): number {
    return this.disk.length - this.diskHead;
  }

  /**
   * Queues one uplink data message; never throws (a full queue drops and counts it).
   * `durable`: on disk before it is sent, connected or not (the file comment says why).
   */
  enqueue(dataType: string, payload: unknown, durable = false): void {
    const created = this.now();
    const e: QueuedUplink = {
      key: `${String(created).padStart(15, '0')}-${String(this.seq++).padStart(10, '0')}-${this.salt}`,
      message_id: randomUUID(),
      data_type: dataType,
      payload,
      created_at: created,
      attempts: 0,
    };
    if (!this.persisted && this.diskCount === 0 && this.memory.length < this.o.memoryMax) {
      // a disk copy now when there is no connection (it may wait a long time) or the entry must
      // outlive a crash before its PUBACK (`durable`); it is unlinked once sent
      if (!this.sender || durable) this.write(e);
      this.memory.push(e);
    } else if (this.diskCount < this.o.diskMax) {
      if (this.write(e)) this.disk.push(e.file!);
      else this.c.dropped++;
    } else {
      this.c.dropped++;
      const t = this.now();
      if (t - this.lastFullWarn > 10_000) {
        this.lastFullWarn = t;
        this.o.log.warn(
          { memory_max: this.o.memoryMax, disk_max: this.o.diskMax, data_type: dataType },
          'uplink queue full: message dropped',
        );
      }
    }
    this.kick();
  }

  /** The connection is up: drain in order through `send`. */
  online(send: UplinkSender): void {
    if (this.closed) return;
    this.sender = send;
    this.kick();
  }

  offline(): void {
    this.sender = null;
    this.clearRetry();
    // what waits from now on waits for a new connection, maybe long: secure it on disk
    this.secure(this.memory);
  }

  /**
   * While online, keeps draining until nothing waits or `ms` has passed (a graceful stop gives the
   * queue this chance before the connection ends). Returns early after a refused publish.
   */
  async settle(ms: number): Promise<void> {
    const end = this.now() + ms;
    while (this.sender && !this.closed && this.retryTimer === null && this.memory.length + this.diskCount > 0) {
      const left = end - this.now();
      if (left <= 0) return;
      this.kick();
      const pumping = this.pumping;
      if (!pumping) return;
      let timer: NodeJS.Timeout | undefined;
      await Promise.race([pumping, new Promise<void>((r) => (timer = setTimeout(r, left)))]);
      clearTimeout(timer);
    }
    if (this.pumping && this.retryTimer === null) {
      let timer: NodeJS.Timeout | undefined;
      const left = Math.max(0, end - this.now());
      await Promise.race([this.pumping, new Promise<void>((r) => (timer = setTimeout(r, left)))]);
      clearTimeout(timer);
    }
  }

  /** Stops draining and resolves when the batch in flight has settled (failures back in memory). */
  async close(): Promise<void> {
    this.closed = true;
    this.sender = null;
    this.clearRetry();
    await this.pumping;
  }

  /** Writes what waits in memory to disk (on stop), so the next process sends it. Returns how many are there. */
  persist(): number {
    this.persisted = true;
    let n = 0;
    for (const e of this.memory) {
      if (e.file !== undefined || this.write(e)) n++;
      else this.c.dropped++;
    }
    this.memory = [];
    return n;
  }

  /** Drops expired entries from memory and from the front of the disk index. */
  sweep(): void {
    const limit = this.now() - this.o.ttlMs;
    if (this.memory.some((e) => e.created_at < limit)) {
      this.memory = this.memory.filter((e) => {
        if (e.created_at >= limit) return true;
        this.expire(e);
        return false;
      });
    }
    while (this.diskHead < this.disk.length) {
      const name = this.disk[this.diskHead];
      if (createdFromName(name) >= limit) break;
      this.diskHead++;
      this.c.expired++;
      this.unlink(name);
    }
    this.compactDisk();
  }

  stats(): RetryQueueStats {
    return { queue_memory: this.memory.length + this.inflight, queue_disk: this.diskCount, ...this.c };
  }

  /** A method, not a field read: the connection may have gone during an await. */
  private isOnline(): boolean {
    return this.sender !== null && !this.closed;
  }

  private kick(): void {
    if (this.pumping || !this.sender || this.closed) return;
    if (this.memory.length === 0 && this.diskCount === 0) return;
    this.pumping = this.pump().finally(() => {
      this.pumping = null;
      // An entry queued after the pump's last take() found it still running and did not start
      // another: look again, or it would wait for the next enqueue (a paused retry resumes by timer).
      if (this.retryTimer === null) this.kick();
    });
  }

  private async pump(): Promise<void> {
    while (this.sender && !this.closed) {
      const send = this.sender;
      const batch = this.take(this.o.window);
      if (batch.length === 0) return;
      this.inflight = batch.length;
      const results = await Promise.allSettled(batch.map((e) => send(e)));
      this.inflight = 0;
      const failed: QueuedUplink[] = [];
      results.forEach((r, i) => {
        const e = batch[i];
        if (r.status === 'fulfilled') {
          this.c.sent++;
          if (e.file !== undefined) this.unlink(e.file);
          return;
        }
        e.attempts++;
        // a message that cannot be built (PROTO_ERR_*) will not get better by trying again
        const permanent = errorCode(r.reason)?.startsWith('PROTO_ERR') ?? false;
        if (permanent || e.attempts >= this.o.maxRetries) {
          this.c.dropped++;
          if (e.file !== undefined) this.unlink(e.file);
          this.o.log.warn(
            { data_type: e.data_type, message_id: e.message_id, attempts: e.attempts, err: String(r.reason) },
            permanent ? 'uplink dropped: it cannot be built' : 'uplink dropped after max_retries attempts',
          );
          return;
        }
        failed.push(e);
      });
      if (failed.length > 0) {
        this.c.retried += failed.length;
        this.memory.unshift(...failed);
        // Still "online" means the broker refused this publish on a live connection: pause, then
        // try again. Otherwise the next connect calls online() and the drain resumes from here,
        // and until then the entries that were in flight are kept on disk like the rest.
        if (this.isOnline()) this.scheduleRetry();
        else this.secure(failed);
        return;
      }
    }
  }

  /** Up to `n` live entries, oldest first, refilling memory from disk as it empties. */
  private take(n: number): QueuedUplink[] {
    const out: QueuedUplink[] = [];
    const limit = this.now() - this.o.ttlMs;
    while (out.length < n) {
      if (this.memory.length === 0 && !this.refill()) break;
      const e = this.memory.shift()!;
      if (e.created_at < limit) {
        this.expire(e);
        continue;
      }
      out.push(e);
    }
    return out;
  }

  private refill(): boolean {
    let loaded = 0;
    while (loaded < LOAD_BATCH && this.diskHead < this.disk.length) {
      const name = this.disk[this.diskHead++];
      const e = this.read(name);
      if (e) {
        this.memory.push(e);
        loaded++;
      }
    }
    this.compactDisk();
    return loaded > 0;
  }

  /** Gives every entry of `list` without one a disk copy (it stays in memory, in its place). */
  private secure(list: QueuedUplink[]): void {
    for (const e of list) if (e.file === undefined) this.write(e);
  }

  private expire(e: QueuedUplink): void {
    this.c.expired++;
    if (e.file !== undefined) this.unlink(e.file);
  }

  private write(e: QueuedUplink): boolean {
    const name = `${e.key}${SUFFIX}`;
    const tmp = `.${e.key}.tmp`;
    const record = {
      v: 1,
      key: e.key,
      message_id: e.message_id,
      data_type: e.data_type,
      payload: e.payload,
      created_at: e.created_at,
      attempts: e.attempts,
    };
    try {
      // temp file + rename: a file under its final name is always complete
      fs.writeFileSync(path.join(this.o.dir, tmp), JSON.stringify(record));
      fs.renameSync(path.join(this.o.dir, tmp), path.join(this.o.dir, name));
      e.file = name;
      return true;
    } catch (err) {
      this.o.log.error({ err, dir: this.o.dir, data_type: e.data_type }, 'could not write an uplink to the disk queue');
      this.unlink(tmp);
      return false;
    }
  }

  private read(name: string): QueuedUplink | null {
    try {
      const r = JSON.parse(fs.readFileSync(path.join(this.o.dir, name), 'utf8')) as Partial<QueuedUplink>;
      if (
        typeof r.message_id !== 'string' ||
        typeof r.data_type !== 'string' ||
        typeof r.created_at !== 'number' ||
        !('payload' in r)
      ) {
        throw new Error('not a queued uplink');
      }
      return {
        key: name.slice(0, -SUFFIX.length),
        message_id: r.message_id,
        data_type: r.data_type,
        payload: r.payload,
        created_at: r.created_at,
        attempts: typeof r.attempts === 'number' ? r.attempts : 0,
        file: name,
      };
    } catch (err) {
      this.c.dropped++;
      this.o.log.warn({ file: name, err: (err as Error).message }, 'unreadable disk queue entry dropped');
      this.unlink(name);
      return null;
    }
  }

  private unlink(name: string): void {
    try {
      fs.unlinkSync(path.join(this.o.dir, name));
    } catch {
      // already gone
    }
  }

  private compactDisk(): void {
    if (this.diskHead > 1024 && this.diskHead * 2 > this.disk.length) {
      this.disk = this.disk.slice(this.diskHead);
      this.diskHead = 0;
    }
  }

  private scheduleRetry(): void {
    if (this.retryTimer) return;
    this.retryTimer = this.o.timers.setTimeout(() => {
      this.retryTimer = null;
      this.kick();
    }, this.o.retryDelayMs);
  }

  private clearRetry(): void {
    if (this.retryTimer) this.o.timers.clear(this.retryTimer);
    this.retryTimer = null;
  }
}

function createdFromName(name: string): number {
  const n = Number(name.slice(0, 15));
  return Number.isFinite(n) ? n : 0;
}
