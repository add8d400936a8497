/**
 * Webhook signatures: lowercase hex HMAC-SHA256 with the route's secret over
 * `timestamp + "." + body`, the timestamp being the X-Gmq-Timestamp header (ms since the epoch).
 * Signing the timestamp with the body lets a receiver refuse an old request replayed later.
 * Receivers import nothing from us: the three lines of `verifyWebhook` are the recipe.
 */
import { createHmac, timingSafeEqual } from 'node:crypto';

export const HEADER_EVENT_ID = 'x-gmq-event-id';
export const HEADER_EVENT_TYPE = 'x-gmq-event-type';
export const HEADER_TIMESTAMP = 'x-gmq-timestamp';
export const HEADER_SIGNATURE = 'x-gmq-signature';

export function signWebhook(secret: string, timestamp: string, body: string): string {
  return createHmac('sha256', secret).update(`${timestamp}.${body}`).digest('hex');
}

/**
 * True when `signature` is this body's at `timestamp` and the timestamp is within `windowMs` of
 * `now` (default ±300 s, the wire protocol's window).
 *
 * @example
 *   verifyWebhook(secret, req.headers['x-gmq-timestamp'], rawBody, req.headers['x-gmq-signature'])
 */
export function verifyWebhook(
  secret: string,
  timestamp: string | undefined,
  body: string,
  signature: string | undefined,
  now = Date.now(),
  windowMs = 300_000,
): boolean {
  if (!timestamp || !signature || !/^\d{1,16}$/.test(timestamp)) return false;
  if (Math.abs(now - Number(timestamp)) > windowMs) return false;
  const want = Buffer.from(signWebhook(secret, timestamp, body), 'hex');
  const got = Buffer.from(signature, 'hex');
  return got.length === want.length && timingSafeEqual(got, want);
}
