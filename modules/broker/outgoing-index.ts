/**
 * The embedded broker's outgoing queues, indexed. aedes' in-memory persistence
 * (aedes-persistence) keeps each persistent-session client's QoS 1/2 packets in flight as one
 * array and finds a packet by scanning it, on every send (`outgoingUpdate`: which packet gets
 * this message id) and on every PUBACK (`outgoingClearMessageId`, then `splice`): O(queue) per
 * message. The hub's own bridge is such a client, and it PUBACKs an uplink only once it is
 * durable, so during a burst of heartbeats thousands of packets wait in its queue and the scan
 * was 6 % of the hub's CPU (the heartbeat suite's embedded-broker phase, README "Benchmarks").
 *
 * `indexOutgoing` replaces those five methods on a persistence instance with the same contract
 * over ordered maps and two indexes (by broker id and counter, by message id); everything else
 * (subscriptions, retained messages, wills, incoming QoS 2) stays aedes-persistence's own.
 * test/modules/broker/outgoing-index.property.test.ts holds it against the original, operation
 * by operation, with fast-check.
 */
import { Readable } from 'node:stream';
import aedesPacket from 'aedes-packet';

/** aedes-packet's constructor (its types declare a namespace; at run time it is the function). */
const Packet = aedesPacket as unknown as new (p: object) => OutgoingPacket;

/** What aedes hands the outgoing methods: a packet as aedes-packet builds it. */
export interface OutgoingPacket {
  brokerId?: string;
  brokerCounter?: number;
  messageId?: number;
  [k: string]: unknown;
}

/** The five outgoing methods of an aedes persistence, promise style (aedes calls them so). */
export interface OutgoingMethods {
  outgoingEnqueue(sub: { clientId: string }, packet: OutgoingPacket): Promise<void>;
  outgoingEnqueueCombi(subs: Array<{ clientId: string }>, packet: OutgoingPacket): Promise<void>;
  outgoingUpdate(client: { id: string }, packet: OutgoingPacket): Promise<void>;
  outgoingClearMessageId(client: { id: string }, packet: { messageId?: number }): Promise<OutgoingPacket | undefined>;
  outgoingStream(client: { id: string }): Readable;
}

/** One client's queue: packets in the order they were queued, and where to find each. */
class Queue {
  private next = 0;
  /**
   * The packets and their indexes while any packet waits; none while the queue is empty. Every
   * agent gets QoS 1 downlinks, so every connection has a queue, and three empty Maps and the
   * `undefined` index entry held about 700 bytes each: 7 MB with 10 000 agents (bench `memory`).
   */
  private maps: QueueMaps | null = null;

  /** The packets in queue order (a copy). */
  packets(): OutgoingPacket[] {
    return this.maps ? [...this.maps.items.values()] : [];
  }

  push(p: OutgoingPacket): void {
    this.maps ??= { items: new Map(), byBroker: new Map(), byMessageId: new Map() };
    const at = this.next++;
    this.maps.items.set(at, p);
    add(this.maps.byBroker, brokerKey(p), at);
    add(this.maps.byMessageId, p.messageId, at);
  }

  /**
   * aedes-persistence's outgoingUpdate, which scans the queue in order and stops at the first
   * packet that either is this one (same broker and counter: it takes the new message id) or
   * is another broker's with the same message id (replaced by this one). Here: the first of each
   * kind from the indexes, and the earlier of the two.
   */
  update(p: OutgoingPacket): boolean {
    const m = this.maps;
    if (!m) return false;
    const same = m.byBroker.get(brokerKey(p))?.first();
    let other: number | undefined;
    for (const pos of m.byMessageId.get(p.messageId) ?? []) {
      if (m.items.get(pos)!.brokerId !== p.brokerId) {
        other = pos;
        break;
      }
    }
    if (same !== undefined && (other === undefined || same < other)) {
      const cur = m.items.get(same)!;
      remove(m.byMessageId, cur.messageId, same);
      cur.messageId = p.messageId;
      add(m.byMessageId, cur.messageId, same);
      return true;
    }
    if (other === undefined) return false;
    const cur = m.items.get(other)!;
    remove(m.byBroker, brokerKey(cur), other);
    remove(m.byMessageId, cur.messageId, other);
    m.items.set(other, p);
    add(m.byBroker, brokerKey(p), other);
    add(m.byMessageId, p.messageId, other);
    return true;
  }

  /** Removes and returns the first packet (in queue order) with this message id. */
  clear(messageId: number | undefined): OutgoingPacket | undefined {
    const m = this.maps;
    const at = m?.byMessageId.get(messageId)?.first();
    if (m === null || at === undefined) return undefined;
    const p = m.items.get(at)!;
    m.items.delete(at);
    remove(m.byMessageId, messageId, at);
    remove(m.byBroker, brokerKey(p), at);
    if (m.items.size === 0) this.maps = null;
    return p;
  }
}

interface QueueMaps {
  /** position → packet; a Map keeps insertion order, and a replaced packet keeps its place */
  readonly items: Map<number, OutgoingPacket>;
  /** `brokerId counter` → positions of the packets with it, in queue order (one, but for duplicates) */
  readonly byBroker: Map<string, Positions>;
  /**
   * message id → positions holding it, in queue order (an id can repeat after 65 535). A packet
   * not sent yet has none (undefined), which is a key too: aedes clears such packets by it
   * (Client.emptyOutgoingQueue), and the original's scan matches undefined to undefined.
   */
  readonly byMessageId: Map<number | undefined, Positions>;
}

/**
 * Positions under one index key, in queue order. Mostly appended at the end and taken from the
 * front (packets are sent and PUBACKed about in the order they were queued: all packets not sent
 * yet share the key `undefined`, thousands in a burst), so the front is a moving head, not a shift.
 */
class Positions {
  private arr: number[] = [];
  private head = 0;

  get size(): number {
    return this.arr.length - this.head;
  }

  first(): number | undefined {
    return this.arr[this.head];
  }

  *[Symbol.iterator](): Iterator<number> {
    for (let i = this.head; i < this.arr.length; i++) yield this.arr[i];
  }

  add(at: number): void {
    let i = this.arr.length;
    while (i > this.head && this.arr[i - 1] > at) i--;
    if (i === this.arr.length) this.arr.push(at);
    else this.arr.splice(i, 0, at);
  }

  remove(at: number): void {
    if (this.arr[this.head] === at) {
      this.head++;
      if (this.head >= 1024 && this.head * 2 >= this.arr.length) {
        this.arr = this.arr.slice(this.head);
        this.head = 0;
      }
      return;
    }
    const i = this.arr.indexOf(at, this.head);
    if (i >= 0) this.arr.splice(i, 1);
  }
}

function add<K>(index: Map<K, Positions>, key: K, at: number): void {
  let list = index.get(key);
  if (!list) {
    list = new Positions();
    index.set(key, list);
  }
  list.add(at);
}

function remove<K>(index: Map<K, Positions>, key: K, at: number): void {
  const list = index.get(key);
  if (!list) return;
  list.remove(at);
  // The `undefined` entry (packets not sent yet) empties and fills again with every message: it
  // stays. A V8 Map keeps a deleted entry in its key's hash chain until it rehashes, so deleting
  // and adding one key per message grows that chain, and every lookup of the key walks it
  // (measured: 44 µs per enqueue at 20 000 packets in flight, against 1 µs with the entry kept).
  if (list.size === 0 && key !== undefined) index.delete(key);
}

const brokerKey = (p: OutgoingPacket): string => `${p.brokerId}\u0000${p.brokerCounter}`;

/** The outgoing methods over indexed queues (see the file comment). */
export function indexedOutgoing(): OutgoingMethods {
  const queues = new Map<string, Queue>();
  const queueOf = (clientId: string): Queue => {
    let q = queues.get(clientId);
    if (!q) {
      q = new Queue();
      queues.set(clientId, q);
    }
    return q;
  };
  return {
    async outgoingEnqueue(sub, packet) {
      queueOf(sub.clientId).push(new Packet(packet));
    },
    async outgoingEnqueueCombi(subs, packet) {
      for (const sub of subs) queueOf(sub.clientId).push(new Packet(packet));
    },
    async outgoingUpdate(client, packet) {
      if (!queueOf(client.id).update(packet)) throw new Error('no such packet');
    },
    async outgoingClearMessageId(client, packet) {
      return queueOf(client.id).clear(packet.messageId);
    },
    outgoingStream(client) {
      // a snapshot, as aedes-persistence's: clearing while the stream is read must not skip packets
      return Readable.from(queues.get(client.id)?.packets() ?? []);
    },
  };
}

/** Puts the indexed outgoing methods on an aedes persistence instance (aedes-persistence's `memory()`). */
export function indexOutgoing<P extends object>(persistence: P): P {
  return Object.assign(persistence, indexedOutgoing());
}
