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
 * connections, and closures per socket cost about 0.2 KB each (docs/benchmarks.md "The embedded broker's
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
  /** `soon`: the next write goes out once this moment's microtasks have run (releaseSoon). */
  [HOLD]: { write: Write; held: boolean; soon: boolean };
}

function holdingWrite(this: HoldingSocket, chunk: unknown, encoding?: Encoding, cb?: Callback): boolean {
  const hold = this[HOLD];
  if (!this.destroyed) {
    if (!hold.held) {
      hold.held = true;
      this.cork();
      if (!hold.soon) setImmediate(release, this);
    }
    if (hold.soon) {
      hold.soon = false;
      queueMicrotask(() => release(this));
    }
  }
  return (hold.write as (c: unknown, e?: Encoding, cb?: Callback) => boolean).call(this, chunk, encoding, cb);
}

/** Ends the hold (once: a release already made, by the turn's end or by releaseSoon, is not made again). */
function release(socket: HoldingSocket): void {
  const hold = socket[HOLD];
  if (!hold.held) return;
  hold.held = false;
  socket.uncork();
}

/**
 * The socket's next write leaves once the microtasks of this moment have run, not at the end of
 * the turn: for a write something waits on, made from a callback late in the turn (the bridge's
 * publish of a command, from its mailbox's setImmediate), where the turn's end is the next turn's
 * check phase, after everything else that turn does. Writes made before those microtasks have run
 * (the other publishes of the same mailbox pass) leave with it. A socket that holds no writes
 * (never wrapped) is left alone.
 */
export function releaseSoon(socket: Writable | undefined): void {
  const hold = (socket as Partial<HoldingSocket> | undefined)?.[HOLD];
  if (hold) hold.soon = true;
}

export function holdWritesPerTurn<S extends Writable>(socket: S): S {
  const s = socket as unknown as HoldingSocket;
  if (s[HOLD]) return socket;
  s[HOLD] = { write: socket.write, held: false, soon: false };
  socket.write = holdingWrite as Write;
  return socket;
}
