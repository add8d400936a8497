import type { OutboxEnvelope } from './contract.js';

/**
 * Where a route's events go. `send` resolves once the destination has the event (a PUBACK, a
 * 2xx) and rejects otherwise; the relay then counts a failed attempt and retries with backoff.
 */
export interface Destination {
  send(envelope: OutboxEnvelope): Promise<void>;
  close(): Promise<void>;
}
