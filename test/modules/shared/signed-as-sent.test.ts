/**
 * A signature checked against the text as sent (signing.ts `signedAsSent`): the parser returns,
 * beside the message, its text when that ends with its signature member (`sentText`), and a text
 * written as signed (`wireText`: canonical, signature last) is verified by one HMAC of the text
 * without that member. The oracle is the canonical check alone (no text given): every text it
 * accepts is accepted, and the only texts accepted beyond it are ones the key holder signed as
 * they are.
 */
import assert from 'node:assert/strict';
import { createHmac } from 'node:crypto';
import { test } from 'node:test';
import fc from 'fast-check';
import { decode } from '../../../modules/shared/protocol/envelope.js';
import {
  buildData,
  commandDownTopic,
  parseDownlink,
  parseUplink,
  signedCommandJson,
  TOPIC_MESSAGE_UP,
  toWire,
} from '../../../modules/shared/protocol.js';
import {
  canonicalJson,
  checkSignature,
  type SentText,
  sentText,
  signedWireText,
  signMessage,
  verifySignature,
  wireText,
} from '../../../modules/shared/signing.js';

const RUNS = { numRuns: 3000 };
const SECRET = 's3cret-of-the-project';
const OTHER = 'another-projects-secret';

const hmac = (secret: string, text: string) => createHmac('sha256', secret).update(text, 'utf8').digest('hex');

/** The object `text` parses to, and its text as the parser returns it (protocol/parse.ts `sent`). */
function parsed(text: string | Buffer): { obj: Record<string, unknown>; sent: SentText | undefined } {
  const r = decode(text, undefined);
  assert.ok(r.ok, `decodes: ${String(text).slice(0, 80)}`);
  return { obj: r.value, sent: sentText(r.value, text) };
}

/** checkSignature of a parsed text, with the parser's `sent`. */
const check = (text: string | Buffer, secrets: readonly string[]) => {
  const { obj, sent } = parsed(text);
  return checkSignature(obj, secrets, sent);
};

/** The canonical check alone: an unbound copy has no text to be checked against. */
const oracle = (obj: Record<string, unknown>, secrets: readonly string[]) => verifySignature({ ...obj }, secrets);

/** Strings that look like the member, escape it, or break JSON's quoting. */
const trickyText = fc.oneof(
  fc.string({ maxLength: 20 }),
  fc.constantFrom('"signature":"', '\\"signature\\":\\"', ',"signature":"0"}', '{', '}', ',', '\\', 'é', '\u2028'),
);
const jsonValue = fc.letrec((tie) => ({
  value: fc.oneof(
    { maxDepth: 3 },
    trickyText,
    fc.integer(),
    fc.double({ noNaN: true, noDefaultInfinity: true }),
    fc.boolean(),
    fc.constant(null),
    fc.array(tie('value'), { maxLength: 4 }),
    fc.dictionary(fc.oneof(trickyText, fc.constant('signature')), tie('value'), { maxKeys: 4 }),
  ),
})).value;

const message = fc.record({
  message_id: fc.uuid(),
  type: fc.constant('message'),
  project_id: fc.constantFrom('plant-7', 'p'),
  timestamp: fc.integer({ min: 0, max: 2 ** 45 }),
  version: fc.constant('1.0'),
  data_type: fc.constantFrom('heartbeat', 'monitor', 'x'),
  payload: jsonValue,
  encrypted: fc.boolean(),
});

/** The ways a sender may write a signed message. */
type Writing = 'as_signed' | 'envelope_order' | 'signature_first' | 'spaced' | 'as_signed_bytes';
const writings: Writing[] = ['as_signed', 'envelope_order', 'signature_first', 'spaced', 'as_signed_bytes'];

function write(msg: Record<string, unknown>, signature: string, how: Writing): string | Buffer {
  const canonical = canonicalJson(msg);
  switch (how) {
    case 'as_signed':
      return wireText(canonical, signature);
    case 'as_signed_bytes':
      return Buffer.from(wireText(canonical, signature));
    case 'envelope_order':
      return JSON.stringify({ ...msg, signature });
    case 'signature_first':
      return JSON.stringify({ signature, ...msg });
    case 'spaced':
      return JSON.stringify({ ...msg, signature }, null, 1);
  }
}

test('every writing of a signed message: accepted exactly when the canonical check accepts it, as sent when written as signed', () => {
  fc.assert(
    fc.property(
      message,
      fc.constantFrom(...writings),
      fc.constantFrom<string[]>([SECRET], [OTHER, SECRET], [OTHER]),
      (msg, how, secrets) => {
        const signature = hmac(SECRET, canonicalJson(msg));
        const { obj, sent } = parsed(write(msg, signature, how));
        const matched = checkSignature(obj, secrets, sent);
        assert.equal(matched !== null, oracle(obj, secrets));
        const valid = secrets.includes(SECRET);
        assert.equal(matched !== null, valid);
        // the generated envelope's keys are not in canonical order: only a text written as signed is checked as sent
        assert.equal(sent !== undefined, how.startsWith('as_signed'), how);
        if (valid) assert.equal(matched, how.startsWith('as_signed') ? 'as_sent' : 'canonical', how);
        // given with another message (a copy), the text is not used
        if (valid && sent) assert.equal(checkSignature({ ...obj }, secrets, sent), 'canonical');
      },
    ),
    RUNS,
  );
});

test('a text changed anywhere after signing is refused, whichever check reads it', () => {
  fc.assert(
    fc.property(message, fc.nat(), fc.integer({ min: 32, max: 126 }), (msg, at, code) => {
      const text = wireText(canonicalJson(msg), hmac(SECRET, canonicalJson(msg)));
      const i = at % text.length;
      const changed = text.slice(0, i) + String.fromCharCode(code) + text.slice(i + 1);
      const r = decode(changed, undefined);
      fc.pre(r.ok && changed !== text);
      if (!r.ok) return;
      // the same object (e.g. whitespace, or a digit in the signature's own hex): the oracle says what is valid
      assert.equal(check(changed, [SECRET]) !== null, oracle(r.value, [SECRET]));
    }),
    RUNS,
  );
});

test('a nested copy of the signature member is part of what was signed: added after signing, it is refused', () => {
  const msg = { data_type: 'heartbeat', message_id: 'm', payload: { cpu: 1 }, project_id: 'p', type: 'message' };
  const canonical = canonicalJson(msg);
  const signature = hmac(SECRET, canonical);
  // the signed text with a nested member of the same value added ahead of the top-level one
  const forged = `${canonical.replace('{"cpu":1}', `{"cpu":1,"signature":"${signature}"}`).slice(0, -1)},"signature":"${signature}"}`;
  const { obj, sent } = parsed(forged);
  assert.deepEqual(obj.payload, { cpu: 1, signature });
  assert.ok(sent, 'it ends with its signature member, its keys in order: checked as sent first');
  assert.equal(
    checkSignature(obj, [SECRET], sent),
    null,
    'the text without its last member still holds the nested copy: not what was signed, nor is its canonical text',
  );
  // the same member only nested, the top level another value: refused
  const nestedOnly = `${canonical.replace('{"cpu":1}', `{"cpu":1,"signature":"${signature}"}`).slice(0, -1)},"signature":"${'0'.repeat(64)}"}`;
  assert.equal(check(nestedOnly, [SECRET]), null);
  // the needle inside a string value (escaped quotes) is text, not a member
  const inString = { ...msg, payload: { note: `,"signature":"${signature}"` } };
  const inStringSig = hmac(SECRET, canonicalJson(inString));
  assert.equal(check(wireText(canonicalJson(inString), inStringSig), [SECRET]), 'as_sent');
  assert.equal(check(wireText(canonicalJson(inString), signature), [SECRET]), null);
});

test('what the as-sent check accepts beyond the canonical one: the key holder’s own text, other escapes', () => {
  // sorted keys, no spaces, but é written as \u00e9: not RFC 8785 text, signed as it is by the key holder
  const text =
    '{"data_type":"heartbeat","message_id":"m","payload":{"note":"caf\\u00e9"},"project_id":"p","type":"message"}';
  const { obj, sent } = parsed(wireText(text, hmac(SECRET, text)));
  assert.equal(checkSignature(obj, [SECRET], sent), 'as_sent');
  assert.equal(
    oracle(obj, [SECRET]),
    false,
    'the canonical text has é itself, so the canonical check alone refuses it',
  );
  assert.equal(checkSignature(obj, [OTHER], sent), null, 'still only for the key holder');
});

test('signedWireText (a stored command re-signed): the message, its signMessage signature last, checked as sent', () => {
  const msg = { type: 'command', message_id: 'm', payload: { z: 1, a: [true] }, project_id: 'p', timestamp: 5 };
  const text = signedWireText(msg, SECRET);
  assert.deepEqual(JSON.parse(text), { ...msg, signature: signMessage(msg, SECRET) });
  assert.ok(text.endsWith(`,"signature":"${signMessage(msg, SECRET)}"}`));
  assert.equal(check(text, [SECRET]), 'as_sent');
});

test('wireText: the signed text with the signature last; an empty object has it alone', () => {
  const sig = 'a'.repeat(64);
  assert.equal(wireText('{"a":1}', sig), `{"a":1,"signature":"${sig}"}`);
  assert.equal(wireText('{}', sig), `{"signature":"${sig}"}`);
  // no member before it (no comma): not a message, checked the canonical way
  assert.equal(check(wireText('{}', hmac(SECRET, '{}')), [SECRET]), 'canonical');
});

test('the parsers return the text beside the message: uplinks and downlinks written as signed are checked as sent', () => {
  const heartbeat = buildData('plant-7', 'heartbeat', { metrics: { cpu: 0.5 } }, { secret: SECRET });
  for (const text of [toWire(heartbeat), Buffer.from(toWire(heartbeat))]) {
    const up = parseUplink(TOPIC_MESSAGE_UP, text);
    assert.ok(up.ok);
    assert.equal(checkSignature(up.value.msg, [SECRET], up.value.sent), 'as_sent');
  }
  // the same message in the envelope's order: the canonical check
  const envelopeOrder = parseUplink(TOPIC_MESSAGE_UP, JSON.stringify(heartbeat));
  assert.ok(envelopeOrder.ok);
  assert.equal(envelopeOrder.value.sent, undefined);
  assert.equal(checkSignature(envelopeOrder.value.msg, [SECRET]), 'canonical');

  const { json } = signedCommandJson('plant-7', 'echo', canonicalJson({ a: [1, 'x'] }), SECRET);
  const down = parseDownlink(commandDownTopic('plant-7'), Buffer.from(json));
  assert.ok(down.ok);
  assert.equal(checkSignature(down.value.msg, [SECRET], down.value.sent), 'as_sent');
  assert.equal(checkSignature(down.value.msg, [OTHER], down.value.sent), null);
});
