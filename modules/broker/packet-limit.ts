import type { Client } from 'aedes';

/** A broker's packet size limit: one for all its connections. */
export interface PacketLimit {
  max: number;
  /** The packet arriving on `client` is larger than `max` (the broker closes the connection). */
  onTooBig(client: Client): void;
}

const LIMIT = Symbol('gmq.packetLimit');

interface LimitedParser {
  parse(buf: Buffer): number;
  /**
   * One small record per parser and one `parse` for all (no bound function and closure per
   * connection: about 0.15 KB each, with thousands of agents on the embedded broker).
   */
  [LIMIT]: { limit: PacketLimit; parse: (buf: Buffer) => number; client: Client; tripped: boolean };
}

function limitedParse(this: LimitedParser, buf: Buffer): number {
  const l = this[LIMIT];
  const left = l.parse.call(this, buf);
  if (left > l.limit.max && !l.tripped) {
    l.tripped = true;
    l.limit.onTooBig(l.client);
  }
  return left;
}

/**
 * Calls `limit.onTooBig` once the packet arriving is larger than `limit.max`. mqtt-packet's
 * `parse()` emits every complete packet and returns the bytes left (documented), i.e. the start
 * of an incomplete one; aedes keeps its parser on the client. Returns false when there is no
 * parser to guard (an aedes change), so the broker can say so.
 */
export function limitPacketSize(client: Client, limit: PacketLimit): boolean {
  const parser = (client as unknown as { _parser?: Partial<LimitedParser> })._parser;
  if (!parser || typeof parser.parse !== 'function') return false;
  parser[LIMIT] = { limit, parse: parser.parse, client, tripped: false };
  parser.parse = limitedParse;
  return true;
}
