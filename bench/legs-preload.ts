/**
 * A preload (`node --import`) for the sync suite's leg timeline (BENCH_SYNC_LEGS=1, sync-legs.ts):
 * it records, with a microsecond clock, every HTTP request the process's servers take in, every
 * read from a socket and every write to one, each socket put in one of three classes: `h` a
 * connection a server of this process accepted (its HTTP callers), `m` a connection to the MQTT
 * broker (remote port BENCH_LEGS_MQTT_PORT), `d` any other connection this process opened (its
 * database). Lines `<µs> <event> <class> <socket>` are appended to BENCH_LEGS_OUT about once a
 * second, so the process's own work is not held up by a write per event.
 *
 * Only the process's own sockets are seen: an HTTP server's reads go to its parser, not through
 * 'data' (the request event stands for them), and the IPC channel to the bench is no socket.
 */
import fs from 'node:fs';
import http from 'node:http';
import net from 'node:net';

const out = process.env.BENCH_LEGS_OUT;
const mqttPort = Number(process.env.BENCH_LEGS_MQTT_PORT ?? 0);

if (out) {
  const t0 = process.hrtime.bigint();
  const micros = () => Number((process.hrtime.bigint() - t0) / 1000n);
  const ids = new WeakMap<net.Socket, number>();
  let nextId = 1;
  let lines: string[] = [];

  const classOf = (s: net.Socket): string => {
    if ((s as net.Socket & { server?: unknown }).server) return 'h';
    return s.remotePort === mqttPort ? 'm' : 'd';
  };
  const idOf = (s: net.Socket): number => {
    let id = ids.get(s);
    if (id === undefined) {
      id = nextId++;
      ids.set(s, id);
    }
    return id;
  };
  const note = (event: string, s: net.Socket) => lines.push(`${micros()} ${event} ${classOf(s)} ${idOf(s)}`);

  type Proto = {
    emit(this: net.Socket, event: string | symbol, ...args: unknown[]): boolean;
    _writeGeneric(this: net.Socket, ...args: unknown[]): unknown;
  };
  const socket = net.Socket.prototype as unknown as Proto;
  const emit = socket.emit;
  socket.emit = function (this: net.Socket, event, ...args) {
    if (event === 'data') note('R', this);
    return emit.call(this, event, ...args);
  };
  // every write of a net.Socket, single or vectored, goes through _writeGeneric (node:net)
  const writeGeneric = socket._writeGeneric;
  socket._writeGeneric = function (this: net.Socket, ...args) {
    note('W', this);
    return writeGeneric.apply(this, args);
  };
  const server = http.Server.prototype as unknown as { emit(event: string | symbol, ...args: unknown[]): boolean };
  const serverEmit = server.emit;
  server.emit = function (this: http.Server, event, ...args) {
    if (event === 'request') lines.push(`${micros()} Q h ${idOf((args[0] as http.IncomingMessage).socket)}`);
    return serverEmit.call(this, event, ...args);
  };

  const flush = () => {
    if (lines.length === 0) return;
    const text = `${lines.join('\n')}\n`;
    lines = [];
    fs.appendFileSync(out, text);
  };
  setInterval(flush, 1000).unref();
  process.on('exit', flush);
}
