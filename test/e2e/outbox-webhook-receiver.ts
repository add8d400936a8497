/**
 * A webhook receiver as its own process, for the outbox e2e test: verifies each request's
 * signature as a real consumer would (only node:crypto, the README's recipe), prints one JSON line
 * per request on stdout, and answers 500 while told to fail.
 *
 *   node outbox-webhook-receiver.js <secret> <fail-first-n | always>
 *   stdout: {"listening":port} then {"duplicate","event_id","event_type","key","signed","header_id","data"}
 *   per accepted request (duplicate: an id seen before, which a consumer drops), {"refused":n} per
 *   request answered 500
 *   POST /control {"fail": n | "always" | 0} changes the failing mode.
 */
import { createHmac, timingSafeEqual } from 'node:crypto';
import http from 'node:http';
import type { AddressInfo } from 'node:net';

const secret = process.argv[2] ?? '';
let fail: number | 'always' = process.argv[3] === 'always' ? 'always' : Number(process.argv[3] ?? 0);
let refused = 0;
/** Consumers deduplicate on the event id (at-least-once delivery): a repeat is marked, not processed. */
const seen = new Set<string>();

function verify(ts: string | undefined, body: string, sig: string | undefined): boolean {
  if (!ts || !sig || Math.abs(Date.now() - Number(ts)) > 300_000) return false;
  const want = createHmac('sha256', secret).update(`${ts}.${body}`).digest();
  const got = Buffer.from(sig, 'hex');
  return got.length === want.length && timingSafeEqual(got, want);
}

const out = (v: unknown) => process.stdout.write(`${JSON.stringify(v)}\n`);

const server = http.createServer((req, res) => {
  const chunks: Buffer[] = [];
  req.on('data', (c: Buffer) => chunks.push(c));
  req.on('end', () => {
    const body = Buffer.concat(chunks).toString('utf8');
    if (req.url === '/control') {
      const f = JSON.parse(body).fail;
      fail = f === 'always' ? 'always' : Number(f);
      res.writeHead(204).end();
      return;
    }
    if (fail === 'always' || fail > 0) {
      if (fail !== 'always') fail--;
      out({ refused: ++refused });
      res.writeHead(500).end();
      return;
    }
    const env = JSON.parse(body);
    const signed = verify(req.headers['x-gmq-timestamp'] as string, body, req.headers['x-gmq-signature'] as string);
    const duplicate = seen.has(env.event_id);
    seen.add(env.event_id);
    out({
      duplicate,
      event_id: env.event_id,
      header_id: req.headers['x-gmq-event-id'],
      event_type: env.event_type,
      key: env.key,
      signed,
      data: env.data,
    });
    res.writeHead(signed ? 204 : 401).end();
  });
});
server.listen(0, '127.0.0.1', () => out({ listening: (server.address() as AddressInfo).port }));
process.on('SIGTERM', () => server.close(() => process.exit(0)));
