import assert from 'node:assert/strict';
import { test } from 'node:test';
import { errorCode } from '../../../core/errors.js';
import {
  buildCommand,
  buildData,
  COMMAND_TYPE_RE,
  commandDownTopic,
  DOWNLINK_DATA_TYPES,
  isValidProjectId,
  messageDownTopic,
  newMessageId,
  type ParseResult,
  parseDownlink,
  parseUplink,
  TOPIC_COMMAND_UP,
  TOPIC_MESSAGE_UP,
  UPLINK_COMMAND_TYPES,
  UPLINK_DATA_TYPES,
  type Uplink,
  type UplinkDataPayloads,
} from '../../../modules/shared/protocol.js';
import {
  canonicalJson,
  ReplayCache,
  signMessage,
  toWire,
  verifyInbound,
  verifySignature,
  wireText,
} from '../../../modules/shared/signing.js';

const PID = 'plant-7';
const SECRET = 'project-secret';
const NOW = 1_700_000_000_000;
const CMD_ID = '0b6c2f0e-3a52-4f43-9d0e-6a7f0c1d2e3f';

const wire = (msg: unknown) => Buffer.from(JSON.stringify(msg), 'utf8');

function expectFail(r: ParseResult<unknown>, code: string, reason?: string | RegExp): string {
  assert.equal(r.ok, false, `expected ${code}, got ok`);
  if (r.ok) return '';
  assert.equal(r.code, code, r.reason);
  if (typeof reason === 'string')
    assert.ok(r.reason.startsWith(reason), `reason "${r.reason}" should start "${reason}"`);
  else if (reason) assert.match(r.reason, reason);
  return r.reason;
}

function ok<T>(r: ParseResult<T>): T {
  if (!r.ok) assert.fail(`${r.code}: ${r.reason}`);
  return r.value;
}

const REGISTER = {
  node_name: 'watchdog',
  instance_id: 'watchdog-host01-4242',
  version: '2.3.1',
  pid: 4242,
  start_time: NOW - 60_000,
  capabilities: ['host_exec', 'k8s_exec'],
  metadata: { hostname: 'host01', zone: 'b' },
  node_version: 'v20.11.1',
};

const UPLINK_SAMPLES: { [K in keyof UplinkDataPayloads]: UplinkDataPayloads[K] } = {
  register_complete: { instance_id: 'watchdog-host01-4242' },
  heartbeat: {
    instance_id: 'watchdog-host01-4242',
    timestamp: NOW,
    uptime_s: 12.5,
    metrics: { cpu: 2.5, mem_mb: 128 },
  },
  command_ack: { command_id: CMD_ID },
  log_result: { command_id: CMD_ID, seq: 0, content: 'line 1\nline 2' },
  exec_result: {
    command_id: CMD_ID,
    status: 'success',
    exit_code: 0,
    output: 'up 3 days',
    error: '',
    start_time: NOW - 20,
    end_time: NOW,
    duration: 20,
  },
  monitor: { metrics: { disk_free_gb: 41.2, load: [0.1, 0.2, 0.3] }, host: 'host01' },
  alert: { level: 'warning', message: 'disk almost full', source: 'disk', value: 93 },
  disconnect: { reason: 'shutdown' },
};

function rawData(dataType: string, payload: unknown, over: Record<string, unknown> = {}) {
  return {
    message_id: newMessageId(),
    type: 'message',
    project_id: PID,
    timestamp: NOW,
    version: '1.0',
    data_type: dataType,
    payload,
    encrypted: false,
    ...over,
  };
}

function rawRegister(payload: unknown, over: Record<string, unknown> = {}) {
  const msg: Record<string, unknown> = {
    message_id: newMessageId(),
    type: 'command',
    project_id: PID,
    timestamp: NOW,
    version: '1.0',
    command_type: 'register',
    payload,
    ...over,
  };
  msg.signature = signMessage(msg, SECRET);
  return msg;
}

test('topics are the strings of docs/wire-protocol.md#topics', () => {
  assert.equal(TOPIC_COMMAND_UP, 'wdd/RDMC/command/up');
  assert.equal(TOPIC_MESSAGE_UP, 'wdd/RDMC/message/up');
  assert.equal(commandDownTopic('p1'), 'wdd/RDMC/command/down/p1');
  assert.equal(messageDownTopic('p1'), 'wdd/RDMC/message/down/p1');
  assert.deepEqual([...UPLINK_COMMAND_TYPES], ['register']);
  assert.deepEqual([...UPLINK_DATA_TYPES].sort(), [
    'alert',
    'command_ack',
    'disconnect',
    'exec_result',
    'heartbeat',
    'log_result',
    'monitor',
    'register_complete',
  ]);
  assert.deepEqual([...DOWNLINK_DATA_TYPES], ['register_ack', 'reregister']);
});

test('isValidProjectId', () => {
  const table: Array<[unknown, boolean]> = [
    ['plant-7', true],
    ['P_1.2~x y', true],
    ['项目-一', true],
    ['😀', true],
    ['a'.repeat(128), true],
    ['a'.repeat(129), false],
    ['é'.repeat(64), true], // 128 bytes
    ['é'.repeat(65), false], // 130 bytes, 65 chars
    ['', false],
    ['a/b', false],
    ['/', false],
    ['a+b', false],
    ['#', false],
    ['a\u0000b', false],
    ['a\nb', false],
    ['tab\there', false],
    ['del\u007f', false],
    ['c1\u0085', false],
    ['$SYS', false],
    ['a$', true],
    ['\ud800', false], // lone surrogate: not encodable as UTF-8
    [42, false],
    [null, false],
    [undefined, false],
    [{}, false],
  ];
  for (const [id, expected] of table) assert.equal(isValidProjectId(id), expected, JSON.stringify(id));
});

test('register command round-trips build → JSON → parseUplink, and verifies', () => {
  const cmd = buildCommand(PID, 'register', REGISTER, SECRET, { now: NOW });
  const up = ok(parseUplink(TOPIC_COMMAND_UP, wire(cmd)));
  assert.equal(up.kind, 'command');
  assert.deepEqual(up.msg, cmd);
  assert.deepEqual(verifyInbound(up.msg, SECRET, new ReplayCache(), NOW), { ok: true });
  // Also as a string and as a plain Uint8Array.
  assert.deepEqual(ok(parseUplink(TOPIC_COMMAND_UP, JSON.stringify(cmd))).msg, cmd);
  assert.deepEqual(ok(parseUplink(TOPIC_COMMAND_UP, new Uint8Array(wire(cmd)))).msg, cmd);
});

test('every uplink data type round-trips build → JSON → parseUplink, signed or not', () => {
  for (const dataType of UPLINK_DATA_TYPES) {
    const payload = UPLINK_SAMPLES[dataType];
    const signed = buildData(PID, dataType, payload, { secret: SECRET, now: NOW });
    const up = ok(parseUplink(TOPIC_MESSAGE_UP, wire(signed)));
    assert.equal(up.kind, 'data');
    assert.deepEqual(up.msg, signed, dataType);
    assert.deepEqual(verifyInbound(up.msg, SECRET, new ReplayCache(), NOW), { ok: true }, dataType);

    const unsigned = buildData(PID, dataType, payload, { now: NOW, encrypted: false });
    assert.equal('signature' in unsigned, false);
    assert.deepEqual(ok(parseUplink(TOPIC_MESSAGE_UP, wire(unsigned))).msg, unsigned, dataType);
  }
});

test('the typed union narrows payload by data_type', () => {
  const up: Uplink = ok(
    parseUplink(TOPIC_MESSAGE_UP, wire(buildData(PID, 'exec_result', UPLINK_SAMPLES.exec_result, { now: NOW }))),
  );
  let seen = '';
  if (up.kind === 'data') {
    switch (up.msg.data_type) {
      case 'exec_result': {
        const code: number = up.msg.payload.exit_code; // compile-time check of the narrowing
        const status: 'success' | 'failure' | 'timeout' = up.msg.payload.status;
        seen = `${status}:${code}`;
        break;
      }
      case 'heartbeat': {
        const metrics: Record<string, unknown> | undefined = up.msg.payload.metrics;
        seen = String(metrics);
        break;
      }
      default:
        seen = up.msg.data_type;
    }
  } else {
    const pid: number = up.msg.payload.pid;
    seen = String(pid);
  }
  assert.equal(seen, 'success:0');
});

test('defaults are filled in, and the signature still verifies against what the agent sent', () => {
  const { capabilities: _c, metadata: _m, ...minimal } = REGISTER;
  const raw = rawRegister(minimal);
  const up = ok(parseUplink(TOPIC_COMMAND_UP, wire(raw)));
  assert.ok(up.kind === 'command');
  assert.deepEqual(up.msg.payload.capabilities, []);
  assert.deepEqual(up.msg.payload.metadata, {});
  assert.equal(verifySignature(up.msg, SECRET), true);
  assert.deepEqual(verifyInbound(up.msg, SECRET, new ReplayCache(), NOW), { ok: true });

  const { output: _o, error: _e, ...bare } = UPLINK_SAMPLES.exec_result;
  const data = rawData('exec_result', bare);
  const signed = { ...data, signature: signMessage(data, SECRET) };
  const res = ok(parseUplink(TOPIC_MESSAGE_UP, wire(signed)));
  assert.ok(res.kind === 'data' && res.msg.data_type === 'exec_result');
  assert.equal(res.msg.payload.output, '');
  assert.equal(res.msg.payload.error, '');
  assert.equal(verifySignature(res.msg, SECRET), true);
  // A copy loses the binding to the wire object, so verify before copying (documented).
  assert.equal(verifySignature({ ...res.msg }, SECRET), false);
});

test('null payloads of all-optional types read as {}; extra fields are kept', () => {
  for (const t of ['disconnect', 'register_complete', 'heartbeat'] as const) {
    const up = ok(parseUplink(TOPIC_MESSAGE_UP, wire(rawData(t, null))));
    assert.deepEqual(up.msg.payload, {}, t);
  }
  const up = ok(
    parseUplink(
      TOPIC_MESSAGE_UP,
      wire(rawData('alert', { level: 'critical', message: 'x', nested: { a: [1] } }, { trace: 'abc' })),
    ),
  );
  assert.ok(up.kind === 'data' && up.msg.data_type === 'alert');
  assert.deepEqual(up.msg.payload.nested, { a: [1] });
  assert.equal((up.msg as unknown as Record<string, unknown>).trace, 'abc');
  // A real SubNodeSync heartbeat carries more than we list, with string metrics.
  const hb = ok(
    parseUplink(
      TOPIC_MESSAGE_UP,
      wire(
        rawData('heartbeat', {
          status: 'running',
          pid: 1,
          uptime: 3600,
          metrics: { process_cpu_usage_percent: '2.50' },
        }),
      ),
    ),
  );
  assert.deepEqual(hb.msg.payload, {
    status: 'running',
    pid: 1,
    uptime: 3600,
    metrics: { process_cpu_usage_percent: '2.50' },
    uptime_s: 3600, // seed 002's uptime (seconds), read as uptime_s too
  });
});

test('PROTO_ERR_TOO_LARGE is decided before any decoding', () => {
  const big = Buffer.alloc(300 * 1024, 0xff); // not even UTF-8: the size wins
  expectFail(parseUplink(TOPIC_MESSAGE_UP, big), 'PROTO_ERR_TOO_LARGE');
  expectFail(parseUplink(TOPIC_MESSAGE_UP, '{'.repeat(300 * 1024)), 'PROTO_ERR_TOO_LARGE');
  const msg = wire(rawData('heartbeat', {}));
  expectFail(parseUplink(TOPIC_MESSAGE_UP, msg, { maxBytes: msg.length - 1 }), 'PROTO_ERR_TOO_LARGE');
  ok(parseUplink(TOPIC_MESSAGE_UP, msg, { maxBytes: msg.length }));
  // Multi-byte characters count as bytes, not as characters.
  const s = JSON.stringify(rawData('alert', { level: 'info', message: 'é'.repeat(100) }));
  expectFail(parseUplink(TOPIC_MESSAGE_UP, s, { maxBytes: s.length + 50 }), 'PROTO_ERR_TOO_LARGE');
  ok(parseUplink(TOPIC_MESSAGE_UP, s, { maxBytes: s.length + 100 }));
});

test('PROTO_ERR_JSON: bad UTF-8, bad JSON, not an object', () => {
  expectFail(parseUplink(TOPIC_MESSAGE_UP, Buffer.from([0x7b, 0xff, 0x7d])), 'PROTO_ERR_JSON', /UTF-8/);
  expectFail(parseUplink(TOPIC_MESSAGE_UP, Buffer.from([0xed, 0xa0, 0x80])), 'PROTO_ERR_JSON', /UTF-8/); // encoded surrogate
  expectFail(parseUplink(TOPIC_MESSAGE_UP, '{"a":'), 'PROTO_ERR_JSON', /not valid JSON/);
  expectFail(parseUplink(TOPIC_MESSAGE_UP, ''), 'PROTO_ERR_JSON');
  for (const v of ['[]', 'null', '42', '"str"', 'true']) {
    expectFail(parseUplink(TOPIC_MESSAGE_UP, v), 'PROTO_ERR_JSON', /must be a JSON object/);
  }
  expectFail(parseUplink(TOPIC_MESSAGE_UP, 42 as unknown as string), 'PROTO_ERR_JSON');
});

test('PROTO_ERR_SCHEMA names the field path', () => {
  const cases: Array<[string, unknown, string]> = [
    [
      TOPIC_MESSAGE_UP,
      rawData('exec_result', { ...UPLINK_SAMPLES.exec_result, exit_code: 1.5 }),
      'payload.exit_code: expected integer',
    ],
    [
      TOPIC_MESSAGE_UP,
      rawData('exec_result', { ...UPLINK_SAMPLES.exec_result, exit_code: '0' }),
      'payload.exit_code: expected integer, got string',
    ],
    [
      TOPIC_MESSAGE_UP,
      rawData('exec_result', { ...UPLINK_SAMPLES.exec_result, status: 'ok' }),
      'payload.status: expected "success" | "failure" | "timeout"',
    ],
    [
      TOPIC_MESSAGE_UP,
      rawData('exec_result', { ...UPLINK_SAMPLES.exec_result, duration: -1 }),
      'payload.duration: value must be >= 0',
    ],
    [TOPIC_MESSAGE_UP, rawData('command_ack', { command_id: 'not-a-uuid' }), 'payload.command_id: expected a UUID'],
    [TOPIC_MESSAGE_UP, rawData('command_ack', {}), 'payload.command_id: required'],
    [
      TOPIC_MESSAGE_UP,
      rawData('log_result', { command_id: CMD_ID, seq: -1, content: '' }),
      'payload.seq: value must be >= 0',
    ],
    [TOPIC_MESSAGE_UP, rawData('alert', { level: 'fatal', message: 'x' }), 'payload.level: expected "info"'],
    [TOPIC_MESSAGE_UP, rawData('monitor', { metrics: [1] }), 'payload.metrics: expected record, got array'],
    [TOPIC_MESSAGE_UP, rawData('heartbeat', 'beat'), 'payload: expected object, got string'],
    [TOPIC_MESSAGE_UP, rawData('heartbeat', {}, { encrypted: 'no' }), 'encrypted: expected boolean, got string'],
    [TOPIC_MESSAGE_UP, rawData('heartbeat', {}, { message_id: 'abc' }), 'message_id: expected a UUID'],
    [
      TOPIC_MESSAGE_UP,
      rawData('heartbeat', {}, { timestamp: '1700000000000' }),
      'timestamp: expected an RFC 3339 time like "2024-01-01T12:00:00Z" or ms integer, got "1700000000000"',
    ],
    [
      TOPIC_MESSAGE_UP,
      rawData('heartbeat', {}, { timestamp: 1.5 }),
      'timestamp: expected an RFC 3339 time string or ms integer, got non-integer number',
    ],
    [TOPIC_MESSAGE_UP, rawData('heartbeat', {}, { project_id: 42 }), 'project_id: expected string, got number'],
    [TOPIC_MESSAGE_UP, rawData('heartbeat', {}, { data_type: 7 }), 'data_type: expected string'],
    [TOPIC_MESSAGE_UP, rawData('heartbeat', {}, { version: '2.0' }), 'version: expected "1.0", got "2.0"'],
    [TOPIC_MESSAGE_UP, rawData('heartbeat', {}, { version: undefined }), 'version: expected "1.0"'],
    [TOPIC_MESSAGE_UP, rawData('heartbeat', {}, { type: 'command' }), 'type: expected "message"'],
    [TOPIC_COMMAND_UP, rawData('heartbeat', {}), 'type: expected "command"'],
    [
      TOPIC_COMMAND_UP,
      rawRegister({ ...REGISTER, capabilities: ['a', 2] }),
      'payload.capabilities[1]: expected string',
    ],
    [TOPIC_COMMAND_UP, rawRegister({ ...REGISTER, pid: 'x' }), 'payload.pid: expected integer'],
    [TOPIC_COMMAND_UP, rawRegister({ ...REGISTER, node_name: undefined }), 'payload.node_name: required'],
    [TOPIC_COMMAND_UP, rawRegister(REGISTER, { command_type: 'Register!' }), 'command_type: must match'],
    [TOPIC_COMMAND_UP, { ...rawRegister(REGISTER), signature: 'ABCDEF' }, 'signature: must match'],
    [TOPIC_COMMAND_UP, { ...rawRegister(REGISTER), signature: undefined }, 'signature: required'],
    [TOPIC_COMMAND_UP, { ...rawRegister(REGISTER), payload: undefined }, 'payload: required'],
  ];
  for (const [topic, msg, reason] of cases) expectFail(parseUplink(topic, wire(msg)), 'PROTO_ERR_SCHEMA', reason);
  // A topic that is not an uplink topic.
  expectFail(parseUplink('wdd/RDMC/other', wire(rawData('heartbeat', {}))), 'PROTO_ERR_SCHEMA', 'topic:');
  expectFail(parseUplink(commandDownTopic(PID), wire(rawRegister(REGISTER))), 'PROTO_ERR_SCHEMA', 'topic:');
  // Several problems: the first is named, the rest counted.
  expectFail(
    parseUplink(TOPIC_MESSAGE_UP, wire(rawData('command_ack', {}, { message_id: 1, timestamp: 'x' }))),
    'PROTO_ERR_SCHEMA',
    /\(and \d+ more\)$/,
  );
});

test('PROTO_ERR_UNKNOWN_TYPE for an unknown uplink data or command type', () => {
  expectFail(
    parseUplink(TOPIC_MESSAGE_UP, wire(rawData('telemetry', {}))),
    'PROTO_ERR_UNKNOWN_TYPE',
    'data_type: unknown uplink data type "telemetry"',
  );
  expectFail(
    parseUplink(TOPIC_MESSAGE_UP, wire(rawData('register_ack', { accepted: true, heartbeat_interval_s: 5 }))),
    'PROTO_ERR_UNKNOWN_TYPE',
  );
  expectFail(parseUplink(TOPIC_MESSAGE_UP, wire(rawData('__proto__', {}))), 'PROTO_ERR_UNKNOWN_TYPE');
  expectFail(parseUplink(TOPIC_MESSAGE_UP, wire(rawData('toString', {}))), 'PROTO_ERR_UNKNOWN_TYPE');
  expectFail(
    parseUplink(TOPIC_COMMAND_UP, wire(rawRegister({}, { command_type: 'host_exec' }))),
    'PROTO_ERR_UNKNOWN_TYPE',
    'command_type: unknown uplink command type "host_exec"',
  );
});

test('PROTO_ERR_PROJECT_ID for an invalid project id', () => {
  for (const pid of ['a/b', '$SYS', '', 'x+', 'x#', 'a\u0000', 'p'.repeat(129)]) {
    expectFail(
      parseUplink(TOPIC_MESSAGE_UP, wire(rawData('heartbeat', {}, { project_id: pid }))),
      'PROTO_ERR_PROJECT_ID',
      'project_id:',
    );
  }
});

test('PROTO_ERR_UNSAFE_VALUE: NUL, lone surrogates and deep nesting in free-form fields; command output is kept', () => {
  // 10 000 levels: JSON.stringify cannot write it, so it goes on the wire as text
  const deep = '__DEEP__';
  const wire = (msg: unknown) =>
    Buffer.from(JSON.stringify(msg).replace('"__DEEP__"', `${'{"d":'.repeat(10_000)}1${'}'.repeat(10_000)}`));
  const bad: Array<[string, unknown, string]> = [
    ['heartbeat', { metrics: { cpu: 'a\u0000b' } }, 'payload.metrics.cpu: contains a NUL'],
    ['heartbeat', { metrics: { deep } }, 'payload.metrics.deep'],
    ['monitor', { metrics: { deep } }, 'payload.metrics.deep'],
    ['monitor', { metrics: { 'k\u0000': 1 } }, 'payload.metrics: has a key'],
    ['alert', { level: 'info', message: 'x\ud800' }, 'payload.message: contains a lone'],
    ['disconnect', { reason: 'bye\u0000' }, 'payload.reason: contains a NUL'],
    ['register_complete', { instance_id: '\u0000' }, 'payload.instance_id'],
    ['exec_result', { ...UPLINK_SAMPLES.exec_result, extra: '\u0000' }, 'payload.extra'],
  ];
  for (const [type, payload, reason] of bad) {
    expectFail(parseUplink(TOPIC_MESSAGE_UP, wire(rawData(type, payload))), 'PROTO_ERR_UNSAFE_VALUE', reason);
  }
  expectFail(
    parseUplink(TOPIC_COMMAND_UP, wire(rawRegister({ ...REGISTER, metadata: { deep } }))),
    'PROTO_ERR_UNSAFE_VALUE',
    'payload.metadata.deep',
  );
  expectFail(
    parseUplink(TOPIC_COMMAND_UP, wire(rawRegister({ ...REGISTER, capabilities: ['a\u0000'] }))),
    'PROTO_ERR_UNSAFE_VALUE',
    'payload.capabilities[0]',
  );
  // a real command's real output: accepted as sent (the command module cleans it for storage)
  const out = parseUplink(
    TOPIC_MESSAGE_UP,
    wire(rawData('exec_result', { ...UPLINK_SAMPLES.exec_result, output: 'a\u0000b', error: 'x\udc00' })),
  );
  assert.ok(out.ok, out.ok ? '' : out.reason);
  const log = parseUplink(
    TOPIC_MESSAGE_UP,
    wire(rawData('log_result', { command_id: CMD_ID, seq: 0, content: 'line\u0000' })),
  );
  assert.ok(log.ok, log.ok ? '' : log.reason);
});

test('__proto__ in the JSON pollutes nothing', () => {
  const text =
    '{"message_id":"0b6c2f0e-3a52-4f43-9d0e-6a7f0c1d2e3f","type":"command","project_id":"plant-7","timestamp":1,' +
    '"version":"1.0","command_type":"register","__proto__":{"polluted":"top"},"constructor":{"prototype":{"polluted":"ctor"}},' +
    `"payload":${JSON.stringify(REGISTER).slice(0, -1)},"__proto__":{"polluted":"payload"},"metadata":{"__proto__":{"polluted":"meta"}}},` +
    `"signature":"${'a'.repeat(64)}"}`;
  const up = ok(parseUplink(TOPIC_COMMAND_UP, text));
  assert.ok(up.kind === 'command');
  assert.equal(({} as Record<string, unknown>).polluted, undefined);
  assert.equal(Object.hasOwn(Object.prototype, 'polluted'), false);
  assert.equal(Object.getPrototypeOf(up.msg), Object.prototype);
  assert.equal(Object.getPrototypeOf(up.msg.payload), Object.prototype);
  assert.equal(Object.getPrototypeOf(up.msg.payload.metadata), Object.prototype);
  assert.equal((up.msg as unknown as Record<string, unknown>).polluted, undefined);
  assert.equal((up.msg.payload as unknown as Record<string, unknown>).polluted, undefined);
  assert.equal(up.msg.payload.metadata.polluted, undefined);
  // And a message signed with a __proto__ key inside verifies (the key is signed as data).
  const raw = JSON.parse('{"__proto__":{"x":1}}');
  const data: Record<string, unknown> = rawData('monitor', { metrics: raw });
  data.signature = signMessage(data, SECRET);
  const mon = ok(parseUplink(TOPIC_MESSAGE_UP, JSON.stringify(data)));
  assert.equal(verifySignature(mon.msg, SECRET), true);
});

test('parseDownlink: commands of any type, register_ack and reregister; topic must match project_id', () => {
  const cmd = buildCommand(PID, 'host_exec', { script: 'uptime', args: [1, null] }, SECRET, { now: NOW });
  const d1 = ok(parseDownlink(commandDownTopic(PID), wire(cmd)));
  assert.equal(d1.kind, 'command');
  assert.deepEqual(d1.msg, cmd);
  assert.deepEqual(verifyInbound(d1.msg, SECRET, new ReplayCache(), NOW), { ok: true });

  const ack = buildData(PID, 'register_ack', { accepted: true, heartbeat_interval_s: 5 }, { secret: SECRET, now: NOW });
  const d2 = ok(parseDownlink(messageDownTopic(PID), wire(ack)));
  assert.ok(d2.kind === 'data' && d2.msg.data_type === 'register_ack');
  assert.equal(d2.msg.payload.heartbeat_interval_s, 5);
  assert.deepEqual(d2.msg, ack);

  const rereg = buildData(PID, 'reregister', { reason: 'unknown instance' }, { secret: SECRET, now: NOW });
  assert.deepEqual(ok(parseDownlink(messageDownTopic(PID), wire(rereg))).msg, rereg);
  const rereg2 = rawData('reregister', null);
  assert.deepEqual(ok(parseDownlink(messageDownTopic(PID), wire(rereg2))).msg.payload, {});

  expectFail(parseDownlink(commandDownTopic('other'), wire(cmd)), 'PROTO_ERR_PROJECT_ID', /does not match/);
  expectFail(parseDownlink(messageDownTopic('other'), wire(ack)), 'PROTO_ERR_PROJECT_ID', /does not match/);
  expectFail(parseDownlink('wdd/RDMC/command/down/a/b', wire(cmd)), 'PROTO_ERR_PROJECT_ID', 'topic:');
  expectFail(parseDownlink('wdd/RDMC/command/down/', wire(cmd)), 'PROTO_ERR_PROJECT_ID', 'topic:');
  expectFail(parseDownlink(TOPIC_COMMAND_UP, wire(cmd)), 'PROTO_ERR_SCHEMA', 'topic:');
  expectFail(parseDownlink(messageDownTopic(PID), wire(cmd)), 'PROTO_ERR_SCHEMA', 'type: expected "message"');
  expectFail(parseDownlink(commandDownTopic(PID), wire(ack)), 'PROTO_ERR_SCHEMA', 'type: expected "command"');
  expectFail(parseDownlink(messageDownTopic(PID), wire(rawData('heartbeat', {}))), 'PROTO_ERR_UNKNOWN_TYPE');
  expectFail(
    parseDownlink(messageDownTopic(PID), wire(rawData('register_ack', { accepted: 'yes', heartbeat_interval_s: 5 }))),
    'PROTO_ERR_SCHEMA',
    'payload.accepted: expected boolean',
  );
  expectFail(parseDownlink(messageDownTopic(PID), '{'), 'PROTO_ERR_JSON');
  expectFail(parseDownlink(messageDownTopic(PID), 'x'.repeat(20), { maxBytes: 10 }), 'PROTO_ERR_TOO_LARGE');
});

test('buildCommand / buildData: shape, signature, copies, and refusals', () => {
  const payload = { script: 'uptime', nested: { n: 1 } };
  const cmd = buildCommand(PID, 'host_exec', payload, SECRET, { messageId: CMD_ID, now: NOW });
  // as signed (RFC 8785 key order), the signature last: what toWire writes and the hub verifies as sent
  assert.deepEqual(Object.keys(cmd), [
    'command_type',
    'message_id',
    'payload',
    'project_id',
    'timestamp',
    'type',
    'version',
    'signature',
  ]);
  const { signature: _cmdSig, ...cmdUnsigned } = cmd;
  assert.equal(toWire(cmd), wireText(canonicalJson(cmdUnsigned), cmd.signature));
  assert.equal(cmd.message_id, CMD_ID);
  assert.equal(cmd.timestamp, NOW);
  assert.equal(cmd.version, '1.0');
  assert.match(cmd.signature, /^[0-9a-f]{64}$/);
  assert.equal(verifySignature(cmd, SECRET), true);
  payload.nested.n = 2; // the message does not share objects with the caller
  assert.equal(verifySignature(cmd, SECRET), true);

  const fresh = buildCommand(PID, 'noop', null, SECRET);
  assert.match(fresh.message_id, /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
  assert.ok(Math.abs(fresh.timestamp - Date.now()) < 5_000);
  assert.ok(COMMAND_TYPE_RE.test('k8s.exec-v2_x'));

  const data = buildData(PID, 'heartbeat', { metrics: { cpu: 1 } }, { encrypted: false, secret: SECRET, now: NOW });
  assert.deepEqual(Object.keys(data), [
    'message_id',
    'type',
    'project_id',
    'timestamp',
    'version',
    'data_type',
    'payload',
    'encrypted',
    'signature',
  ]);
  assert.equal(verifySignature(data, SECRET), true);
  const { signature: _dataSig, ...dataUnsigned } = data;
  const dataText = toWire(data);
  assert.equal(dataText, wireText(canonicalJson(dataUnsigned), data.signature as string));
  assert.deepEqual(JSON.parse(dataText), data);
  // a copy is not bound to its signed text: written as JSON.stringify writes it
  assert.equal(toWire({ ...data }), JSON.stringify(data));

  const refusals: Array<[() => unknown, string]> = [
    [() => buildCommand('a/b', 'noop', {}, SECRET), 'PROTO_ERR_PROJECT_ID'],
    [() => buildCommand(PID, 'Bad Type', {}, SECRET), 'PROTO_ERR_SCHEMA'],
    [() => buildCommand(PID, 'x'.repeat(65), {}, SECRET), 'PROTO_ERR_SCHEMA'],
    [() => buildCommand(PID, 'noop', undefined, SECRET), 'PROTO_ERR_SCHEMA'],
    [() => buildCommand(PID, 'noop', { n: Number.NaN }, SECRET), 'PROTO_ERR_SCHEMA'],
    [() => buildCommand(PID, 'noop', { n: 1n }, SECRET), 'PROTO_ERR_SCHEMA'],
    [() => buildCommand(PID, 'noop', {}, SECRET, { messageId: 'nope' }), 'PROTO_ERR_SCHEMA'],
    [() => buildCommand(PID, 'noop', {}, SECRET, { now: 1.5 }), 'PROTO_ERR_SCHEMA'],
    [() => buildCommand(PID, 'register', { ...REGISTER, pid: -1 }, SECRET), 'PROTO_ERR_SCHEMA'],
    [() => buildData(PID, 'exec_result', { command_id: CMD_ID }), 'PROTO_ERR_SCHEMA'],
    [() => buildData(PID, 'register_ack', { accepted: true }), 'PROTO_ERR_SCHEMA'],
    [() => buildData('', 'heartbeat', {}), 'PROTO_ERR_PROJECT_ID'],
  ];
  for (const [fn, code] of refusals) {
    assert.throws(fn, (err: unknown) => errorCode(err) === code, code);
  }
  assert.throws(() => buildCommand(PID, 'noop', {}, ''), TypeError);
  // Unknown data types are the sender's business: payload is any JSON.
  assert.equal(buildData(PID, 'custom.thing', [1, 2]).data_type, 'custom.thing');
});
