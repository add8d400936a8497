/**
 * Webhook destination: POST of the JSON envelope, signed (signature.ts), with the event id in a
 * header so a receiver can deduplicate before it parses the body. Any answer but a 2xx, a
 * timeout or a network error is a failed attempt (retried by the relay, then dead).
 */
import { HubError } from '../../errors.js';
import type { OutboxEnvelope, WebhookDestinationConfig } from './contract.js';
import type { Destination } from './destination.js';
import { HEADER_EVENT_ID, HEADER_EVENT_TYPE, HEADER_SIGNATURE, HEADER_TIMESTAMP, signWebhook } from './signature.js';

export class WebhookDestination implements Destination {
  private readonly abort = new AbortController();

  constructor(
    private readonly route: string,
    private readonly cfg: WebhookDestinationConfig,
  ) {}

  async send(envelope: OutboxEnvelope): Promise<void> {
    const body = JSON.stringify(envelope);
    const timestamp = String(Date.now());
    const signal = AbortSignal.any([this.abort.signal, AbortSignal.timeout(this.cfg.timeout_ms)]);
    let res: Response;
    try {
      res = await fetch(this.cfg.url, {
        method: 'POST',
        headers: {
          ...this.cfg.headers,
          'content-type': 'application/json',
          'user-agent': 'gmq-hub-outbox',
          [HEADER_EVENT_ID]: envelope.event_id,
          [HEADER_EVENT_TYPE]: envelope.event_type,
          [HEADER_TIMESTAMP]: timestamp,
          [HEADER_SIGNATURE]: signWebhook(this.cfg.secret, timestamp, body),
        },
        body,
        signal,
        redirect: 'error',
      });
    } catch (err) {
      const e = err as Error;
      const why = e.name === 'TimeoutError' ? `no answer within ${this.cfg.timeout_ms} ms` : e.message;
      throw new HubError('OUTBOX_ERR_DELIVERY', `webhook ${this.route}: ${why}`, { route: this.route }, { cause: err });
    }
    // the body is not needed; reading it frees the connection for keep-alive
    await res.arrayBuffer().catch(() => undefined);
    if (res.status < 200 || res.status > 299)
      throw new HubError('OUTBOX_ERR_DELIVERY', `webhook ${this.route}: answered ${res.status}`, {
        route: this.route,
        status: res.status,
      });
  }

  async close(): Promise<void> {
    this.abort.abort();
  }
}
