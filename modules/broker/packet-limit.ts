import type { Client } from 'aedes';

/**
 * Calls `onTooBig` (the broker closes the connection) once the packet arriving is larger than `max`.
 * mqtt-packet's `parse()` emits every complete packet and returns the bytes left (documented), i.e.
 * the start of an incomplete one; aedes keeps its parser on the client. Returns false when there is
 * no parser to guard (an aedes change), so the broker can say so.
 */
export function limitPacketSize(client: Client, max: number, onTooBig: () => void): boolean {
  const parser = (client as unknown as { _parser?: { parse?: (buf: Buffer) => number } })._parser;
  if (!parser || typeof parser.parse !== 'function') return false;
  const parse = parser.parse.bind(parser);
  let tripped = false;
  parser.parse = (buf: Buffer) => {
    const left = parse(buf);
    if (left > max && !tripped) {
      tripped = true;
      onTooBig();
    }
    return left;
  };
  return true;
}
