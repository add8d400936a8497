import assert from 'node:assert/strict';
import { test } from 'node:test';
import fc from 'fast-check';
import { DataMessageSchema } from '../../../modules/shared/protocol/envelope.js';
import { parseUplink } from '../../../modules/shared/protocol/parse.js';
import {
  plainCommandAck,
  plainDataEnvelope,
  plainExecResult,
  plainHeartbeat,
  plainLogResult,
} from '../../../modules/shared/protocol/plain.js';
import {
  CommandAckPayloadSchema,
  ExecResultPayloadSchema,
  HeartbeatPayloadSchema,
  LogResultPayloadSchema,
  UPLINKS,
} from '../../../modules/shared/protocol/uplinks.js';
import { isValidProjectId, TOPIC_MESSAGE_UP } from '../../../modules/shared/protocol/wire.js';
import { signMessage, verifySignature } from '../../../modules/shared/signing.js';

// Inputs as decode hands them over: what JSON.parse makes (own `__proto__` keys included).
const asParsed = <T>(v: T): T => JSON.parse(JSON.stringify(v));
const anyJson = fc.jsonValue({ maxDepth: 2 });
/** Mostly a valid value, sometimes one of the near misses given, sometimes any JSON value. */
const field = <T>(valid: fc.Arbitrary<T>, ...nearMisses: unknown[]) =>
  fc.oneof(
    { weight: 20, arbitrary: valid as fc.Arbitrary<unknown> },
    { weight: 1, arbitrary: anyJson as fc.Arbitrary<unknown> },
    ...(nearMisses.length > 0 ? [{ weight: 1, arbitrary: fc.constantFrom(...nearMisses) }] : []),
  );
const times = field(
  fc.oneof(
    fc.integer({ min: 0, max: Number.MAX_SAFE_INTEGER }),
    fc.date({ min: new Date(0), max: new Date(4e12), noInvalidDate: true }).map((d) => d.toISOString()),
    fc.constantFrom('2024-01-01T12:00:00Z', '2024-01-01 20:00:00.123456789+08:00', '2024-01-01t12:00:00.5-03:30'),
  ),
  -1,
  1.5,
  2 ** 53,
  '2024-02-30T00:00:00Z',
  '2024-01-01T12:00:00',
  '',
);
/** Object keys: now and then `__proto__`, which JSON.parse keeps as an own key. */
const keyName = fc.oneof(
  { weight: 12, arbitrary: fc.string({ maxLength: 8 }) },
  { weight: 1, arbitrary: fc.constant('__proto__') },
);
const extraKeys = fc.dictionary(keyName, anyJson, { maxKeys: 3 });
const withExtra = <T extends object>(rec: fc.Arbitrary<T>) =>
  fc.tuple(rec, extraKeys).map(([r, extra]) => asParsed({ ...extra, ...r }));

const heartbeats = fc.oneof(
  {
    weight: 10,
    arbitrary: withExtra(
      fc.record(
        {
          instance_id: field(fc.string()),
          node_name: field(fc.string()),
          timestamp: times,
          status: field(fc.string()),
          pid: field(fc.nat(), -1, 1.5, '7'),
          uptime: field(fc.double({ min: 0, noNaN: true, noDefaultInfinity: true }), -1, '60'),
          uptime_s: field(fc.nat(), -0.5),
          version: field(fc.string()),
          hostname: field(fc.string()),
          metrics: field(fc.dictionary(keyName, anyJson, { maxKeys: 4 })),
        },
        { requiredKeys: [] },
      ),
    ),
  },
  { weight: 1, arbitrary: anyJson },
);

/**
 * Holds `plain` to `schema` over `inputs`: whenever it gives a result, the schema accepts the input
 * and outputs exactly that; and it gives one for more than `atLeast` inputs (the check is not vacuous).
 */
function holdsToSchema(
  inputs: fc.Arbitrary<unknown>,
  plain: (v: never) => unknown,
  schema: { safeParse(v: unknown): { success: boolean; data?: unknown } },
  runs: number,
  atLeast: number,
): void {
  let plainCount = 0;
  fc.assert(
    fc.property(inputs, (v) => {
      const out = plain(v as never);
      if (out === undefined) return;
      plainCount++;
      const z = schema.safeParse(v);
      assert.ok(z.success, `the schema refuses what the plain path took: ${JSON.stringify(v)}`);
      assert.deepStrictEqual(out, z.data);
    }),
    { numRuns: runs },
  );
  assert.ok(plainCount > atLeast, `only ${plainCount} plain results`);
}

test('property: a plain heartbeat is exactly what HeartbeatPayloadSchema outputs', () => {
  holdsToSchema(heartbeats, plainHeartbeat, HeartbeatPayloadSchema, 5000, 1000);
});

/** The envelope's required fields, as the schema names them (all but the signature). */
type EnvelopeKey =
  | 'message_id'
  | 'type'
  | 'project_id'
  | 'timestamp'
  | 'version'
  | 'data_type'
  | 'payload'
  | 'encrypted';
const ENVELOPE_KEYS = Object.keys(DataMessageSchema.shape).filter((k) => k !== 'signature') as EnvelopeKey[];
const fullEnvelopes = withExtra(
  fc.record(
    {
      message_id: field(
        fc.oneof(
          fc.uuid(),
          fc.uuid().map((u) => u.toUpperCase()),
        ),
        'not-a-uuid',
        '',
      ),
      type: field(fc.constant('message'), 'command'),
      project_id: field(fc.stringMatching(/^[a-z0-9-]{1,12}$/), 'a/b', '$sys', '', 'x\u0000'),
      timestamp: times,
      version: field(fc.constant('1.0'), '1', 1),
      data_type: field(fc.constantFrom('heartbeat', 'monitor', 'x')),
      payload: anyJson,
      encrypted: field(fc.boolean()),
      signature: field(fc.string({ maxLength: 64 })),
    },
    { requiredKeys: [...ENVELOPE_KEYS] },
  ),
);
/** Now and then one required field missing. */
const envelopes = fc
  .tuple(
    fullEnvelopes,
    fc.oneof({ weight: 5, arbitrary: fc.constant(null) }, { weight: 1, arbitrary: fc.constantFrom(...ENVELOPE_KEYS) }),
  )
  .map(([obj, drop]) => {
    if (drop !== null) delete (obj as Record<string, unknown>)[drop];
    return obj;
  });

test('property: a plain data envelope is exactly what DataMessageSchema outputs, with a valid project id', () => {
  const plainCopy = (obj: Record<string, unknown>) => {
    const out = plainDataEnvelope(obj);
    if (out === undefined) return undefined;
    assert.ok(isValidProjectId(out.project_id));
    return { ...out };
  };
  holdsToSchema(envelopes, plainCopy, DataMessageSchema, 5000, 1000);
});

test('the shapes agents send take the plain path: the seed example, the bench agent, a null payload', () => {
  const seed = asParsed(UPLINKS.heartbeat.example);
  assert.deepStrictEqual(plainHeartbeat(seed), HeartbeatPayloadSchema.parse(seed));
  assert.equal(plainHeartbeat(seed)?.uptime_s, 3600);
  assert.equal(plainHeartbeat(seed)?.timestamp, Date.parse('2024-01-01T12:00:00Z'));
  const bench = asParsed({
    instance_id: 'p-1',
    node_name: 'p',
    timestamp: 1_700_000_000_000,
    status: 'running',
    pid: 4242,
    uptime_s: 3600,
    version: 'bench',
    hostname: 'h',
    metrics: { cpu_percent: 0.25, load_1m: 0.42 },
  });
  assert.equal(plainHeartbeat(bench), bench, 'nothing to change: the parsed object itself');
  assert.deepStrictEqual(plainHeartbeat(null), {});
  const env = asParsed({
    message_id: '3f1c2a4e-8b7d-4c6e-9a1b-2d3e4f5a6b7c',
    type: 'message',
    project_id: 'plant-7',
    timestamp: '2024-01-01T12:00:00Z',
    version: '1.0',
    data_type: 'heartbeat',
    payload: seed,
    encrypted: false,
  });
  assert.deepStrictEqual({ ...plainDataEnvelope(env) }, DataMessageSchema.parse(env));
  // refused or unusual input is left to the schema, which words the refusal
  assert.equal(plainDataEnvelope({ ...env, project_id: 'a/b' }), undefined);
  assert.equal(plainDataEnvelope({ ...env, timestamp: '2024-01-01T12:00:00' }), undefined);
  assert.equal(plainHeartbeat({ pid: -1 }), undefined);
  assert.equal(plainHeartbeat(asParsed(JSON.parse('{"__proto__":{"x":1}}'))), undefined);
});

test('property: a parsed heartbeat verifies against what was sent, whether or not the plain path changed it', () => {
  const secret = 'plain-test-secret';
  fc.assert(
    fc.property(heartbeats, times, fc.boolean(), (payload, timestamp, tamper) => {
      const unsigned = {
        message_id: '3f1c2a4e-8b7d-4c6e-9a1b-2d3e4f5a6b7c',
        type: 'message',
        project_id: 'plant-7',
        timestamp,
        version: '1.0',
        data_type: 'heartbeat',
        payload,
        encrypted: false,
      };
      const sent: Record<string, unknown> = { ...unsigned, signature: signMessage(unsigned, secret) };
      if (tamper) sent.note = 'added after signing';
      const r = parseUplink(TOPIC_MESSAGE_UP, JSON.stringify(sent));
      if (!r.ok) return;
      // timestamps as strings and uptime without uptime_s are normalised: the view differs from what was signed
      assert.equal(verifySignature(r.value.msg, secret), !tamper);
    }),
    { numRuns: 3000 },
  );
});

const commandId = field(
  fc.oneof(
    fc.uuid(),
    fc.uuid().map((u) => u.toUpperCase()),
  ),
  'not-a-uuid',
  '',
);
const resultPayloads = {
  command_ack: withExtra(fc.record({ command_id: commandId }, { requiredKeys: [] })),
  log_result: withExtra(
    fc.record(
      { command_id: commandId, seq: field(fc.nat(), -1, 0.5, '1'), content: field(fc.string(), null) },
      { requiredKeys: ['command_id', 'seq', 'content'] },
    ),
  ),
  exec_result: withExtra(
    fc.record(
      {
        command_id: commandId,
        status: field(fc.constantFrom('success', 'failure', 'timeout'), 'ok', 'SUCCESS'),
        exit_code: field(fc.integer({ min: -300, max: 300 }), 1.5, '0', 2 ** 53),
        output: field(fc.string(), null, 7),
        error: field(fc.string(), null),
        start_time: times,
        end_time: times,
        duration: field(fc.nat(), -1, 0.5),
      },
      { requiredKeys: ['command_id', 'status', 'exit_code', 'start_time', 'end_time', 'duration'] },
    ),
  ),
};
const resultCases = [
  { type: 'command_ack', plain: plainCommandAck, schema: CommandAckPayloadSchema },
  { type: 'log_result', plain: plainLogResult, schema: LogResultPayloadSchema },
  { type: 'exec_result', plain: plainExecResult, schema: ExecResultPayloadSchema },
] as const;

for (const { type, plain, schema } of resultCases) {
  test(`property: a plain ${type} payload is exactly what its schema outputs`, () => {
    const inputs = fc.oneof({ weight: 10, arbitrary: resultPayloads[type] }, { weight: 1, arbitrary: anyJson });
    holdsToSchema(inputs, plain, schema, 3000, 600);
    // the table's own example (the seed's shape) takes the plain path
    const example = asParsed(UPLINKS[type].example);
    assert.deepStrictEqual(plain(example), schema.parse(example));
  });
}
