/**
 * Message signing for the MQTT wire protocol (docs/wire-protocol.md#signing): lowercase hex HMAC-SHA256 with the
 * project's secret over the RFC 8785 (JCS) canonical JSON of the message object without its
 * `signature` field. Receivers reject a bad signature, a timestamp outside ±300 s of their clock,
 * and a `message_id` already seen; `verifyInbound` applies the three checks in that order.
 *
 * @example
 *   const msg = { message_id, type: 'command', project_id: 'p1', timestamp: Date.now(), version: '1.0', ... };
 *   const signed = { ...msg, signature: signMessage(msg, secret) };
 *   verifyInbound(signed, [secret, previousSecret], replayCache, Date.now()); // { ok: true }
 */
import { createHmac, randomBytes, timingSafeEqual } from 'node:crypto';
import { configure } from 'safe-stable-stringify';

/** docs/wire-protocol.md#timestamps-and-the-clock-window: receivers accept timestamps within ±300 s of their own clock. */
export const CLOCK_WINDOW_MS = 300_000;

const SIGNATURE_RE = /^[0-9a-f]{64}$/;

/**
 * Parsing may hand consumers a normalised view of a message (defaults filled in, `__proto__`
 * keys dropped). The signature covers what the sender signed, i.e. the object decoded from the
 * wire, so protocol.ts records that object here and `verifySignature(view)` checks it instead.
 * A WeakMap keeps the view a plain JSON object (nothing extra on it) and frees the source with it.
 * The binding does not survive a copy (spread, structuredClone): verify before copying.
 */
const signedSources = new WeakMap<object, object>();

/** Records that `view` was decoded from `source`, so signature checks on `view` use `source`. */
export function bindSignedSource(view: object, source: object): void {
  signedSources.set(view, source);
}

/**
 * The text a message was parsed from, when it ends with its signature member (as `wireText`
 * writes it) and its other keys are in canonical order: the parser returns it beside the message
 * (protocol/parse.ts `sent`), and the signature check takes it (`checkSignature(msg, secrets,
 * sent)`) to check the bytes as sent (`signedAsSent`) instead of building the canonical text
 * again. It names the object it was parsed into: given with another message, it is not used.
 */
export interface SentText {
  /** The signed source of the message (what `JSON.parse(text)` gave). */
  readonly source: object;
  readonly text: Uint8Array | string;
}

const TAIL_OPENING = ',"signature":"';
const TAIL_LENGTH = TAIL_OPENING.length + 64 + 2;
const QUOTE = 34;
const CLOSE = 125;
const CLOSING_BRACE = Buffer.from('}');

function codeAt(text: Uint8Array | string, i: number): number {
  return typeof text === 'string' ? text.charCodeAt(i) : (text[i] ?? -1);
}

/** True when `text` ends with a signature member: `,"signature":"` + 64 characters + `"}`. */
function endsWithSignatureMember(text: Uint8Array | string): boolean {
  const n = text.length;
  if (n <= TAIL_LENGTH || codeAt(text, n - 1) !== CLOSE || codeAt(text, n - 2) !== QUOTE) return false;
  const from = n - TAIL_LENGTH;
  for (let i = 0; i < TAIL_OPENING.length; i++) if (codeAt(text, from + i) !== TAIL_OPENING.charCodeAt(i)) return false;
  return true;
}

/**
 * The parser's record that the message `view` was parsed from `text` (`view` is the parsed object
 * or a reading of it bound by `bindSignedSource`): undefined unless the text ends with its
 * signature member and its other keys are in canonical order (JSON.stringify of an envelope is
 * checked the canonical way at once, no HMAC tried first).
 */
export function sentText(view: object, text: Uint8Array | string): SentText | undefined {
  if (!endsWithSignatureMember(text)) return undefined;
  const source = signedSources.get(view) ?? view;
  return keysInCanonicalOrder(source) ? { source, text } : undefined;
}

/**
 * Sorted-key JSON without whitespace, throwing on values JSON cannot carry. For the values JSON
 * can carry this is RFC 8785: ECMAScript number formatting and UTF-16 code-unit key order are
 * what JSON.stringify and JavaScript's string comparison give. safe-stable-stringify (pino's own
 * serializer) rather than the `canonicalize` package: the same text (a fast-check property in
 * test/modules/shared/signing.property.test.ts holds it against `canonicalize`) in a third of the
 * time (10 → 4 µs for a heartbeat), and every uplink is canonicalised to be verified: it was a
 * tenth of the hub's CPU in bench `heartbeat`.
 */
const sortedJson = configure({ deterministic: true, strict: true, bigint: false, circularValue: TypeError });

/**
 * A lone surrogate comes out of JSON.stringify (and so sortedJson) as a `\udXXX` escape (a pair
 * stays literal; other escapes are \u00XX): such an escape not itself escaped (preceded by an
 * even number of backslashes) means the value held one. RFC 8785 text has none (§3.2.2.2).
 */
function hasLoneSurrogateEscape(json: string): boolean {
  for (let i = json.indexOf('\\ud'); i !== -1; i = json.indexOf('\\ud', i + 1)) {
    let backslashes = 0;
    for (let j = i - 1; j >= 0 && json.charCodeAt(j) === 92; j--) backslashes++;
    if (backslashes % 2 === 1) continue; // the backslash at i is itself escaped: text, not an escape
    const c = json.charCodeAt(i + 3);
    if ((c >= 0x38 && c <= 0x39) || (c >= 0x61 && c <= 0x66)) return true; // 8 9 a-f: D800-DFFF
  }
  return false;
}

/**
 * RFC 8785 (JCS) canonical JSON: keys sorted by UTF-16 code units (§3.2.3), ECMAScript number
 * formatting (§3.2.2.3), no whitespace. Throws a TypeError for values JSON cannot carry
 * (NaN, ±Infinity, lone surrogates, cycles, functions, a bare `undefined`).
 *
 * @example canonicalJson({ b: 1e21, a: 'x' }) === '{"a":"x","b":1e+21}'
 */
export function canonicalJson(value: unknown): string {
  let out: string | undefined;
  try {
    out = sortedJson(value);
  } catch (err) {
    throw new TypeError(`value cannot be canonicalised (RFC 8785): ${(err as Error).message}`, { cause: err });
  }
  if (typeof out !== 'string') throw new TypeError('value has no JSON representation (RFC 8785)');
  if (hasLoneSurrogateEscape(out)) throw new TypeError('value cannot be canonicalised (RFC 8785): a lone surrogate');
  return out;
}

/** The message object minus its `signature` field (docs/wire-protocol.md#signing). Spread keeps an own `__proto__` key as data. */
function withoutSignature(msg: object): Record<string, unknown> {
  const { signature: _omit, ...rest } = msg as Record<string, unknown>;
  return rest;
}

function hmacHex(secret: string, canonical: string): string {
  return createHmac('sha256', secret).update(canonical, 'utf8').digest('hex');
}

/**
 * The text a sender writes for a signed message whose canonical text (without `signature`) is
 * `canonical`: that text with the signature member added last. Any receiver reads it as the
 * message; a receiver of this hub checks the signature against these bytes as they are
 * (`signedAsSent`), without building the canonical text again.
 *
 * @example wireText('{"a":1}', sig) === `{"a":1,"signature":"${sig}"}`
 */
export function wireText(canonical: string, signature: string): string {
  return canonical === '{}' ? `{"signature":"${signature}"}` : `${canonical.slice(0, -1)},"signature":"${signature}"}`;
}

/**
 * `msg` (without a `signature`) signed with `secret` and written as `wireText` writes it: for a
 * sender that has the message as an object, not built by buildData (a re-signed stored command).
 * Throws like signMessage.
 */
export function signedWireText(msg: object, secret: string): string {
  const canonical = canonicalJson(msg);
  return wireText(canonical, signCanonical(canonical, secret));
}

/**
 * The canonical text each signed message was signed over, recorded where it is built
 * (protocol/build.ts), so `toWire` writes it without walking the message again.
 */
const signedTexts = new WeakMap<object, string>();

/** Records that `signed` (a message with its `signature`) was signed over `canonical`. */
export function bindCanonicalText(signed: object, canonical: string): void {
  signedTexts.set(signed, canonical);
}

/**
 * A message as wire text: for a message built and signed here (buildData, buildCommand), its
 * canonical text with the signature added last (`wireText`), which its receiver verifies as sent
 * (what was signed: a later change to the object is not written, and would not have matched its
 * signature anyway); anything else as JSON.stringify writes it.
 */
export function toWire(msg: object): string {
  const canonical = signedTexts.get(msg);
  const signature = (msg as { signature?: unknown }).signature;
  return canonical !== undefined && typeof signature === 'string'
    ? wireText(canonical, signature)
    : JSON.stringify(msg);
}

/** True when `source`'s keys, `signature` aside, are in canonical order (UTF-16 code units). */
function keysInCanonicalOrder(source: object): boolean {
  let previous: string | undefined;
  // for-in, not Object.keys: no array per message (a parsed object has nothing enumerable inherited)
  for (const key in source) {
    if (key === 'signature') continue;
    if (previous !== undefined && key <= previous) return false;
    previous = key;
  }
  return true;
}

/**
 * The signature checked against the text as sent, which ends with its signature member
 * (`endsWithSignatureMember`): the HMAC of the text without that member, i.e. of the text before
 * `,"signature":"…"` and the closing `}`. A sender that writes the text it signed with the
 * signature added last (`wireText`: this hub, its agent) is verified without building the
 * canonical text again, which was a tenth of the hub's CPU per heartbeat (bench `heartbeat`).
 *
 * Why a match is as good as the canonical check: the last `}` of a JSON text closes its top-level
 * object, and the `"…"` before it can only be the 64-character string value (no quote or escape in
 * it) of a key `"signature"` that follows a comma: so the text ends with the top-level object's
 * last member, its signature (JSON.parse keeps the last of duplicate keys: the one we read), and
 * the text without it parses to the message without its signature. A match means the key holder
 * signed exactly those bytes: what the hub acts on. Unlike the canonical check, a key holder's
 * non-canonical text (other escapes) is accepted too: it is still the key holder's. No match is
 * not a refusal: the caller checks the canonical text next.
 */
function signedAsSent(text: Uint8Array | string, given: string, givenBytes: Buffer, secrets: readonly string[]) {
  const cut = text.length - TAIL_LENGTH;
  const value = cut + TAIL_OPENING.length;
  // the member read is the parsed signature (it is, for the text this message was parsed from)
  for (let i = 0; i < 64; i++) if (codeAt(text, value + i) !== given.charCodeAt(i)) return false;
  let match = false;
  // every secret, no early exit (as verifySignature)
  for (const secret of secrets) {
    const hmac = createHmac('sha256', secret);
    if (typeof text === 'string') hmac.update(text.slice(0, cut), 'utf8').update('}');
    else hmac.update(text.subarray(0, cut)).update(CLOSING_BRACE);
    if (timingSafeEqual(hmac.digest(), givenBytes)) match = true;
  }
  return match;
}

/**
 * Lowercase hex HMAC-SHA256 over `canonicalJson(msg without 'signature')` (docs/wire-protocol.md#signing).
 * Throws a TypeError for an empty secret or a message JSON cannot carry.
 *
 * @example const signature = signMessage({ message_id, type: 'command', ... }, 'project-secret');
 */
export function signMessage(msg: object, secret: string): string {
  return signCanonical(canonicalJson(withoutSignature(msg)), secret);
}

/**
 * The signature of a message whose canonical text (without `signature`) the caller already has:
 * signMessage without walking the message again. Throws a TypeError for an empty secret.
 */
export function signCanonical(canonical: string, secret: string): string {
  if (typeof secret !== 'string' || secret.length === 0) throw new TypeError('secret must be a non-empty string');
  return hmacHex(secret, canonical);
}

/**
 * True when `msg.signature` is the HMAC of the message under any of `secrets` (several during a
 * secret rotation). Compared in constant time. False, never an exception, for a missing or
 * malformed signature (must be 64 lowercase hex characters), a message that cannot be
 * canonicalised, or no usable secret. Empty secrets never match. `msg` is any object with (or
 * without) a `signature` field.
 */
export function verifySignature(msg: object, secrets: string | readonly string[], sent?: SentText): boolean {
  return checkSignature(msg, secrets, sent) !== null;
}

/**
 * What matched a valid signature: the text as sent (`as_sent`: the sender wrote its signed
 * text with the signature added, see `wireText`) or a canonical text built from the parsed
 * message (`canonical`: another key order or spacing, or no text bound). Null when it is not
 * valid; the rules are `verifySignature`'s.
 */
export type SignatureMatch = 'as_sent' | 'canonical' | null;

export function checkSignature(msg: object, secrets: string | readonly string[], sent?: SentText): SignatureMatch {
  try {
    if (msg === null || typeof msg !== 'object') return null;
    const source = signedSources.get(msg) ?? msg;
    const given = (source as { signature?: unknown }).signature;
    if (typeof given !== 'string' || !SIGNATURE_RE.test(given)) return null;
    const usable = usableSecrets(secrets);
    if (usable.length === 0) return null;
    // decoded into one reused buffer: nothing here keeps it past this call, and nothing runs between
    const givenBytes = GIVEN_BYTES;
    givenBytes.write(given, 'hex');
    if (sent !== undefined && sent.source === source && signedAsSent(sent.text, given, givenBytes, usable))
      return 'as_sent';
    const canonical = canonicalJson(withoutSignature(source));
    let match = false;
    // Check every secret (no early exit) so timing does not reveal which one matched.
    for (const secret of usable) {
      const expected = createHmac('sha256', secret).update(canonical, 'utf8').digest();
      if (timingSafeEqual(expected, givenBytes)) match = true;
    }
    return match ? 'canonical' : null;
  } catch {
    return null;
  }
}

/** The 32 bytes of the signature being checked (checkSignature). */
const GIVEN_BYTES = Buffer.alloc(32);

/**
 * The non-empty string secrets of `secrets`: the list itself when all of them are (a project's
 * one or two secrets, every uplink), so no array is made per message.
 */
function usableSecrets(secrets: string | readonly string[]): readonly string[] {
  if (typeof secrets === 'string') return secrets.length > 0 ? [secrets] : [];
  if (!Array.isArray(secrets)) return [];
  return secrets.every(isUsableSecret) ? secrets : secrets.filter(isUsableSecret);
}

const isUsableSecret = (s: unknown): s is string => typeof s === 'string' && s.length > 0;

/**
 * docs/wire-protocol.md#timestamps-and-the-clock-window: a timestamp is acceptable when it is within ±windowMs of the receiver's clock,
 * edges included (exactly 300 000 ms off is accepted, 300 001 is not).
 */
export function checkClock(timestampMs: number, nowMs: number, windowMs: number = CLOCK_WINDOW_MS): boolean {
  if (!Number.isFinite(timestampMs) || !Number.isFinite(nowMs)) return false;
  return Math.abs(timestampMs - nowMs) <= windowMs;
}

/**
 * Remembers message ids for `ttlMs` so a redelivered or replayed message is detected (docs/wire-protocol.md#replay).
 * The default TTL (600 s) covers the whole ±300 s clock window: a message whose timestamp is
 * 300 s ahead stays acceptable for at most 600 s after it is first seen. Memory is bounded by
 * `maxEntries`; past it the oldest ids are forgotten first (a trade-off: under a flood an old id
 * could be accepted again; size the cap above the expected message rate × TTL).
 *
 * An id is kept as a 64-bit keyed hash of it, not as its string: a hub remembers up to 100 000
 * ids (its heartbeats and data alone fill the cache), and as strings in a Map each cost about
 * 150 bytes of live heap that every full collection marks (15 MB at 100 000 projects, bench
 * `heartbeat`); here 24 bytes in typed arrays the collector never walks. Two different ids share
 * a hash with a probability of about 2^-64 each time one is checked against 100 000 (5 in 10^15,
 * and the key is random per process, so nobody can choose ids that collide): the later one would
 * be refused as a replay.
 *
 * Arrival order is kept in a ring (hash halves and expiry per slot), so expiry and eviction pop
 * from its front in O(1); an open-addressed index (linear probing, a slot number + 1 per cell,
 * at most half full) finds an id's slot. The ring holds exactly the ids the index does, plus
 * older copies of ids recorded again (skipped when they reach the front). Both grow by doubling
 * up to `maxEntries`, so a cache that sees few ids stays small.
 *
 * @example
 *   const replay = new ReplayCache();
 *   replay.seen(msg.message_id); // false: first time, now recorded
 *   replay.seen(msg.message_id); // true: a replay
 */
export class ReplayCache {
  readonly ttlMs: number;
  readonly maxEntries: number;
  /** The ring: from `head` on, `count` slots in arrival order, each an id's hash and the expiry it was recorded with. */
  private hashHi = new Int32Array(0);
  private hashLo = new Int32Array(0);
  private until = new Float64Array(0);
  private head = 0;
  private count = 0;
  /** The index: per cell 0 (empty) or a ring slot + 1; its length a power of two, at least twice the ring's. */
  private cells = new Int32Array(0);
  private live = 0;

  constructor(opts: { ttlMs?: number; maxEntries?: number } = {}) {
    this.ttlMs = opts.ttlMs ?? 600_000;
    this.maxEntries = opts.maxEntries ?? 100_000;
    if (!(this.ttlMs > 0)) throw new RangeError('ttlMs must be > 0');
    if (!(Number.isInteger(this.maxEntries) && this.maxEntries > 0))
      throw new RangeError('maxEntries must be an integer > 0');
    this.clear();
  }

  /** How many ids are remembered right now (expired ids may linger until the next `seen`). */
  get size(): number {
    return this.live;
  }

  /**
   * True if `messageId` was seen within the TTL (the entry is not refreshed). Otherwise records
   * it and returns false.
   */
  seen(messageId: string, nowMs: number = Date.now()): boolean {
    this.evictExpired(nowMs);
    hashId(messageId);
    const hi = idHash[0];
    const lo = idHash[1];
    const cell = this.find(hi, lo);
    if (cell >= 0) {
      if (this.until[this.cells[cell] - 1] > nowMs) return true;
      // Expired but not yet at the front (clock stepped back earlier): forget it and re-record.
      // Its old slot is skipped when it reaches the front (popOldest).
      this.unindex(cell);
    }
    if (this.count === this.until.length && !this.grow()) this.popOldest();
    const at = (this.head + this.count) % this.until.length;
    this.hashHi[at] = hi;
    this.hashLo[at] = lo;
    this.until[at] = nowMs + this.ttlMs;
    this.count++;
    this.index(at);
    return false;
  }

  /** True if `messageId` was seen within the TTL; records nothing (see `seen` to record). */
  has(messageId: string, nowMs: number = Date.now()): boolean {
    hashId(messageId);
    const cell = this.find(idHash[0], idHash[1]);
    return cell >= 0 && this.until[this.cells[cell] - 1] > nowMs;
  }

  /** Forgets everything. */
  clear(): void {
    const size = Math.min(RING_START, this.maxEntries);
    this.hashHi = new Int32Array(size);
    this.hashLo = new Int32Array(size);
    this.until = new Float64Array(size);
    this.cells = new Int32Array(cellsFor(size));
    this.head = 0;
    this.count = 0;
    this.live = 0;
  }

  /** The cell holding the slot of the id whose hash halves are `hi` and `lo`, or -1. */
  private find(hi: number, lo: number): number {
    const cells = this.cells;
    const mask = cells.length - 1;
    for (let c = lo & mask; ; c = (c + 1) & mask) {
      const ref = cells[c];
      if (ref === 0) return -1;
      if (this.hashLo[ref - 1] === lo && this.hashHi[ref - 1] === hi) return c;
    }
  }

  /** Indexes ring slot `at` by its hash (not indexed yet). */
  private index(at: number): void {
    const cells = this.cells;
    const mask = cells.length - 1;
    let c = this.hashLo[at] & mask;
    while (cells[c] !== 0) c = (c + 1) & mask;
    cells[c] = at + 1;
    this.live++;
  }

  /** Empties `cell`, moving later cells of its probe run back so every lookup still finds them. */
  private unindex(cell: number): void {
    const cells = this.cells;
    const mask = cells.length - 1;
    let hole = cell;
    for (let c = (cell + 1) & mask; cells[c] !== 0; c = (c + 1) & mask) {
      const home = this.hashLo[cells[c] - 1] & mask;
      // the entry at c may move into the hole unless its home lies cyclically in (hole, c]
      const stays = hole <= c ? hole < home && home <= c : hole < home || home <= c;
      if (stays) continue;
      cells[hole] = cells[c];
      hole = c;
    }
    cells[hole] = 0;
    this.live--;
  }

  private evictExpired(nowMs: number): void {
    while (this.count > 0 && this.until[this.head] <= nowMs) this.popOldest();
  }

  private popOldest(): void {
    const at = this.head;
    // an id recorded again later has a newer slot: only its own cell goes
    const cell = this.find(this.hashHi[at], this.hashLo[at]);
    if (cell >= 0 && this.cells[cell] === at + 1) this.unindex(cell);
    this.head = (this.head + 1) % this.until.length;
    this.count--;
  }

  /** Doubles the ring (up to maxEntries), oldest first at slot 0, and indexes it again; false when it is at its size. */
  private grow(): boolean {
    const size = this.until.length;
    if (size >= this.maxEntries) return false;
    const next = Math.min(this.maxEntries, size * 2);
    const hashHi = new Int32Array(next);
    const hashLo = new Int32Array(next);
    const until = new Float64Array(next);
    // which slots are indexed (an id recorded again has an older copy that is not)
    const indexed = new Uint8Array(size);
    for (const ref of this.cells) if (ref !== 0) indexed[ref - 1] = 1;
    const keep: number[] = [];
    for (let i = 0; i < this.count; i++) {
      const from = (this.head + i) % size;
      hashHi[i] = this.hashHi[from];
      hashLo[i] = this.hashLo[from];
      until[i] = this.until[from];
      if (indexed[from] === 1) keep.push(i);
    }
    this.hashHi = hashHi;
    this.hashLo = hashLo;
    this.until = until;
    this.head = 0;
    this.cells = new Int32Array(cellsFor(next));
    this.live = 0;
    for (const at of keep) this.index(at);
    return true;
  }
}

/** The ring's first size (ReplayCache): doubled as ids arrive. */
const RING_START = 64;
/** The index's length for a ring of `size` slots: a power of two, at least twice as many cells. */
const cellsFor = (size: number): number => 2 ** Math.ceil(Math.log2(2 * size));
/**
 * An id's 64-bit hash, keyed per process, in one pass: FNV-1a and a multiplicative hash, each
 * finished by murmur3's mixer, written to `idHash` (hi, lo) for the caller to read at once (two
 * numbers without an object each time; two passes cost half as much again).
 */
const idHash = new Int32Array(2);
function hashId(key: string): void {
  let a = HASH_KEY_A;
  let b = HASH_KEY_B;
  for (let i = 0; i < key.length; i++) {
    const c = key.charCodeAt(i);
    a = Math.imul(a ^ c, 0x01000193);
    b = Math.imul(b + c, 0x5bd1e995);
    b ^= b >>> 13;
  }
  idHash[0] = fmix32(a ^ key.length);
  idHash[1] = fmix32(b);
}
/** murmur3's 32-bit finalizer: every input bit moves every output bit. */
function fmix32(h: number): number {
  let x = h ^ (h >>> 16);
  x = Math.imul(x, 0x85ebca6b);
  x ^= x >>> 13;
  x = Math.imul(x, 0xc2b2ae35);
  return x ^ (x >>> 16);
}
/** ReplayCache's hash keys, random per process: which ids collide cannot be known outside it. */
const HASH_KEY_A = randomBytes(4).readInt32LE(0);
const HASH_KEY_B = randomBytes(4).readInt32LE(0);

export type VerifyOutcome =
  | { ok: true }
  | { ok: false; code: 'PROTO_ERR_SIGNATURE' | 'PROTO_ERR_CLOCK' | 'PROTO_ERR_REPLAY'; reason: string };

/**
 * The receiver's three checks (docs/wire-protocol.md#signing), in this order: signature, clock window, replay. A
 * message id is recorded in the replay cache only when the signature and the clock passed, so a
 * forged or stale copy cannot block the genuine message. `sent`: the parser's `sent` for this
 * message (the signature is checked against the text as sent first).
 *
 * @example
 *   const r = parseUplink(topic, payload);
 *   if (r.ok) {
 *     const v = verifyInbound(r.value.msg, secretsFor(r.value.msg.project_id), replay, Date.now(), CLOCK_WINDOW_MS, r.value.sent);
 *     if (!v.ok) log.warn({ code: v.code }, v.reason);
 *   }
 */
export function verifyInbound(
  msg: { message_id: string; timestamp: number; signature?: unknown },
  secrets: string | readonly string[],
  replay: ReplayCache,
  nowMs: number,
  windowMs: number = CLOCK_WINDOW_MS,
  sent?: SentText,
): VerifyOutcome {
  if (!verifySignature(msg, secrets, sent)) {
    const source = (msg !== null && typeof msg === 'object' && signedSources.get(msg)) || msg;
    const sig = (source as { signature?: unknown } | null)?.signature;
    const reason =
      sig === undefined
        ? 'signature missing'
        : typeof sig !== 'string' || !SIGNATURE_RE.test(sig)
          ? 'signature malformed: expected 64 lowercase hex characters'
          : 'signature does not match any secret of the project';
    return { ok: false, code: 'PROTO_ERR_SIGNATURE', reason };
  }
  if (!checkClock(msg.timestamp, nowMs, windowMs)) {
    const skew = Number.isFinite(msg.timestamp) ? `${msg.timestamp - nowMs} ms` : 'not a number';
    return {
      ok: false,
      code: 'PROTO_ERR_CLOCK',
      reason: `timestamp is outside the ±${windowMs} ms window of the receiver clock (offset ${skew})`,
    };
  }
  if (replay.seen(msg.message_id, nowMs)) {
    return { ok: false, code: 'PROTO_ERR_REPLAY', reason: `message_id ${msg.message_id} was already seen` };
  }
  return { ok: true };
}
