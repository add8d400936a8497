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
 * over ordered maps and two indexes (by broker id and counter, by message id); subscriptions are
 * subscription-index.ts's, and the rest (retained messages, wills, incoming QoS 2) stays
 * aedes-persistence's own.
 * test/modules/broker/outgoing-index.property.test.ts holds it against the original, operation
 * by operation, with fast-check, but for the two fixes below.
 *
 * **Two fixes to the original's session queues**, found when a bridge restarted under load lost
 * an uplink (test/modules/mqtt-bridge/session.test.ts) on the tests' broker, then plain aedes:
 *
 * - **A PUBACK cleared another packet.** aedes numbers each connection's packets from a random
 *   start (`Client._nextId`) and never looks at the ids the session's queue already holds: a
 *   packet sent on an earlier connection and not acknowledged keeps its id for its resend, so a
 *   new packet could get the same id. The queue clears the first packet with an acknowledged id,
 *   which could be the older one: it was gone without ever being acknowledged, and its resend
 *   never came. Here a packet sent for the first time takes the next id no queued packet holds
 *   (the packet aedes is about to write gets it too), so an id names one packet in a queue.
 * - **A resend that is no longer due closed the connection.** On a reconnect aedes resends a
 *   snapshot of the queue, while new packets reach the client at once. A packet in both was
 *   acknowledged before the snapshot came to it ("no such packet": aedes closed the connection,
 *   the client came back, and the next snapshot could do it again), or sent twice. Such a resend
 *   (its packet no longer queued, or already sent on this connection) is marked here, and
 *   `isStaleResend` lets the broker's `authorizeForward` drop it (aedes then clears it by its
 *   packet, which the mark makes a no-op) instead of failing the connection.
 */
import { Readable } from 'node:stream';
import type { AedesOptions } from 'aedes';
import aedesPacket from 'aedes-packet';
import aedesPersistence from 'aedes-persistence';
import { indexSubscriptions } from './subscription-index.js';

/** aedes-packet's constructor (its types declare a namespace; at run time it is the function). */
const Packet = aedesPacket as unknown as new (p: object) => OutgoingPacket;

/** What aedes hands the outgoing methods: a packet as aedes-packet builds it. */
export interface OutgoingPacket {
  brokerId?: string;
  brokerCounter?: number;
  messageId?: number;
  [k: string]: unknown;
}

/** The highest MQTT packet id (ids are 1 to 65 535). */
const MAX_PACKET_ID = 65_535;

/**
 * Where a queued packet was last sent: its connection's number (see `connectionNumber`). A field
 * of the queued packet rather than a WeakMap beside it, which would hold a weak entry for every
 * packet in flight; aedes copies only the fields it knows, so it never reaches the wire.
 */
interface QueuedPacket extends OutgoingPacket {
  /** undefined until sent */
  sentOn?: number;
}

/** Resends aedes is about to write that are no longer due (see the file comment). */
const staleResends = new WeakSet<object>();

/** Whether aedes should drop this packet instead of writing it: a resend no longer due. For `authorizeForward`. */
export function isStaleResend(packet: object): boolean {
  return staleResends.has(packet);
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
   * kind from the indexes, and the earlier of the two; and the two fixes of the file comment:
   * a first send takes an id no other queued packet holds (written into `p`, which aedes sends),
   * and a publish no longer due comes back `stale` (aedes-persistence threw "no such packet" for
   * one no longer queued). `conn` is the sending connection's number.
   */
  update(p: OutgoingPacket, conn: number): 'updated' | 'stale' | 'missing' {
    const m = this.maps;
    const same = m?.byBroker.get(brokerKey(p))?.first();
    let other: number | undefined;
    for (const pos of m?.byMessageId.get(p.messageId) ?? []) {
      if (m!.items.get(pos)!.brokerId !== p.brokerId) {
        other = pos;
        break;
      }
    }
    if (m && same !== undefined && (other === undefined || same < other)) {
      const cur: QueuedPacket = m.items.get(same)!;
      if (cur.sentOn === conn) {
        // sent on this connection already (a new packet reached the client before the resend of
        // the queue did): not again; should it be written anyway, then under the id it has
        p.messageId = cur.messageId;
        return 'stale';
      }
      // a resend keeps its id ([MQTT-4.4.0-1]); a first send takes one no other packet holds
      if (p.messageId !== cur.messageId) p.messageId = this.freeId(p.messageId, same);
      remove(m.byMessageId, cur.messageId, same);
      cur.messageId = p.messageId;
      add(m.byMessageId, cur.messageId, same);
      cur.sentOn = conn;
      return 'updated';
    }
    if (!m || other === undefined) {
      // a publish of this broker no longer queued: acknowledged meanwhile (or its session
      // emptied); should it be written anyway, then under an id no queued packet holds
      if (p.cmd !== 'publish' || p.brokerId === undefined) return 'missing';
      p.messageId = this.freeId(p.messageId, -1);
      return 'stale';
    }
    const cur = m.items.get(other)!;
    remove(m.byBroker, brokerKey(cur), other);
    remove(m.byMessageId, cur.messageId, other);
    m.items.set(other, p);
    add(m.byBroker, brokerKey(p), other);
    add(m.byMessageId, p.messageId, other);
    (p as QueuedPacket).sentOn = conn;
    return 'updated';
  }

  /** `id`, or the next id after it that no queued packet but the one at `self` holds. */
  private freeId(id: number | undefined, self: number): number | undefined {
    const m = this.maps;
    if (id === undefined || !m) return id;
    let candidate = id;
    for (let tries = 0; tries < MAX_PACKET_ID; tries++) {
      const holders = m.byMessageId.get(candidate);
      if (!holders || holders.size === 0 || (holders.size === 1 && holders.first() === self)) return candidate;
      candidate = candidate >= MAX_PACKET_ID ? 1 : candidate + 1;
    }
    return id; // 65 535 packets sent and not acknowledged: aedes' own id, as before
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
  // aedes makes a Client object per connection: its number tells this connection from the
  // session's earlier ones (a WeakMap: nothing kept once the connection is gone)
  const connections = new WeakMap<object, number>();
  let connectionCount = 0;
  const connectionNumber = (client: object): number => {
    let n = connections.get(client);
    if (n === undefined) {
      n = ++connectionCount;
      connections.set(client, n);
    }
    return n;
  };
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
      const outcome = queueOf(client.id).update(packet, connectionNumber(client));
      if (outcome === 'missing') throw new Error('no such packet');
      if (outcome === 'stale') staleResends.add(packet);
    },
    async outgoingClearMessageId(client, packet) {
      // aedes clears a resend the broker dropped by its packet: a stale one names nothing queued
      if (staleResends.has(packet)) return undefined;
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

/** aedes-persistence's in-memory factory, as aedes itself imports it (its types describe an ES module namespace). */
const memoryPersistence = aedesPersistence as unknown as () => object;

/**
 * The aedes options for session queues held in memory, indexed and fixed, with lean stored
 * subscriptions (subscription-index.ts): the persistence, and
 * an `authorizeForward` that drops stale resends before `forward` (the broker's own check) sees
 * a packet. The embedded broker and the tests' bare aedes both build theirs here.
 */
export function sessionQueues(
  forward: NonNullable<AedesOptions['authorizeForward']> = (_client, packet) => packet,
): Required<Pick<AedesOptions, 'persistence' | 'authorizeForward'>> {
  return {
    persistence: indexSubscriptions(indexOutgoing(memoryPersistence())),
    authorizeForward: (client, packet) => (isStaleResend(packet) ? null : forward(client, packet)),
  };
}
