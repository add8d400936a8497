/**
 * The tolerant reader (docs/wire-protocol.md#seed-shapes-the-hub-accepts, seed 002): RFC 3339 or ms times read as ms, node_version a
 * string or an object kept as sent, uptime or uptime_s, unknown fields kept; the signature still
 * covers what was sent; peekUplink reads the project and type of a refused message.
 */
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { describe, test } from 'node:test';
import {
  buildCommand,
  parseDownlink,
  parseRfc3339,
  parseUplink,
  peekUplink,
  TOPIC_COMMAND_UP,
  TOPIC_MESSAGE_UP,
} from '../../../modules/shared/protocol.js';
import { ReplayCache, signMessage, verifyInbound } from '../../../modules/shared/signing.js';
import { REPO_ROOT } from '../../helpers/process.js';

const PID = 'plant-7';
const SECRET = 'project-secret';
const seed = (name: string) =>
  JSON.parse(fs.readFileSync(path.join(REPO_ROOT, 'test/fixtures/seed', `${name}.json`), 'utf8'));

function signed(kind: 'command' | 'message', type: string, payload: unknown, extra: Record<string, unknown> = {}) {
  const base: Record<string, unknown> = {
    message_id: randomUUID(),
    type: kind,
    project_id: PID,
    timestamp: Date.now(),
    version: '1.0',
    ...(kind === 'command' ? { command_type: type } : { data_type: type, encrypted: false }),
    payload,
    ...extra,
  };
  return { ...base, signature: signMessage(base, SECRET) };
}

describe('parseRfc3339', () => {
  const cases: Array<[string, number | null]> = [
    ['2024-01-01T12:00:00Z', Date.UTC(2024, 0, 1, 12)],
    ['2024-01-01t12:00:00z', Date.UTC(2024, 0, 1, 12)],
    ['2024-01-01 12:00:00Z', Date.UTC(2024, 0, 1, 12)],
    ['2024-01-01T20:00:00+08:00', Date.UTC(2024, 0, 1, 12)],
    ['2024-01-01T06:30:00-05:30', Date.UTC(2024, 0, 1, 12)],
    ['2024-01-01T12:00:00.5Z', Date.UTC(2024, 0, 1, 12, 0, 0, 500)],
    ['2024-01-01T12:00:00.123456789Z', Date.UTC(2024, 0, 1, 12, 0, 0, 123)], // Go RFC3339Nano
    ['2024-02-29T00:00:00Z', Date.UTC(2024, 1, 29)],
    ['2024-01-01T12:00:00', null], // no zone: no instant
    ['2023-02-29T00:00:00Z', null],
    ['2024-13-01T00:00:00Z', null],
    ['2024-01-01T24:00:00Z', null],
    ['2024-01-01T12:60:00Z', null],
    ['2024-01-01T12:00:00+24:00', null],
    ['0099-01-01T00:00:00Z', null],
    ['1700000000000', null],
    ['yesterday', null],
    ['', null],
  ];
  for (const [text, want] of cases) {
    test(JSON.stringify(text), () => assert.equal(parseRfc3339(text), want));
  }
});

describe('the seed messages read by the hub', () => {
  test('register (seed 002 注册消息): start_time as ms, node_version object kept, extra fields kept', () => {
    const reg = seed('register');
    const r = parseUplink(TOPIC_COMMAND_UP, JSON.stringify(signed('command', 'register', reg)));
    assert.ok(r.ok, r.ok ? '' : r.reason);
    assert.ok(r.value.kind === 'command');
    const p = r.value.msg.payload;
    assert.equal(p.start_time, Date.UTC(2024, 0, 1, 12));
    assert.deepEqual(p.node_version, reg.node_version);
    assert.equal(p.timestamp, '2024-01-01T12:00:00Z', 'unknown payload fields stay as sent');
    assert.deepEqual(p.capabilities, reg.capabilities);
  });

  test('heartbeat (seed 002 心跳消息): timestamp as ms, uptime read as uptime_s, metric strings kept', () => {
    const hb = seed('heartbeat');
    const r = parseUplink(TOPIC_MESSAGE_UP, JSON.stringify(signed('message', 'heartbeat', hb)));
    assert.ok(r.ok && r.value.kind === 'data' && r.value.msg.data_type === 'heartbeat');
    const p = r.value.msg.payload;
    assert.equal(p.timestamp, Date.UTC(2024, 0, 1, 12));
    assert.equal(p.uptime_s, 3600);
    assert.equal(p.uptime, 3600);
    assert.deepEqual(p.metrics, hb.metrics);
    assert.equal(p.status, 'running');
    assert.equal(p.hostname, 'hostname');
  });

  test('uptime_s wins when both are sent; ms integers still work everywhere', () => {
    const r = parseUplink(
      TOPIC_MESSAGE_UP,
      JSON.stringify(signed('message', 'heartbeat', { uptime: 1, uptime_s: 2, timestamp: 1_700_000_000_000 })),
    );
    assert.ok(r.ok && r.value.kind === 'data' && r.value.msg.data_type === 'heartbeat');
    assert.equal(r.value.msg.payload.uptime_s, 2);
    assert.equal(r.value.msg.payload.timestamp, 1_700_000_000_000);
  });

  test('a string node_version (the old shape) is still accepted as sent', () => {
    const reg = { ...seed('register'), node_version: 'v20.11.0', start_time: 1_700_000_000_000 };
    const r = parseUplink(TOPIC_COMMAND_UP, JSON.stringify(signed('command', 'register', reg)));
    assert.ok(r.ok && r.value.kind === 'command');
    assert.equal(r.value.msg.payload.node_version, 'v20.11.0');
    assert.equal(r.value.msg.payload.start_time, 1_700_000_000_000);
  });

  test('exec_result times as RFC 3339 strings', () => {
    const r = parseUplink(
      TOPIC_MESSAGE_UP,
      JSON.stringify(
        signed('message', 'exec_result', {
          command_id: randomUUID(),
          status: 'success',
          exit_code: 0,
          start_time: '2024-01-01T12:00:00Z',
          end_time: '2024-01-01T12:00:01.250Z',
          duration: 1250,
        }),
      ),
    );
    assert.ok(r.ok && r.value.kind === 'data' && r.value.msg.data_type === 'exec_result');
    assert.equal(r.value.msg.payload.end_time - r.value.msg.payload.start_time, 1250);
  });
});

describe('signatures cover the message as sent, not its normalised reading', () => {
  test('an RFC 3339 envelope timestamp: read as ms for the clock check, verified over the string', () => {
    const now = Date.now();
    const msg = signed('message', 'heartbeat', seed('heartbeat'), { timestamp: new Date(now).toISOString() });
    const r = parseUplink(TOPIC_MESSAGE_UP, JSON.stringify(msg));
    assert.ok(r.ok);
    assert.equal(r.value.msg.timestamp, now);
    assert.deepEqual(verifyInbound(r.value.msg, SECRET, new ReplayCache(), now), { ok: true });
  });

  test('a register signed over its string start_time verifies; the same message re-signed over ms does not', () => {
    const reg = seed('register');
    const msg = signed('command', 'register', reg);
    const r = parseUplink(TOPIC_COMMAND_UP, JSON.stringify(msg));
    assert.ok(r.ok);
    assert.deepEqual(verifyInbound(r.value.msg, SECRET, new ReplayCache(), Date.now()), { ok: true });
    // a signature over the normalised payload is not the sender's: refused
    const { signature: _s, ...unsigned } = msg;
    const normalised = { ...unsigned, payload: { ...reg, start_time: Date.UTC(2024, 0, 1, 12) } };
    const forged = { ...msg, signature: signMessage(normalised, SECRET) };
    const r2 = parseUplink(TOPIC_COMMAND_UP, JSON.stringify(forged));
    assert.ok(r2.ok);
    const v = verifyInbound(r2.value.msg, SECRET, new ReplayCache(), Date.now());
    assert.equal(v.ok, false);
  });

  test('buildCommand accepts the seed shapes and signs exactly what it sends', () => {
    const cmd = buildCommand(PID, 'register', seed('register'), SECRET);
    assert.equal((cmd.payload as { start_time: unknown }).start_time, '2024-01-01T12:00:00Z');
    const r = parseUplink(TOPIC_COMMAND_UP, JSON.stringify(cmd));
    assert.ok(r.ok);
    assert.deepEqual(verifyInbound(r.value.msg, SECRET, new ReplayCache(), Date.now()), { ok: true });
  });

  test('a downlink command with an RFC 3339 timestamp parses and verifies on the agent side', () => {
    const base = {
      message_id: randomUUID(),
      type: 'command',
      project_id: PID,
      timestamp: new Date().toISOString(),
      version: '1.0',
      command_type: 'stop',
      payload: seed('control'),
    };
    const msg = { ...base, signature: signMessage(base, SECRET) };
    const r = parseDownlink(`wdd/RDMC/command/down/${PID}`, JSON.stringify(msg));
    assert.ok(r.ok, r.ok ? '' : r.reason);
    assert.equal(typeof r.value.msg.timestamp, 'number');
    assert.deepEqual(verifyInbound(r.value.msg, SECRET, new ReplayCache(), Date.now()), { ok: true });
  });
});

describe('strict where it matters', () => {
  const bad: Array<[string, string, unknown, RegExp]> = [
    [
      'a time without a zone',
      'register',
      { ...seed('register'), start_time: '2024-01-01T12:00:00' },
      /payload\.start_time: expected an RFC 3339 time/,
    ],
    [
      'a time that is a boolean',
      'register',
      { ...seed('register'), start_time: true },
      /payload\.start_time: expected an RFC 3339 time string or ms integer, got boolean/,
    ],
    [
      'node_version a number',
      'register',
      { ...seed('register'), node_version: 1 },
      /payload\.node_version: expected a string or an object, got number/,
    ],
    [
      'instance_id missing',
      'register',
      { ...seed('register'), instance_id: undefined },
      /payload\.instance_id: required/,
    ],
    ['pid a string', 'register', { ...seed('register'), pid: '12345' }, /payload\.pid: expected integer/],
  ];
  for (const [what, type, payload, reason] of bad) {
    test(`${what} is refused with the field named`, () => {
      const r = parseUplink(TOPIC_COMMAND_UP, JSON.stringify(signed('command', type, payload)));
      assert.equal(r.ok, false);
      assert.ok(!r.ok);
      assert.equal(r.code, 'PROTO_ERR_SCHEMA');
      assert.match(r.reason, reason);
    });
  }
  test('a heartbeat with a bad timestamp or negative uptime is refused', () => {
    for (const p of [{ timestamp: 'noon' }, { uptime: -1 }, 'a string']) {
      const r = parseUplink(TOPIC_MESSAGE_UP, JSON.stringify(signed('message', 'heartbeat', p)));
      assert.equal(r.ok, false, JSON.stringify(p));
    }
  });
});

describe('peekUplink', () => {
  test('reads the project and type of a refused message when well formed, nothing else', () => {
    const msg = signed('command', 'register', { ...seed('register'), start_time: 'yesterday' });
    assert.deepEqual(peekUplink(TOPIC_COMMAND_UP, JSON.stringify(msg)), { project_id: PID, type: 'register' });
    const data = signed('message', 'heartbeat', { timestamp: 'noon' });
    assert.deepEqual(peekUplink(TOPIC_MESSAGE_UP, Buffer.from(JSON.stringify(data))), {
      project_id: PID,
      type: 'heartbeat',
    });
    assert.deepEqual(peekUplink(TOPIC_COMMAND_UP, '{"project_id":"a/b","command_type":"Bad Type"}'), {});
    assert.deepEqual(peekUplink(TOPIC_COMMAND_UP, 'not json'), {});
    assert.deepEqual(peekUplink(TOPIC_COMMAND_UP, Buffer.from([0xff, 0xfe])), {});
    assert.deepEqual(peekUplink(TOPIC_COMMAND_UP, JSON.stringify(msg), { maxBytes: 10 }), {});
  });
});
