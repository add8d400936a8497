/**
 * Deferred PUBACKs: an uplink that carries state is acknowledged to the broker only once its
 * owner wrote it (issue "durable before acknowledged"). Until then the broker keeps the message
 * in the hub's session: a hub killed, or a database down, before the write means the broker
 * delivers it again (to this session when it reconnects, or to another instance of a shared
 * subscription), never that it is gone.
 *
 * mqtt.js hands inbound PUBLISH packets to `handleMessage(packet, done)` one at a time and sends
 * the PUBACK inside `done`; waiting there for a database commit would let one uplink through per
 * commit and leave nothing to group. So `done` is called at once with a marker error: mqtt.js
 * then takes the next packet without acknowledging this one (handlers/publish.js passes the
 * error to its own `done`, which only schedules the next packet), and the gate writes the PUBACK
 * itself when the owner answers.
 *
 * PUBACKs go out in the order the PUBLISHes came in ([MQTT-4.6.0-2] for QoS 1), so one slow
 * write holds back the acknowledgements behind it, never the writes. They are written only on
 * the connection the PUBLISH came on: after a reconnect the packet ids belong to a new exchange,
 * and the broker redelivers what was not acknowledged (the owners' writes are idempotent).
 * An uplink whose write failed is never acknowledged on this connection; `abandon` reconnects
 * when one has waited too long, so the broker delivers it again instead of holding one of its
 * in-flight slots for ever.
 */
import type { IPublishPacket, MqttClient, Packet } from 'mqtt';

/** Passed to mqtt.js's `done` so it moves on without sending a PUBACK. */
export const DEFER_ACK = Object.freeze(new Error('PUBACK deferred until the uplink is written'));

interface Pending {
  messageId: number;
  stream: unknown;
  /** undefined: still being written; true: acknowledge; false: never acknowledge on this connection. */
  outcome?: boolean;
  since: number;
}

interface SendPacket {
  _sendPacket(packet: Packet, cb?: (err?: Error) => void, cbStorePut?: () => void, noStore?: boolean): void;
}

export class AckGate {
  private queue: Pending[] = [];
  private head = 0;
  /** PUBACKs written after their uplink's write committed. */
  acked = 0;
  /** Uplinks left unacknowledged (write failed, or the connection changed before it finished). */
  withheld = 0;

  constructor(
    private readonly client: MqttClient,
    private readonly now: () => number,
  ) {}

  /** Uplinks waiting for their write now. */
  get waiting(): number {
    return this.queue.length - this.head;
  }

  /** The oldest wait under way, in ms (0 when nothing waits). */
  oldestWaitMs(): number {
    for (let i = this.head; i < this.queue.length; i++) {
      if (this.queue[i].outcome === undefined) return this.now() - this.queue[i].since;
    }
    return 0;
  }

  /**
   * Takes over the acknowledgement of `packet`; call the returned function once with true when
   * its write committed (the PUBACK goes out, in order), false when it did not (none goes out).
   * Packets without an id (QoS 0) need no PUBACK.
   */
  defer(packet: IPublishPacket): (written: boolean) => void {
    if (packet.qos !== 1 || typeof packet.messageId !== 'number') return () => {};
    const p: Pending = { messageId: packet.messageId, stream: this.client.stream, since: this.now() };
    this.queue.push(p);
    let settled = false;
    return (written: boolean) => {
      if (settled) return;
      settled = true;
      p.outcome = written;
      this.release();
    };
  }

  /**
   * Whether the connection of now is still the one a packet deferred now came on: a write that
   * finishes after a reconnect cannot be acknowledged on it (the broker delivers the packet again).
   */
  connectionCheck(): () => boolean {
    const stream = this.client.stream;
    return () => stream === this.client.stream && this.client.connected;
  }

  private release(): void {
    while (this.head < this.queue.length && this.queue[this.head].outcome !== undefined) {
      const p = this.queue[this.head];
      // let the entry go now: a slot kept until the next compaction held it (and the connection's
      // socket) for another thousand uplinks, long enough to be promoted and collected as old
      this.queue[this.head++] = undefined as unknown as Pending;
      const sameConnection = p.stream === this.client.stream && this.client.connected;
      if (p.outcome && sameConnection) {
        // mqtt.js has no public call for a PUBACK of our own; _sendPacket with noStore writes it
        // to the stream as its own handler would (handlers/publish.js)
        (this.client as unknown as SendPacket)._sendPacket(
          { cmd: 'puback', messageId: p.messageId },
          undefined,
          undefined,
          true,
        );
        this.acked++;
      } else {
        this.withheld++;
      }
    }
    if (this.head > 1024 && this.head * 2 > this.queue.length) {
      this.queue = this.queue.slice(this.head);
      this.head = 0;
    }
  }
}
