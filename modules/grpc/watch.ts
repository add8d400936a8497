import { Metadata, type ServerWritableStream } from '@grpc/grpc-js';
import { HubError } from '../../core/errors.js';
import type { Logger } from '../../core/log.js';
import type { EventFeed, FeedEvent, FeedFilter } from '../shared/interface-kit/event-feed.js';
import { feedEvent, type ResyncEvent } from './convert.js';
import { toServiceError } from './errors.js';

type Encode = (msg: Record<string, unknown>) => Buffer;

/**
 * One WatchEvents stream. Events go to `call.write()` while it accepts them; once it returns
 * false (the client or the network is slower than the feed) they wait in a queue until 'drain'.
 * More than `max` waiting live events and the stream is ended with RESOURCE_EXHAUSTED, so one slow
 * client costs bounded memory and never slows the feed or the other streams. The replay of a
 * resume is read from the feed's buffer as the stream drains and does not count against `max`.
 */
export class EventStream {
  private backlog: readonly FeedEvent[] = [];
  private backlogAt = 0;
  private queue: FeedEvent[] = [];
  private writable = true;
  private closed = false;
  private readonly onDrain = () => {
    this.writable = true;
    this.pump();
  };

  constructor(
    private readonly call: ServerWritableStream<unknown, unknown>,
    private readonly encode: (ev: FeedEvent) => Buffer,
    private readonly max: number,
    private readonly onClose: (why: 'slow' | 'client' | 'stop' | 'revoked') => void,
  ) {
    call.on('drain', this.onDrain);
    call.on('cancelled', () => this.close('client'));
    call.on('error', () => this.close('client'));
  }

  get isClosed(): boolean {
    return this.closed;
  }

  /** Events to send before the live ones (a resume); they stay in the feed's buffer until written. */
  replay(events: readonly FeedEvent[]): void {
    this.backlog = events;
    this.backlogAt = 0;
    this.pump();
  }

  /** Sends one ready-made message first (the `resync` notice). */
  sendNow(buf: Buffer): void {
    if (!this.closed) this.writable = this.call.write(buf) && this.writable;
  }

  /** The feed's `deliver`: false tells the feed to forget this watcher. */
  offer(ev: FeedEvent): boolean {
    if (this.closed) return false;
    if (this.writable && this.queue.length === 0 && this.backlogAt >= this.backlog.length) {
      this.writable = this.call.write(this.encode(ev));
      return true;
    }
    this.queue.push(ev);
    if (this.queue.length > this.max) {
      this.end(
        new HubError(
          'GRPC_ERR_SLOW_STREAM',
          `stream did not keep up: more than ${this.max} events waiting; reconnect and resume from the last event id`,
        ),
        'slow',
      );
      return false;
    }
    return true;
  }

  private pump(): void {
    while (this.writable && !this.closed) {
      let ev: FeedEvent | undefined;
      if (this.backlogAt < this.backlog.length) ev = this.backlog[this.backlogAt++];
      else if (this.queue.length > 0) ev = this.queue.shift();
      else break;
      this.writable = this.call.write(this.encode(ev!));
    }
    if (this.backlogAt >= this.backlog.length && this.backlog.length > 0) this.backlog = [];
  }

  /**
   * Ends the stream with a status. Messages already handed to call.write() are delivered first
   * (the status follows them on the HTTP/2 stream), so a client that resumes reading sees them,
   * then the error; the stop path's forceShutdown cuts a client that never reads again.
   */
  end(err: HubError, why: 'slow' | 'stop' | 'revoked'): void {
    if (this.closed) return;
    this.close(why);
    this.call.emit('error', toServiceError(err));
  }

  private close(why: 'slow' | 'client' | 'stop' | 'revoked'): void {
    if (this.closed) return;
    this.closed = true;
    this.queue = [];
    this.backlog = [];
    this.call.off('drain', this.onDrain);
    this.onClose(why);
  }
}

/**
 * Starts a stream on `feed`: the resume check, the watcher registration and the initial metadata
 * happen in one synchronous step, so no event can fall between the replay and the live events.
 */
export function startWatch(
  call: ServerWritableStream<unknown, unknown>,
  feed: EventFeed,
  filter: FeedFilter,
  resume: { epoch: string; lastId: number } | null,
  opts: { max: number; encode: Encode; cache: WeakMap<FeedEvent, Buffer>; log: Logger; onClose: (why: string) => void },
): EventStream {
  const encode = (ev: FeedEvent): Buffer => {
    // encoded once per event and shared by every stream it reaches
    let buf = opts.cache.get(ev);
    if (!buf) {
      buf = opts.encode(feedEvent(ev, feed.epoch));
      opts.cache.set(ev, buf);
    }
    return buf;
  };
  let off: () => unknown = () => undefined;
  const stream = new EventStream(call, encode, opts.max, (why) => {
    off();
    opts.onClose(why);
  });
  const res = resume ? feed.since(resume.epoch, resume.lastId, filter) : null;
  off = feed.watch({ filter, deliver: (ev) => stream.offer(ev) });
  const md = new Metadata();
  md.set('feed-epoch', feed.epoch);
  md.set('feed-last-id', String(feed.lastId));
  call.sendMetadata(md);
  if (res && !res.ok) {
    const resync: ResyncEvent = {
      id: feed.lastId,
      type: 'resync',
      project_id: '',
      at: Date.now(),
      data: { reason: res.reason, oldest: res.oldest },
    };
    opts.log.debug({ reason: res.reason, last_event_id: resume?.lastId }, 'WatchEvents cannot resume; sent resync');
    stream.sendNow(opts.encode(feedEvent(resync, feed.epoch)));
  } else if (res?.ok) {
    stream.replay(res.events);
  }
  return stream;
}
