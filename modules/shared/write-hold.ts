/**
 * Holds a socket's writes until the end of the event-loop turn of its first write: the MQTT
 * packets written in one turn leave in one writev (and, on a TCP_NODELAY socket, one segment)
 * instead of one each. mqtt-packet corks the stream around each packet and uncorks it on the
 * next tick, while mqtt.js handles each inbound packet in a tick of its own and aedes writes
 * each delivery on its own, so every PUBACK and every forwarded message was its own syscall:
 * 13 % of the hub's CPU at 6 000 heartbeats/s (bench `heartbeat`, BENCH_HUB_PROF).
 *
 * A write waits one turn at most (setImmediate runs after this turn's I/O). cork/uncork nest,
 * so mqtt-packet's own pairs still balance; `write()`'s return value and 'drain' keep their
 * meaning, so backpressure is unchanged. Only the socket's own `write` is wrapped, on the
 * instance we created (our client's connection, or a connection our broker accepted).
 *
 * The wrapper is one function for every socket, and a socket keeps one small record (its own
 * `write`, whether a turn holds it): the embedded broker wraps each of its thousands of agent
 * connections, and closures per socket cost about 0.2 KB each (README "The embedded broker's
 * connections").
 *
 * @example
 *   const socket = holdWritesPerTurn(net.createConnection({ host, port, noDelay: true }));
 */
import type { Writable } from 'node:stream';

type Write = Writable['write'];
type Encoding = Parameters<Write>[1];
type Callback = Parameters<Write>[2];

const HOLD = Symbol('gmq.writeHold');

interface HoldingSocket extends Writable {
  [HOLD]: { write: Write; held: boolean };
}

function holdingWrite(this: HoldingSocket, chunk: unknown, encoding?: Encoding, cb?: Callback): boolean {
  const hold = this[HOLD];
  if (!hold.held && !this.destroyed) {
    hold.held = true;
    this.cork();
    setImmediate(release, this);
  }
  return (hold.write as (c: unknown, e?: Encoding, cb?: Callback) => boolean).call(this, chunk, encoding, cb);
}

function release(socket: HoldingSocket): void {
  socket[HOLD].held = false;
  socket.uncork();
}

export function holdWritesPerTurn<S extends Writable>(socket: S): S {
  const s = socket as unknown as HoldingSocket;
  if (s[HOLD]) return socket;
  s[HOLD] = { write: socket.write, held: false };
  socket.write = holdingWrite as Write;
  return socket;
}
