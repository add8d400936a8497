/**
 * Hostile MQTT uplinks, generated with fast-check: a message of each uplink type of the table
 * (modules/shared/protocol/uplinks.ts) as an agent of project A would send it, then mutated — fields removed or given the wrong type,
 * huge, deeply nested, NUL and lone-surrogate values, other projects' ids and command ids,
 * absent, bogus or foreign signatures, stale timestamps, reused message ids, wrong topics, and
 * bytes that are not JSON at all.
 */
import { randomUUID } from 'node:crypto';
import fc from 'fast-check';
import {
  TOPIC_COMMAND_UP,
  TOPIC_MESSAGE_UP,
  UPLINK_TOPIC,
  UPLINK_TYPES,
  UPLINKS,
  type UplinkType,
} from '../../modules/shared/protocol.js';
import { canonicalJson, signMessage, wireText } from '../../modules/shared/signing.js';

export interface FuzzIds {
  /** The attacker: the agent that publishes, logged in as this project. */
  a: { project_id: string; secret: string };
  /** The victim: its ids and command ids are what A aims at. */
  b: { project_id: string; secret: string };
  commandsA: readonly string[];
  commandsB: readonly string[];
}

export interface FuzzUplink {
  topic: string;
  body: string | Buffer;
  /** the type it started as (for the figures) */
  type: string;
}

const DEEP = '\u0001DEEP\u0001';
const deepText = (n: number): string => `${'{"d":'.repeat(n)}1${'}'.repeat(n)}`;

// Arbitraries are built once: a `binary` string arbitrary builds a table of every code point
// when it is made, which per generated value was most of the generator's time.
const binary40 = fc.string({ unit: 'binary', maxLength: 40 });
const binary20 = fc.string({ unit: 'binary', maxLength: 20 });

/** Values no field should hold: every kind of JSON, and the hostile ones. */
const hostileValue: fc.Arbitrary<unknown> = fc.oneof(
  { weight: 10, arbitrary: fc.jsonValue({ maxDepth: 3 }) },
  { weight: 3, arbitrary: fc.string({ unit: 'binary', maxLength: 30 }) },
  { weight: 3, arbitrary: fc.constantFrom('\u0000', 'a\u0000b', '\ud800', 'x\udfff', '\ud83d', '\u0000\ud800') },
  // past the depth limit; now and then as deep as the original finding (10 000)
  { weight: 1, arbitrary: fc.constantFrom(33, 40, 64, 200, 10_000).map((n) => `${DEEP}${n}${DEEP}`) },
  // large, and now and then past the 256 KiB message limit
  { weight: 1, arbitrary: fc.constantFrom(1_000, 5_000, 20_000, 300_000).map((n) => 'x'.repeat(n)) },
  {
    weight: 1,
    arbitrary: fc.constantFrom(-1, 1e308, -1e308, 2 ** 53 + 1, 0.5, '', null, [], {}, true, '__proto__', {
      __proto__: { polluted: 1 },
    }),
  },
);

function commandId(ids: FuzzIds): fc.Arbitrary<string> {
  return fc.oneof(
    ...(ids.commandsA.length > 0 ? [fc.constantFrom(...ids.commandsA)] : []),
    ...(ids.commandsB.length > 0 ? [fc.constantFrom(...ids.commandsB)] : []),
    fc.constant(null).map(() => randomUUID()),
    fc.uuid(),
    ...(ids.commandsB.length > 0 ? [fc.constantFrom(...ids.commandsB).map((s) => s.toUpperCase())] : []),
  );
}

const metrics = fc.dictionary(fc.string({ maxLength: 8 }), fc.jsonValue({ maxDepth: 2 }), { maxKeys: 4 });

/**
 * A valid payload of `type`, varied where it matters (command ids of both projects, sizes,
 * metrics); a type without its own generator here starts from its table entry's example.
 */
function basePayload(type: UplinkType, cmd: fc.Arbitrary<string>, now: number): fc.Arbitrary<Record<string, unknown>> {
  switch (type) {
    case 'register':
      return fc.record({
        node_name: fc.constant('fuzz'),
        instance_id: fc.constantFrom('fuzz-1', 'fuzz-2'),
        version: fc.constant('0.0.0'),
        pid: fc.nat(),
        start_time: fc.constant(now),
        capabilities: fc.array(fc.string({ maxLength: 8 }), { maxLength: 3 }),
        metadata: metrics,
        node_version: fc.constant('v20'),
      });
    case 'register_complete':
      return fc.record({ instance_id: fc.constantFrom('fuzz-1', 'fuzz-2') }, { requiredKeys: [] });
    case 'heartbeat':
      return fc.record(
        { instance_id: fc.constant('fuzz-1'), timestamp: fc.constant(now), uptime_s: fc.nat(), metrics },
        { requiredKeys: [] },
      );
    case 'command_ack':
      return fc.record({ command_id: cmd });
    case 'log_result':
      return fc.record({ command_id: cmd, seq: fc.nat(), content: binary40 });
    case 'exec_result':
      return fc.record({
        command_id: cmd,
        status: fc.constantFrom('success', 'failure', 'timeout'),
        exit_code: fc.integer(),
        output: binary40,
        error: binary20,
        start_time: fc.constant(now - 5),
        end_time: fc.constant(now),
        duration: fc.constant(5),
      });
    case 'monitor':
      return fc.record({ metrics });
    case 'alert':
      return fc.record({
        level: fc.constantFrom('info', 'warning', 'error', 'critical'),
        message: fc.string({ maxLength: 20 }),
      });
    case 'disconnect':
      return fc.record({ reason: fc.string({ maxLength: 20 }) }, { requiredKeys: [] });
    default:
      // a type added to the table after this generator: its example, mutated like the rest
      return fc.constant({ ...UPLINKS[type as UplinkType].example });
  }
}

const PAYLOAD_KEYS = [
  'command_id',
  'status',
  'exit_code',
  'output',
  'error',
  'seq',
  'content',
  'metrics',
  'level',
  'message',
  'reason',
  'instance_id',
  'pid',
  'capabilities',
  'metadata',
  'start_time',
];
const ENVELOPE_KEYS = ['message_id', 'type', 'project_id', 'timestamp', 'version', 'data_type', 'command_type'];

type Edit =
  | { where: 'payload' | 'envelope'; key: string; op: 'delete' }
  | { where: 'payload' | 'envelope'; key: string; op: 'set'; value: unknown };

const edit: fc.Arbitrary<Edit> = fc.oneof(
  fc
    .tuple(fc.constantFrom(...PAYLOAD_KEYS), fc.boolean(), hostileValue)
    .map(
      ([key, del, value]): Edit =>
        del ? { where: 'payload', key, op: 'delete' } : { where: 'payload', key, op: 'set', value },
    ),
  fc
    .tuple(fc.constantFrom(...ENVELOPE_KEYS), fc.boolean(), hostileValue)
    .map(
      ([key, del, value]): Edit =>
        del ? { where: 'envelope', key, op: 'delete' } : { where: 'envelope', key, op: 'set', value },
    ),
);

type SignMode = 'own' | 'none' | 'garbage' | 'wrong_secret' | 'victim_secret_guess';

/**
 * One hostile uplink from A. `reuseIds` is a small pool of message ids, so some messages
 * repeat an id (replays); `now` is the hub's clock at generation.
 */
export function uplinkArb(ids: FuzzIds, now: number, reuseIds: readonly string[]): fc.Arbitrary<FuzzUplink> {
  const cmd = commandId(ids);
  return fc.oneof(...UPLINK_TYPES.map((type) => oneType(type, ids, cmd, now, reuseIds)));
}

function oneType(
  type: UplinkType,
  ids: FuzzIds,
  cmd: fc.Arbitrary<string>,
  now: number,
  reuseIds: readonly string[],
): fc.Arbitrary<FuzzUplink> {
  return fc
    .record({
      payload: basePayload(type, cmd, now),
      edits: fc.oneof(
        { weight: 2, arbitrary: fc.constant<Edit[]>([]) },
        { weight: 3, arbitrary: fc.array(edit, { minLength: 1, maxLength: 3 }) },
      ),
      project: fc.oneof(
        { weight: 16, arbitrary: fc.constant<'a' | 'b' | 'bad'>('a') },
        { weight: 1, arbitrary: fc.constantFrom<'a' | 'b' | 'bad'>('b', 'bad') },
      ),
      messageId: fc.oneof(
        { weight: 8, arbitrary: fc.constant(null).map(() => randomUUID()) },
        { weight: 1, arbitrary: fc.constantFrom(...reuseIds) },
      ),
      skew: fc.oneof(
        { weight: 8, arbitrary: fc.constant(0) },
        { weight: 1, arbitrary: fc.constantFrom(-400_000, 400_000, -now) },
      ),
      sign: fc.constantFrom<SignMode>(
        'own',
        'own',
        'own',
        'none',
        'none',
        'garbage',
        'wrong_secret',
        'victim_secret_guess',
      ),
      topic: fc.oneof(
        { weight: 12, arbitrary: fc.constant('right') },
        { weight: 1, arbitrary: fc.constant('swapped') },
        {
          weight: 1,
          arbitrary: fc.constantFrom(
            'wdd/RDMC/command/down/x',
            `wdd/RDMC/message/down/${ids.b.project_id}`,
            'wdd/RDMC/message/up/extra',
          ),
        },
      ),
      // as the reference agent writes (the text it signed, signature last: checked as sent) or JSON.stringify's envelope order
      writing: fc.constantFrom<'as_signed' | 'envelope'>('as_signed', 'envelope'),
      bytes: fc.oneof(
        { weight: 14, arbitrary: fc.constant<null | { at: number; byte: number } | 'truncate' | 'notjson'>(null) },
        { weight: 1, arbitrary: fc.record({ at: fc.nat(), byte: fc.integer({ min: 0, max: 255 }) }) },
        { weight: 1, arbitrary: fc.constantFrom<'truncate' | 'notjson'>('truncate', 'notjson') },
      ),
    })
    .map((g): FuzzUplink => {
      const isCommand = UPLINKS[type].kind === 'command';
      const projectId =
        g.project === 'a' ? ids.a.project_id : g.project === 'b' ? ids.b.project_id : `${ids.a.project_id}/x`;
      const msg: Record<string, unknown> = {
        message_id: g.messageId,
        type: isCommand ? 'command' : 'message',
        project_id: projectId,
        timestamp: now + g.skew,
        version: '1.0',
        ...(isCommand ? { command_type: type } : { data_type: type, encrypted: false }),
        payload: { ...g.payload },
      };
      let deep = false;
      for (const e of g.edits) {
        const target = e.where === 'payload' ? (msg.payload as Record<string, unknown>) : msg;
        if (e.op === 'delete') delete target[e.key];
        else {
          Object.defineProperty(target, e.key, {
            value: e.value,
            enumerable: true,
            configurable: true,
            writable: true,
          });
          if (typeof e.value === 'string' && e.value.startsWith(DEEP)) deep = true;
        }
      }
      let text: string;
      try {
        if (!deep && g.sign !== 'none') {
          const secret =
            g.sign === 'own'
              ? ids.a.secret
              : g.sign === 'victim_secret_guess'
                ? ids.b.secret.slice(0, 8)
                : 'not-the-secret';
          msg.signature = g.sign === 'garbage' ? 'zz'.repeat(32) : signMessage(msg, secret);
        }
        const { signature, ...unsigned } = msg;
        text =
          g.writing === 'as_signed' && typeof signature === 'string'
            ? wireText(canonicalJson(unsigned), signature)
            : JSON.stringify(msg);
      } catch {
        // canonical JSON refused the message (a lone surrogate in a key, say): send it unsigned
        delete msg.signature;
        text = JSON.stringify(msg);
      }
      if (deep) {
        text = text.replace(new RegExp(`"${DEEP}(\\d+)${DEEP}"`, 'g'), (_m, n: string) => deepText(Number(n)));
      }
      const right = UPLINK_TOPIC[UPLINKS[type].kind];
      const topic =
        g.topic === 'right'
          ? right
          : g.topic === 'swapped'
            ? isCommand
              ? TOPIC_MESSAGE_UP
              : TOPIC_COMMAND_UP
            : g.topic;
      let body: string | Buffer = text;
      if (g.bytes === 'truncate') body = text.slice(0, Math.floor(text.length / 2));
      else if (g.bytes === 'notjson') body = `not json ${text.slice(0, 20)}`;
      else if (g.bytes) {
        const b = Buffer.from(text);
        b[g.bytes.at % b.length] = g.bytes.byte;
        body = b;
      }
      return { topic, body, type };
    });
}
