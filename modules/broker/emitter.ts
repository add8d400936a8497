/**
 * The message router aedes delivers through (`mq`), with a bound on the work under way.
 *
 * Why not mqemitter's own `concurrency`: past its limit mqemitter queues without bound, and when
 * a queued message completes synchronously (no subscriber, or one that calls back at once) its
 * `released → _do → released …` chain recurses once per queued message. Under a flood that is
 * the "Maximum call stack size exceeded" crash (docs/architecture.md#performance-decisions; moscajs/aedes#193,
 * mcollina/mqemitter#204). So aedes' mqemitter runs with concurrency 0 (no internal queue) and
 * this gate does the bounding:
 * - below `maxInflight` deliveries under way a message goes straight through;
 * - above it the message waits in a FIFO that is pumped from `setImmediate`, never recursively.
 *   The publisher's aedes client reads no further packets until its publishes complete, so a
 *   waiting message slows its own publisher (TCP backpressure) and nobody else;
 * - when `maxWaiting` messages already wait, a QoS 0 client publish is shed (counted): QoS 0
 *   promises nothing, and this is what keeps memory bounded under a flood from many clients.
 *   QoS 1/2 (already acknowledged by aedes before routing) and the broker's own `$SYS` messages
 *   always wait: what waits is bounded anyway by clients × one socket read each;
 * - messages on SINK_TOPIC (publishes the broker has refused) are dropped here, before routing.
 */

/** A subscriber callback as aedes registers it. */
// biome-ignore lint/suspicious/noExplicitAny: aedes passes its own packet class; the gate never reads it
type Notify = (packet: any, cb: () => void) => void;

/** The slice of mqemitter that aedes uses. */
export interface MqLike {
  on(topic: string, notify: Notify, done?: () => void): unknown;
  removeListener(topic: string, notify: Notify, done?: () => void): unknown;
  emit(packet: RoutedPacket, cb?: (err?: Error | null) => void): unknown;
  close(cb: () => void): unknown;
}

export interface RoutedPacket {
  topic: string;
  qos?: number;
}

/**
 * Where refused publishes are redirected (authorizePublish rewrites the topic): under `$SYS/`, so
 * no `#` subscription and no offline queue can match it, and dropped by the gate before routing.
 */
export const SINK_TOPIC = '$SYS/gmq-hub/refused';

type Cb = (err?: Error | null) => void;
const noop: Cb = () => undefined;

export class BoundedEmitter implements MqLike {
  inflight = 0;
  /** QoS 0 client publishes dropped because `maxWaiting` messages were already waiting. */
  shed = 0;
  /** refused publishes dropped at the sink */
  sunk = 0;
  private readonly waiting: Array<[RoutedPacket, Cb]> = [];
  private waitHead = 0;
  private pumpScheduled = false;
  private closed = false;

  constructor(
    private readonly inner: MqLike,
    private readonly maxInflight: number,
    private readonly maxWaiting: number,
  ) {}

  get waitingCount(): number {
    return this.waiting.length - this.waitHead;
  }

  on(topic: string, notify: Notify, done?: () => void): this {
    this.inner.on(topic, notify, done);
    return this;
  }

  removeListener(topic: string, notify: Notify, done?: () => void): this {
    this.inner.removeListener(topic, notify, done);
    return this;
  }

  emit(packet: RoutedPacket, cb: Cb = noop): this {
    if (this.closed) {
      cb(new Error('mq is closed'));
      return this;
    }
    if (packet.topic === SINK_TOPIC) {
      this.sunk++;
      // asynchronously: a synchronous callback would let aedes parse the publisher's next read
      // inside this call, which recurses as deep as the socket buffer is long
      setImmediate(cb);
      return this;
    }
    const waiting = this.waitingCount;
    if (this.inflight < this.maxInflight && waiting === 0) {
      this.run(packet, cb);
    } else if (waiting >= this.maxWaiting && !packet.qos && !packet.topic.startsWith('$SYS/')) {
      this.shed++;
      setImmediate(cb);
    } else {
      this.waiting.push([packet, cb]);
      this.schedulePump();
    }
    return this;
  }

  close(cb: () => void): this {
    this.closed = true;
    // whoever still waits is told, so no aedes publish chain is left hanging
    const rest = this.waiting.splice(this.waitHead);
    this.waiting.length = 0;
    this.waitHead = 0;
    for (const [, done] of rest) done(new Error('mq is closed'));
    this.inner.close(cb);
    return this;
  }

  private run(packet: RoutedPacket, cb: Cb): void {
    this.inflight++;
    this.inner.emit(packet, (err) => {
      this.inflight--;
      if (this.waitingCount > 0) this.schedulePump();
      cb(err);
    });
  }

  private schedulePump(): void {
    if (this.pumpScheduled) return;
    this.pumpScheduled = true;
    setImmediate(() => {
      this.pumpScheduled = false;
      this.pump();
    });
  }

  private pump(): void {
    while (!this.closed && this.inflight < this.maxInflight && this.waitHead < this.waiting.length) {
      const [packet, cb] = this.waiting[this.waitHead++];
      this.run(packet, cb);
    }
    if (this.waitHead === this.waiting.length) {
      this.waiting.length = 0;
      this.waitHead = 0;
    } else if (this.waitHead > 1024 && this.waitHead * 2 > this.waiting.length) {
      this.waiting.splice(0, this.waitHead);
      this.waitHead = 0;
    }
  }
}
