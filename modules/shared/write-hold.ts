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
 * @example
 *   const socket = holdWritesPerTurn(net.createConnection({ host, port, noDelay: true }));
 */
import type { Writable } from 'node:stream';

export function holdWritesPerTurn<S extends Writable>(socket: S): S {
  const write = socket.write;
  let held = false;
  const release = () => {
    held = false;
    socket.uncork();
  };
  socket.write = function holdingWrite(this: S, ...args: Parameters<Writable['write']>): boolean {
    if (!held && !socket.destroyed) {
      held = true;
      socket.cork();
      setImmediate(release);
    }
    return (write as (...a: Parameters<Writable['write']>) => boolean).apply(this, args);
  } as Writable['write'];
  return socket;
}
