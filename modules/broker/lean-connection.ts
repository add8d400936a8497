/**
 * What aedes keeps per connection that one shared function or a lazy field can do instead.
 *
 * With the embedded broker the hub holds every agent's connection: 10 000 of them in the memory
 * suite, about 8 KB of live JS heap each. Per connection, aedes' client builds:
 * - `stream.finished(conn, close)`: seven listener closures and their context on the socket, to
 *   learn that the socket ended, failed or closed;
 * - three bound functions (`emit.bind(client, 'error')` on the socket and on its parser,
 *   `close.bind(client)` for the socket's 'end') with their bound arguments;
 * - a Set for inbound QoS 2 ids (`_inboundInflight`), which an agent at QoS 1 never fills;
 * - `duplicates` as `Object.create(null)`: a dictionary, for the one key it ever holds here
 *   (this broker's id);
 * - its own and its parser's listener tables, dictionaries too (`leanOnceConnected`).
 * (docs/benchmarks.md "The embedded broker's connections" has the figures.)
 *
 * `leanConnection` replaces them, on a TCP socket's client, by shared functions that find the
 * client on the socket (`conn.client`, aedes' own back reference), a Set made on first use, and a
 * fast object with no prototype. What they do is the same:
 * - the socket's 'error' and the parser's 'error' are the client's 'error' (aedes closes the
 *   connection on it);
 * - the socket's 'end' closes the client, and so does its 'close': a net.Socket emits 'close'
 *   once destroyed, whatever destroyed it (an error, the peer, the broker), which is the case
 *   `finished()` was there for. `Client.close()` runs once; later calls return.
 * It changes nothing and returns false when the client is not built the way this expects (an
 * aedes upgrade): the broker then says so, and the connection runs as aedes made it. A test
 * requires the installed aedes to take it.
 *
 * WebSocket streams keep aedes' own: their 'close' is emitted by ws on its own terms.
 */
import type { Socket } from 'node:net';
import type { Client } from 'aedes';

/** The parts of aedes' client (lib/client.js) this replaces. */
interface AedesClientParts {
  conn: Socket & { client?: Client };
  _parser: NodeJS.EventEmitter & { client?: Client };
  _eos: () => void;
  _inboundInflight: Set<number> | InboundIds;
  duplicates: Record<string, number>;
  close(): void;
  emit(event: 'error', err: Error): boolean;
}

/** The socket's or the parser's 'error' is the client's (as `emit.bind(client, 'error')` was). */
function errorOnClient(this: { client?: Client }, err: Error): void {
  (this.client as unknown as AedesClientParts | undefined)?.emit('error', err);
}

/** The socket ended or closed: so does the client (as `close.bind(client)` and `finished()` did). */
function closeClient(this: { client?: Client }): void {
  (this.client as unknown as AedesClientParts | undefined)?.close();
}

function noop(): void {}

/** aedes' `_inboundInflight`, its Set made on the first QoS 2 PUBLISH (has/add/delete/size as used). */
export class InboundIds {
  private ids?: Set<number>;
  get size(): number {
    return this.ids?.size ?? 0;
  }
  has(id: number): boolean {
    return this.ids?.has(id) ?? false;
  }
  add(id: number): this {
    this.ids ??= new Set();
    this.ids.add(id);
    return this;
  }
  delete(id: number): boolean {
    return this.ids?.delete(id) ?? false;
  }
}

const isBound =
  (name: string) =>
  (fn: { name: string }): boolean =>
    fn.name === `bound ${name}`;

/**
 * An emitter's listener table as a fast object (no prototype, as Node makes it), for an emitter
 * whose events no longer change: Node makes `_events` a dictionary (`{ __proto__: null }`,
 * about 0.2 KB each), and removing a listener keeps it one. Only `_events` is replaced, with the
 * same entries, so `on`, `emit` and `removeListener` work as before.
 */
function fastListenerTable(emitter: { _events?: object }): void {
  const table = emitter._events;
  if (!table || Object.getPrototypeOf(table) !== null) return;
  const fast = Object.setPrototypeOf({}, null) as Record<string | symbol, unknown>;
  for (const key of Reflect.ownKeys(table)) fast[key] = (table as Record<string | symbol, unknown>)[key];
  emitter._events = fast;
}

/**
 * Once a lean client is connected (after aedes' 'clientReady' and its own 'connected', which
 * takes its one-time listener off): its own and its parser's listener tables as fast objects.
 * They change no more until the client closes: the 'error' and 'packet' listeners stay. A client `leanConnection` did not take
 * is left alone.
 */
export function leanOnceConnected(client: Client): void {
  const c = client as unknown as Partial<AedesClientParts> & { _events?: object };
  if (c._eos !== noop || !c._parser) return;
  fastListenerTable(c);
  fastListenerTable(c._parser as { _events?: object });
}

/** Makes a TCP connection's aedes client lean (see the file comment); false when it cannot. */
export function leanConnection(client: Client): boolean {
  const c = client as unknown as Partial<AedesClientParts>;
  const conn = c.conn;
  const parser = c._parser;
  if (!conn || !parser || typeof c._eos !== 'function' || !(c._inboundInflight instanceof Set)) return false;
  if (conn.client !== client || parser.client !== client) return false;
  const connError = conn.listeners('error').find(isBound('emit'));
  const connEnd = conn.listeners('end').find(isBound('close'));
  const parserError = parser.listeners('error').find(isBound('emit'));
  if (!connError || !connEnd || !parserError) return false;

  // finished(): its cleanup takes its seven listeners off the socket
  c._eos();
  c._eos = noop;
  conn.on('close', closeClient);
  conn.removeListener('error', connError as (...a: unknown[]) => void);
  conn.on('error', errorOnClient);
  conn.removeListener('end', connEnd as (...a: unknown[]) => void);
  conn.on('end', closeClient);
  parser.removeListener('error', parserError as (...a: unknown[]) => void);
  parser.on('error', errorOnClient);
  if (c._inboundInflight.size === 0) c._inboundInflight = new InboundIds();
  // keys from the wire must not read inherited names (aedes' GHSA-52qw-whmv-87c5): no prototype
  const duplicates = Object.setPrototypeOf({}, null) as Record<string, number>;
  Object.assign(duplicates, c.duplicates);
  c.duplicates = duplicates;
  return true;
}
