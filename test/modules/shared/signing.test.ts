import assert from 'node:assert/strict';
import { createHmac } from 'node:crypto';
import { test } from 'node:test';
import fc from 'fast-check';
import {
  CLOCK_WINDOW_MS,
  canonicalJson,
  checkClock,
  ReplayCache,
  signMessage,
  verifyInbound,
  verifySignature,
} from '../../../modules/shared/signing.js';

const SECRET = 's3cret-project-key';
const hmac = (secret: string, text: string) => createHmac('sha256', secret).update(text, 'utf8').digest('hex');

function sampleCommand(over: Record<string, unknown> = {}) {
  const msg: Record<string, unknown> = {
    message_id: '3f1c2a4e-8b7d-4c6e-9a1b-2d3e4f5a6b7c',
    type: 'command',
    project_id: 'plant-7',
    timestamp: 1_700_000_000_000,
    version: '1.0',
    command_type: 'host_exec',
    payload: { script: 'uptime', env: { A: '1' }, args: [1, 'two', null, true] },
    ...over,
  };
  msg.signature = signMessage(msg, SECRET);
  return msg as Record<string, unknown> & { message_id: string; timestamp: number; signature: string };
}

test('canonicalJson: RFC 8785 §3.2.2 sample (numbers, string escapes, literals)', () => {
  const input = JSON.parse(
    '{"numbers": [333333333.33333329, 1E30, 4.50, 2e-3, 0.000000000000000000000000001],' +
      ' "string": "\\u20ac$\\u000F\\u000aA\'\\u0042\\u0022\\u005c\\\\\\"\\/", "literals": [null, true, false]}',
  );
  assert.equal(
    canonicalJson(input),
    '{"literals":[null,true,false],"numbers":[333333333.3333333,1e+30,4.5,0.002,1e-27],' +
      '"string":"€$\\u000f\\nA\'B\\"\\\\\\\\\\"/"}',
  );
});

test('canonicalJson: RFC 8785 §3.2.3 sorts keys by UTF-16 code units', () => {
  const input = {
    '\u20ac': 'Euro Sign',
    '\r': 'Carriage Return',
    '\ufb33': 'Hebrew Letter Dalet With Dagesh',
    '1': 'One',
    '\ud83d\ude00': 'Emoji: Grinning Face',
    '\u0080': 'Control',
    '\u00f6': 'Latin Small Letter O With Diaeresis',
  };
  // Compared as text: Object.keys would list the integer-like key "1" first whatever the order.
  assert.equal(
    canonicalJson(input),
    '{"\\r":"Carriage Return","1":"One","\u0080":"Control","\u00f6":"Latin Small Letter O With Diaeresis",' +
      '"\u20ac":"Euro Sign","\ud83d\ude00":"Emoji: Grinning Face","\ufb33":"Hebrew Letter Dalet With Dagesh"}',
  );
});

test('canonicalJson: refuses values JSON cannot carry', () => {
  assert.throws(() => canonicalJson({ a: Number.NaN }), TypeError);
  assert.throws(() => canonicalJson({ a: Number.POSITIVE_INFINITY }), TypeError);
  assert.throws(() => canonicalJson({ a: '\ud800' }), TypeError);
  assert.throws(() => canonicalJson(undefined), TypeError);
  const cyclic: Record<string, unknown> = {};
  cyclic.self = cyclic;
  assert.throws(() => canonicalJson(cyclic), TypeError);
});

test('signMessage: known-answer vector proves JCS key order and number formatting are applied', () => {
  const msg = {
    zeta: 1e21,
    alpha: 'héllo €😀',
    mid: [1.5, -0, 0.000001, 1e-7, 100],
    nested: { b: true, a: null },
    signature: 'ignored, never signed',
  };
  // Written out by hand per RFC 8785: keys sorted, 1e21 → 1e+21, -0 → 0, 1e-7 stays exponent,
  // non-ASCII kept as UTF-8, `signature` left out (docs/wire-protocol.md#signing).
  const canonical = '{"alpha":"héllo €😀","mid":[1.5,0,0.000001,1e-7,100],"nested":{"a":null,"b":true},"zeta":1e+21}';
  const { signature: _s, ...unsigned } = msg;
  assert.equal(canonicalJson(unsigned), canonical);
  const expected = hmac('k3y', canonical);
  assert.equal(signMessage(msg, 'k3y'), expected);
  assert.match(expected, /^[0-9a-f]{64}$/);
  // A naive JSON.stringify would have signed something else.
  assert.notEqual(hmac('k3y', JSON.stringify(unsigned)), expected);
  assert.equal(verifySignature({ ...msg, signature: expected }, 'k3y'), true);
});

test('signMessage: the signature field is excluded, key order of the input does not matter', () => {
  const msg = sampleCommand();
  const { signature, ...unsigned } = msg;
  assert.equal(signMessage(unsigned, SECRET), signature);
  assert.equal(signMessage({ ...unsigned, signature: 'anything' }, SECRET), signature);
  const reversed = Object.fromEntries(Object.entries(unsigned).reverse());
  assert.equal(signMessage(reversed, SECRET), signature);
  assert.equal(verifySignature(msg, SECRET), true);
  // Survives a trip through the wire.
  assert.equal(verifySignature(JSON.parse(JSON.stringify(msg)), SECRET), true);
});

test('signMessage: refuses an empty secret', () => {
  assert.throws(() => signMessage({ a: 1 }, ''), TypeError);
});

test('verifySignature: tampering with any field, nested value or adding a field fails', () => {
  const msg = sampleCommand();
  const tampered: Array<Record<string, unknown>> = [
    { ...msg, message_id: '3f1c2a4e-8b7d-4c6e-9a1b-2d3e4f5a6b7d' },
    { ...msg, type: 'message' },
    { ...msg, project_id: 'plant-8' },
    { ...msg, timestamp: msg.timestamp + 1 },
    { ...msg, version: '1.1' },
    { ...msg, command_type: 'host_exec2' },
    { ...msg, payload: { script: 'rm -rf /', env: { A: '1' }, args: [1, 'two', null, true] } },
    { ...msg, payload: { script: 'uptime', env: { A: '2' }, args: [1, 'two', null, true] } },
    { ...msg, payload: { script: 'uptime', env: { A: '1' }, args: [1, 'two', null, false] } },
    { ...msg, extra: 1 },
  ];
  const { payload: _p, ...withoutPayload } = msg;
  tampered.push(withoutPayload);
  for (const t of tampered) assert.equal(verifySignature(t, SECRET), false, JSON.stringify(t));
  assert.equal(verifySignature(msg, 'other-secret'), false);
});

test('verifySignature: either secret of a rotation overlap is accepted', () => {
  const oldSecret = 'old-secret';
  const newSecret = 'new-secret';
  const msg = { a: 1, b: 'x' };
  const signedOld = { ...msg, signature: signMessage(msg, oldSecret) };
  const signedNew = { ...msg, signature: signMessage(msg, newSecret) };
  assert.equal(verifySignature(signedOld, [newSecret, oldSecret]), true);
  assert.equal(verifySignature(signedNew, [newSecret, oldSecret]), true);
  assert.equal(verifySignature(signedOld, [newSecret]), false);
  assert.equal(verifySignature(signedOld, oldSecret), true);
  assert.equal(verifySignature(signedOld, []), false);
});

test('verifySignature: malformed signatures and odd inputs give false, never an exception', () => {
  const msg = sampleCommand();
  const good = msg.signature;
  const cases: unknown[] = [
    good.toUpperCase(),
    good.slice(0, 63),
    `${good}0`,
    `${good.slice(0, 63)}g`,
    '',
    undefined,
    null,
    42,
    { hex: good },
    [good],
    Buffer.from(good, 'hex'),
  ];
  for (const sig of cases) {
    assert.equal(verifySignature({ ...msg, signature: sig }, SECRET), false, String(sig));
  }
  const { signature: _s, ...missing } = msg;
  assert.equal(verifySignature(missing, SECRET), false);
  assert.equal(verifySignature(msg, ''), false);
  assert.equal(verifySignature(msg, ['']), false);
  assert.equal(verifySignature(msg, [42 as unknown as string]), false);
  assert.equal(verifySignature(null as unknown as object, SECRET), false);
  assert.equal(verifySignature('str' as unknown as object, SECRET), false);
  // A message that cannot be canonicalised (lone surrogate, NaN) is simply not verified.
  assert.equal(verifySignature({ ...msg, note: '\ud800' }, SECRET), false);
  assert.equal(verifySignature({ ...msg, n: Number.NaN }, SECRET), false);
});

test('checkClock: ±300 s window, edges included', () => {
  const now = 1_700_000_000_000;
  assert.equal(CLOCK_WINDOW_MS, 300_000);
  assert.equal(checkClock(now, now), true);
  assert.equal(checkClock(now - 300_000, now), true);
  assert.equal(checkClock(now + 300_000, now), true);
  assert.equal(checkClock(now - 300_001, now), false);
  assert.equal(checkClock(now + 300_001, now), false);
  assert.equal(checkClock(now + 1_000, now, 1_000), true);
  assert.equal(checkClock(now + 1_001, now, 1_000), false);
  assert.equal(checkClock(Number.NaN, now), false);
  assert.equal(checkClock(now, Number.POSITIVE_INFINITY), false);
});

test('ReplayCache: second sighting is a replay, and seeing it again does not refresh it', () => {
  const cache = new ReplayCache({ ttlMs: 1_000 });
  assert.equal(cache.seen('a', 0), false);
  assert.equal(cache.seen('a', 10), true);
  assert.equal(cache.seen('a', 999), true); // does not push the expiry out
  assert.equal(cache.seen('a', 1_000), false); // expired at first-seen + ttl, recorded again
  assert.equal(cache.seen('a', 1_500), true);
  assert.equal(cache.size, 1);
});

test('ReplayCache: expired ids are evicted', () => {
  const cache = new ReplayCache({ ttlMs: 100 });
  for (let i = 0; i < 10; i++) cache.seen(`id-${i}`, i);
  assert.equal(cache.size, 10);
  cache.seen('late', 105); // ids seen at 0..5 expired (expiry ≤ 105)
  assert.equal(cache.size, 5);
  assert.equal(cache.seen('id-9', 106), true);
  assert.equal(cache.seen('id-0', 106), false);
});

test('ReplayCache: beyond maxEntries the oldest ids are forgotten first', () => {
  const cache = new ReplayCache({ ttlMs: 60_000, maxEntries: 3 });
  for (const id of ['a', 'b', 'c', 'd']) assert.equal(cache.seen(id, 0), false);
  assert.equal(cache.size, 3);
  assert.equal(cache.seen('d', 1), true);
  assert.equal(cache.seen('c', 1), true);
  assert.equal(cache.seen('b', 1), true);
  assert.equal(cache.seen('a', 1), false); // evicted, so new again (and now 'b' is the oldest)
  assert.equal(cache.size, 3);
  assert.equal(cache.seen('b', 1), false);
});

test('ReplayCache: defaults and a clock that steps back', () => {
  const cache = new ReplayCache();
  assert.equal(cache.ttlMs, 600_000);
  assert.equal(cache.maxEntries, 100_000);
  const c = new ReplayCache({ ttlMs: 100 });
  c.seen('x', 1_000); // expires 1100
  c.seen('y', 500); // clock stepped back: expires 600 but sits behind x
  assert.equal(c.seen('y', 700), false); // expired although not at the front
  assert.equal(c.seen('y', 701), true);
  assert.throws(() => new ReplayCache({ ttlMs: 0 }), RangeError);
  assert.throws(() => new ReplayCache({ maxEntries: 0 }), RangeError);
});

test('ReplayCache: an id recorded again keeps its new entry when its old one is evicted; size stays bounded', () => {
  const c = new ReplayCache({ ttlMs: 100, maxEntries: 3 });
  c.seen('a', 1_000); // expires 1100
  c.seen('b', 1_050);
  assert.equal(c.seen('a', 1_100), false); // expired at 1100: recorded again, until 1200
  assert.equal(c.seen('a', 1_120), true); // the first entry's eviction did not take the new one
  for (let i = 0; i < 10_000; i++) c.seen(`flood-${i}`, 1_130);
  assert.equal(c.size, 3);
  assert.equal(c.seen('flood-9999', 1_131), true);
  assert.equal(c.seen('b', 1_131), false); // forgotten under the cap, oldest first
});

test('ReplayCache: growing after its front moved keeps arrival order', () => {
  const c = new ReplayCache({ ttlMs: 100, maxEntries: 1_000 });
  for (let i = 0; i < 40; i++) c.seen(`a${i}`, 0);
  for (let i = 0; i < 24; i++) c.seen(`b${i}`, 50); // the ring's first 64 slots are full
  for (let i = 0; i < 60; i++) c.seen(`c${i}`, 100); // the a's expire, the c's wrap around, then it grows
  assert.equal(c.size, 84);
  c.seen('d', 150); // the b's expire: they are the oldest after the growth
  assert.equal(c.size, 61);
  assert.equal(c.seen('c0', 150), true);
  assert.equal(c.seen('b0', 150), false);
});

/** The cache's contract in its plainest form: every id with its expiry, in arrival order. */
class ReplayModel {
  private entries: Array<{ id: string; until: number }> = [];
  constructor(
    private readonly ttl: number,
    private readonly max: number,
  ) {}
  seen(id: string, now: number): boolean {
    this.entries = this.entries.filter((e) => e.until > now);
    if (this.entries.some((e) => e.id === id)) return true;
    this.entries.push({ id, until: now + this.ttl });
    if (this.entries.length > this.max) this.entries.shift();
    return false;
  }
  get size(): number {
    return this.entries.length;
  }
}

test('ReplayCache: agrees with the plain model through growth, wrap-around, expiry and eviction', () => {
  fc.assert(
    fc.property(
      fc.integer({ min: 1, max: 300 }),
      fc.integer({ min: 1, max: 200 }),
      // bursts of ids at one time, time moving between them: the ring fills, its front moves as
      // ids expire, and it grows again after wrapping around
      fc.array(
        fc.tuple(fc.integer({ min: 0, max: 120 }), fc.array(fc.integer({ min: 0, max: 400 }), { maxLength: 150 })),
        {
          maxLength: 40,
        },
      ),
      (max, ttl, bursts) => {
        const cache = new ReplayCache({ ttlMs: ttl, maxEntries: max });
        const model = new ReplayModel(ttl, max);
        let now = 0;
        for (const [advance, ids] of bursts) {
          now += advance;
          for (const id of ids) {
            assert.equal(cache.seen(`id-${id}`, now), model.seen(`id-${id}`, now), `id-${id} at ${now}`);
            assert.ok(cache.size <= max);
          }
        }
        // has() records nothing and agrees with what seen() would say
        for (let id = 0; id <= 400; id += 7) {
          const had = cache.has(`id-${id}`, now);
          assert.equal(had, model.seen(`id-${id}`, now));
          if (!had) cache.seen(`id-${id}`, now);
        }
        assert.equal(cache.size, model.size);
      },
    ),
    { numRuns: 200 },
  );
});

test('verifyInbound: signature first, then clock, then replay', () => {
  const now = 1_700_000_000_000;
  const good = sampleCommand({ timestamp: now });
  const replay = new ReplayCache();

  // Bad signature AND stale clock: the signature is reported, and the id is not recorded.
  const forgedStale = { ...good, timestamp: now - 400_000 };
  let r = verifyInbound(forgedStale, SECRET, replay, now);
  assert.ok(!r.ok && r.code === 'PROTO_ERR_SIGNATURE', JSON.stringify(r));
  assert.equal(replay.size, 0);

  const unsigned = { ...good, signature: undefined };
  r = verifyInbound(unsigned, SECRET, replay, now);
  assert.ok(!r.ok && r.code === 'PROTO_ERR_SIGNATURE' && /missing/.test(r.reason));
  r = verifyInbound({ ...good, signature: good.signature.toUpperCase() }, SECRET, replay, now);
  assert.ok(!r.ok && r.code === 'PROTO_ERR_SIGNATURE' && /malformed/.test(r.reason));

  // Correctly signed but outside the window: clock, not recorded.
  const stale = sampleCommand({ timestamp: now - 300_001 });
  r = verifyInbound(stale, SECRET, replay, now);
  assert.ok(!r.ok && r.code === 'PROTO_ERR_CLOCK', JSON.stringify(r));
  assert.equal(replay.size, 0);
  // Same id, still stale: clock again (not replay), because it was never recorded.
  r = verifyInbound(stale, SECRET, replay, now);
  assert.ok(!r.ok && r.code === 'PROTO_ERR_CLOCK');

  // Genuine message passes once, then is a replay.
  assert.deepEqual(verifyInbound(good, [SECRET], replay, now), { ok: true });
  assert.equal(replay.size, 1);
  r = verifyInbound(good, SECRET, replay, now + 1);
  assert.ok(!r.ok && r.code === 'PROTO_ERR_REPLAY' && r.reason.includes(good.message_id));

  // A forged copy of an already-seen id is a signature failure, not a replay.
  const forged = { ...good, payload: {} };
  r = verifyInbound(forged, SECRET, replay, now);
  assert.ok(!r.ok && r.code === 'PROTO_ERR_SIGNATURE');

  // Custom window.
  const skewed = sampleCommand({ timestamp: now + 2_000, message_id: '9f1c2a4e-8b7d-4c6e-9a1b-2d3e4f5a6b7c' });
  r = verifyInbound(skewed, SECRET, replay, now, 1_000);
  assert.ok(!r.ok && r.code === 'PROTO_ERR_CLOCK');
  assert.deepEqual(verifyInbound(skewed, SECRET, replay, now, 2_000), { ok: true });
});
