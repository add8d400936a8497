import assert from 'node:assert/strict';
import { test } from 'node:test';
import fc from 'fast-check';
import {
  buildCommand,
  buildData,
  commandDownTopic,
  isValidProjectId,
  messageDownTopic,
  PARSE_ERROR_CODES,
  type ParseResult,
  parseDownlink,
  parseUplink,
  signedCommandJson,
  TOPIC_COMMAND_UP,
  TOPIC_MESSAGE_UP,
} from '../../../modules/shared/protocol.js';
import { findUnsafeJson, unsafeTextProblem } from '../../../modules/shared/sanitize.js';
import { canonicalJson, signMessage, verifySignature } from '../../../modules/shared/signing.js';

const RUNS = { numRuns: 2000 };
const SECRET = 'property-secret';
const CODES = new Set<string>(PARSE_ERROR_CODES);

/** Parses must return, never throw, and failures carry a documented code and a reason. */
function checkOutcome(r: ParseResult<unknown>): void {
  assert.equal(typeof r, 'object');
  if (r.ok) return;
  assert.ok(CODES.has(r.code), `undocumented code ${r.code}`);
  assert.equal(typeof r.reason, 'string');
  assert.ok(r.reason.length > 0);
}

// --- generators of valid field values --------------------------------------------------------

/** Any text, NUL and lone surrogates included: what a command may print (output, error, log content). */
const rawText = fc.string({ unit: 'binary', maxLength: 40 });
/** Text the hub can store: everything else free-form is refused with PROTO_ERR_UNSAFE_VALUE when it is not. */
const text = rawText.filter((s) => unsafeTextProblem(s) === null);
const safeJson = <T>(arb: fc.Arbitrary<T>) => arb.filter((v) => findUnsafeJson(v) === null);
const projectId = fc.string({ unit: 'grapheme', minLength: 1, maxLength: 24 }).filter(isValidProjectId);
const ms = fc.integer({ min: 0, max: Number.MAX_SAFE_INTEGER });
const nat = fc.maxSafeNat();
const anyInt = fc.maxSafeInteger();
const uuid = fc.uuid();
const jsonRecord = safeJson(fc.dictionary(text, fc.jsonValue({ maxDepth: 2 }), { maxKeys: 5 }));
/** Extra fields agents may add: keys that cannot collide with declared ones. */
const extras = safeJson(
  fc.dictionary(
    text.map((k) => `x_${k}`),
    fc.jsonValue({ maxDepth: 2 }),
    { maxKeys: 3 },
  ),
);
const opt = <T>(arb: fc.Arbitrary<T>) => fc.option(arb, { nil: undefined });
const withExtras = <T extends object>(arb: fc.Arbitrary<T>) =>
  fc.tuple(arb, extras).map(([p, x]) => {
    const out: Record<string, unknown> = { ...x, ...p };
    for (const k of Object.keys(out)) if (out[k] === undefined) delete out[k];
    return out;
  });

const registerPayload = withExtras(
  fc.record({
    node_name: text,
    instance_id: text,
    version: text,
    pid: nat,
    start_time: ms,
    capabilities: opt(fc.array(text, { maxLength: 5 })),
    metadata: opt(jsonRecord),
    node_version: text,
  }),
);

const uplinkData: fc.Arbitrary<[string, unknown]> = fc.oneof(
  fc.tuple(
    fc.constant('register_complete'),
    fc.oneof(fc.constant(null), withExtras(fc.record({ instance_id: opt(text) }))),
  ),
  fc.tuple(
    fc.constant('heartbeat'),
    fc.oneof(
      fc.constant(null),
      withExtras(
        fc.record({
          instance_id: opt(text),
          timestamp: opt(ms),
          uptime_s: opt(fc.double({ min: 0, max: 1e12, noNaN: true })),
          metrics: opt(jsonRecord),
        }),
      ),
    ),
  ),
  fc.tuple(fc.constant('command_ack'), withExtras(fc.record({ command_id: uuid }))),
  fc.tuple(fc.constant('log_result'), withExtras(fc.record({ command_id: uuid, seq: nat, content: rawText }))),
  fc.tuple(
    fc.constant('exec_result'),
    withExtras(
      fc.record({
        command_id: uuid,
        status: fc.constantFrom('success', 'failure', 'timeout'),
        exit_code: anyInt,
        output: opt(rawText),
        error: opt(rawText),
        start_time: ms,
        end_time: ms,
        duration: nat,
      }),
    ),
  ),
  fc.tuple(fc.constant('monitor'), withExtras(fc.record({ metrics: jsonRecord }))),
  fc.tuple(
    fc.constant('alert'),
    withExtras(fc.record({ level: fc.constantFrom('info', 'warning', 'error', 'critical'), message: text })),
  ),
  fc.tuple(fc.constant('disconnect'), fc.oneof(fc.constant(null), withExtras(fc.record({ reason: opt(text) })))),
);

/** A valid uplink message as the agent would put it on the wire, with its topic. */
const validUplink: fc.Arbitrary<{ topic: string; msg: Record<string, unknown> }> = fc.oneof(
  fc.record({ pid: projectId, payload: registerPayload, id: uuid, now: ms }).map(({ pid, payload, id, now }) => ({
    topic: TOPIC_COMMAND_UP,
    msg: buildCommand(pid, 'register', payload, SECRET, { messageId: id, now }) as unknown as Record<string, unknown>,
  })),
  fc
    .record({ pid: projectId, data: uplinkData, id: uuid, now: ms, signed: fc.boolean(), encrypted: fc.boolean() })
    .map(({ pid, data: [type, payload], id, now, signed, encrypted }) => ({
      topic: TOPIC_MESSAGE_UP,
      msg: buildData(pid, type, payload, {
        messageId: id,
        now,
        encrypted,
        ...(signed ? { secret: SECRET } : {}),
      }) as unknown as Record<string, unknown>,
    })),
);

// --- mutations --------------------------------------------------------------------------------

const TOP_KEYS = [
  'message_id',
  'type',
  'project_id',
  'timestamp',
  'version',
  'command_type',
  'data_type',
  'payload',
  'encrypted',
  'signature',
  '__proto__',
];
const PAYLOAD_KEYS = ['command_id', 'status', 'exit_code', 'seq', 'content', 'metrics', 'level', 'pid', 'capabilities'];

type Mutation = (msg: Record<string, unknown>) => string | Uint8Array;
const setKey =
  (target: 'top' | 'payload', key: string, value: unknown): Mutation =>
  (msg) => {
    const copy: Record<string, unknown> = JSON.parse(JSON.stringify(msg));
    const obj = target === 'top' ? copy : copy.payload;
    if (obj !== null && typeof obj === 'object') {
      Object.defineProperty(obj, key, { value, enumerable: true, configurable: true, writable: true });
    }
    return JSON.stringify(copy);
  };
const mutation: fc.Arbitrary<Mutation> = fc.oneof(
  fc.tuple(fc.constantFrom<'top' | 'payload'>('top', 'payload'), fc.constantFrom(...TOP_KEYS, ...PAYLOAD_KEYS)).map(
    ([target, key]): Mutation =>
      (msg) => {
        const copy: Record<string, unknown> = JSON.parse(JSON.stringify(msg));
        const obj = target === 'top' ? copy : copy.payload;
        if (obj !== null && typeof obj === 'object') delete (obj as Record<string, unknown>)[key];
        return JSON.stringify(copy);
      },
  ),
  fc
    .tuple(
      fc.constantFrom<'top' | 'payload'>('top', 'payload'),
      fc.oneof(fc.constantFrom(...TOP_KEYS, ...PAYLOAD_KEYS), text),
      fc.oneof(fc.jsonValue({ maxDepth: 3 }), fc.constantFrom('1.0', 'command', 'message', 'register', 'heartbeat')),
    )
    .map(([target, key, value]) => setKey(target, key, value)),
  fc.tuple(fc.nat(), fc.integer({ min: 0, max: 255 })).map(
    ([at, byte]): Mutation =>
      (msg) => {
        const b = Buffer.from(JSON.stringify(msg));
        b[at % b.length] = byte;
        return b;
      },
  ),
  fc.nat().map(
    (at): Mutation =>
      (msg) => {
        const s = JSON.stringify(msg);
        return s.slice(0, at % s.length);
      },
  ),
  fc.tuple(fc.nat(), fc.uint8Array({ minLength: 1, maxLength: 8 })).map(
    ([at, bytes]): Mutation =>
      (msg) => {
        const b = Buffer.from(JSON.stringify(msg));
        const i = at % b.length;
        return Buffer.concat([b.subarray(0, i), bytes, b.subarray(i)]);
      },
  ),
);

const anyTopic = fc.oneof(
  fc.constantFrom(TOPIC_COMMAND_UP, TOPIC_MESSAGE_UP, commandDownTopic('p1'), messageDownTopic('p1')),
  fc.string({ maxLength: 40 }),
);

function stringifyAnything(v: unknown): string {
  try {
    return JSON.stringify(v) ?? 'undefined';
  } catch {
    return String(typeof v);
  }
}

// --- properties -------------------------------------------------------------------------------

test('parseUplink / parseDownlink never throw on arbitrary strings, bytes and JSON', () => {
  const input = fc.oneof(
    fc.string({ unit: 'binary', maxLength: 200 }),
    fc.string({ unit: 'binary', maxLength: 200 }).map((s) => s.replace(/[\ud800-\udfff]/g, '\ud800')),
    fc.json(),
    fc.uint8Array({ maxLength: 300 }),
    fc.anything().map(stringifyAnything),
    fc.anything() as fc.Arbitrary<unknown> as fc.Arbitrary<string>, // not even a string or bytes
    fc.dictionary(fc.constantFrom(...TOP_KEYS, 'x'), fc.anything(), { maxKeys: 10 }).map(stringifyAnything),
  );
  fc.assert(
    fc.property(anyTopic, input, fc.option(fc.integer({ min: 0, max: 400 }), { nil: undefined }), (topic, raw, max) => {
      const opts = max === undefined ? undefined : { maxBytes: max };
      checkOutcome(parseUplink(topic, raw, opts));
      checkOutcome(parseDownlink(topic, raw, opts));
    }),
    RUNS,
  );
});

test('mutated valid uplink messages never throw and fail only with documented codes', () => {
  fc.assert(
    fc.property(validUplink, mutation, ({ topic, msg }, mutate) => {
      const r = parseUplink(topic, mutate(msg));
      checkOutcome(r);
      // Signature checks on whatever parsed are total as well.
      if (r.ok) assert.equal(typeof verifySignature(r.value.msg, SECRET), 'boolean');
    }),
    RUNS,
  );
});

test('valid generated uplink messages always parse, keep their fields and verify', () => {
  fc.assert(
    fc.property(validUplink, fc.constantFrom('buffer', 'string'), ({ topic, msg }, as) => {
      const json = JSON.stringify(msg);
      const r = parseUplink(topic, as === 'buffer' ? Buffer.from(json) : json);
      if (!r.ok) assert.fail(`${r.code}: ${r.reason} for ${json}`);
      const got = r.value.msg as unknown as Record<string, unknown>;
      for (const k of ['message_id', 'type', 'project_id', 'timestamp', 'version', 'command_type', 'data_type']) {
        assert.equal(got[k], msg[k], k);
      }
      assert.equal(r.value.kind, topic === TOPIC_COMMAND_UP ? 'command' : 'data');
      if (typeof msg.signature === 'string') assert.equal(verifySignature(r.value.msg, SECRET), true);
    }),
    RUNS,
  );
});

test('valid generated downlink commands (any type, any JSON payload) always parse and verify', () => {
  fc.assert(
    fc.property(
      projectId,
      fc.stringMatching(/^[a-z0-9_.-]{1,64}$/),
      fc.jsonValue(),
      uuid,
      ms,
      (pid, type, payload, id, now) => {
        const cmd = buildCommand(pid, type, payload, SECRET, { messageId: id, now });
        const r = parseDownlink(commandDownTopic(pid), JSON.stringify(cmd));
        if (!r.ok) assert.fail(`${r.code}: ${r.reason}`);
        assert.equal(r.value.kind, 'command');
        assert.equal(verifySignature(r.value.msg, SECRET), true);
      },
    ),
    RUNS,
  );
});

test('a command composed around its canonical payload (the send path) is exactly the canonical message, signed as buildCommand signs it', () => {
  fc.assert(
    fc.property(
      projectId,
      fc.stringMatching(/^[a-z0-9_.-]{1,64}$/),
      safeJson(fc.jsonValue()),
      uuid,
      ms,
      (pid, type, payload, id, now) => {
        const { message_id, json } = signedCommandJson(pid, type, canonicalJson(payload), SECRET, {
          messageId: id,
          now,
        });
        assert.equal(message_id, id);
        const sent = JSON.parse(json);
        const { signature, ...unsigned } = sent;
        // signed over what RFC 8785 makes of the message as the receiver parses it
        assert.equal(signature, signMessage(unsigned, SECRET));
        assert.deepEqual(sent, buildCommand(pid, type, payload, SECRET, { messageId: id, now }));
        const r = parseDownlink(commandDownTopic(pid), json);
        if (!r.ok) assert.fail(`${r.code}: ${r.reason}`);
        assert.equal(verifySignature(r.value.msg, SECRET), true);
      },
    ),
    RUNS,
  );
});
