/**
 * The table of uplink types (modules/shared/protocol/uplinks.ts) drives everything that
 * enumerates them: a message of every type in its seed shape parses and builds, every type has a
 * handler in its owner and in no other module, the bridge hands every type to its owner (durable
 * ones acknowledged only after the owner answered), the bridge's verification follows each
 * entry's signature and freshness, and the fuzzer generates every type.
 */
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { describe, test } from 'node:test';
import fc from 'fast-check';
import type { IPublishPacket, MqttClient } from 'mqtt';
import { Bus, scopedBus } from '../../../core/bus.js';
import { silentLogger } from '../../../core/log.js';
import type { ModuleTimers } from '../../../core/module.js';
import type { Deps } from '../../../modules/command/deps.js';
import type { OutcomeWindow } from '../../../modules/command/outcome-window.js';
import { Uplinks as CommandUplinks } from '../../../modules/command/uplink.js';
import { AckGate, DEFER_ACK } from '../../../modules/mqtt-bridge/ack-gate.js';
import { BRIDGE, type UplinkEvent } from '../../../modules/mqtt-bridge/contract/topics.js';
import { subscribeUplinks, type UplinkHandlers } from '../../../modules/mqtt-bridge/contract/uplink-routes.js';
import { UplinkHandler } from '../../../modules/mqtt-bridge/uplink.js';
import { UplinkVerifier } from '../../../modules/mqtt-bridge/verify.js';
import {
  buildCommand,
  buildData,
  parseUplink,
  UPLINK_TOPIC,
  UPLINK_TYPES,
  UPLINKS,
  type UplinkOwner,
  type UplinkType,
  uplinkSpec,
  uplinkTypesOf,
} from '../../../modules/shared/protocol.js';
import { signMessage } from '../../../modules/shared/signing.js';
import { type ProjectCredentials, STATUS } from '../../../modules/status/contract/topics.js';
import { Uplinks as StatusUplinks, type UplinkDeps } from '../../../modules/status/uplinks.js';
import { uplinkArb } from '../../fuzz/uplink-gen.js';
import { scaled, until } from '../../helpers/wait.js';

const PID = 'table-p1';
const SECRET = 't'.repeat(32);
const OWNERS: readonly UplinkOwner[] = ['status', 'command'];

/** A message of `type` as an agent sends it: the entry's example payload, on its kind's envelope. */
function agentMessage(type: UplinkType, over: Record<string, unknown> = {}, sign = true): Record<string, unknown> {
  const spec = UPLINKS[type];
  const msg: Record<string, unknown> = {
    message_id: randomUUID(),
    type: spec.kind === 'command' ? 'command' : 'message',
    project_id: PID,
    timestamp: Date.now(),
    version: '1.0',
    ...(spec.kind === 'command' ? { command_type: type } : { data_type: type, encrypted: false }),
    payload: spec.example,
    ...over,
  };
  if (sign) msg.signature = signMessage(msg, SECRET);
  return msg;
}

describe('the uplink table', () => {
  test('a message of every type, in the seed shape of its example, parses on its topic and builds', () => {
    assert.deepEqual(
      UPLINK_TYPES,
      [
        'register',
        'register_complete',
        'heartbeat',
        'command_ack',
        'log_result',
        'exec_result',
        'monitor',
        'alert',
        'disconnect',
      ],
      'the order of docs/wire-protocol.md#message-types (the fuzzer and the JSON Schema follow it)',
    );
    for (const type of UPLINK_TYPES) {
      const spec = UPLINKS[type];
      const r = parseUplink(UPLINK_TOPIC[spec.kind], JSON.stringify(agentMessage(type)));
      assert.ok(r.ok, `${type}: ${r.ok ? '' : `${r.code} ${r.reason}`}`);
      assert.equal(r.value.kind, spec.kind, type);
      const other = spec.kind === 'command' ? UPLINK_TOPIC.data : UPLINK_TOPIC.command;
      const wrong = parseUplink(other, JSON.stringify(agentMessage(type)));
      assert.equal(wrong.ok, false, `${type} is refused on the other uplink topic`);
      // the sender's side checks the same schema
      const built =
        spec.kind === 'command'
          ? buildCommand(PID, type, spec.example, SECRET)
          : buildData(PID, type, spec.example, { secret: SECRET });
      assert.ok(
        parseUplink(UPLINK_TOPIC[spec.kind], JSON.stringify(built)).ok,
        `${type} built by buildCommand/buildData`,
      );
    }
    assert.equal(uplinkSpec('constructor'), undefined, 'only the table own keys are types');
    assert.equal(uplinkSpec('register_ack'), undefined, 'downlinks are not uplinks');
  });

  test('every type has exactly one owner, and that owner has a handler for it', () => {
    const status = new StatusUplinks({} as UplinkDeps);
    const command = new CommandUplinks({} as Deps, {} as ModuleTimers, {} as OutcomeWindow);
    const handlers: Record<UplinkOwner, object> = { status: status.handlers, command: command.handlers };
    for (const owner of OWNERS) {
      assert.deepEqual(Object.keys(handlers[owner]).sort(), [...uplinkTypesOf(owner)].sort(), `${owner}'s handlers`);
    }
    assert.deepEqual(
      OWNERS.flatMap((o) => uplinkTypesOf(o)).sort(),
      [...UPLINK_TYPES].sort(),
      'every type is owned once',
    );
  });

  test('the bridge hands every type to its owner: durable ones as requests acknowledged after the write, the rest as events', async () => {
    const bus = new Bus(silentLogger());
    const creds: ProjectCredentials = { project_id: PID, enabled: true, state: 'online', secrets: [SECRET] };
    bus.mailbox('status').subscribe(STATUS.credentials, () => creds);
    const bridgeBus = scopedBus(bus, bus.mailbox('mqtt-bridge'), () => {});
    const verifier = new UplinkVerifier({ bus: bridgeBus, now: Date.now, credentialsTtlMs: 60_000 });
    const bridge = new UplinkHandler({
      bus: bridgeBus,
      log: silentLogger(),
      maxBytes: 256 * 1024,
      now: Date.now,
      verifier,
      durableWaitMs: scaled(10_000),
    });
    const pubacks: number[] = [];
    const client = {
      stream: {},
      connected: true,
      _sendPacket: (p: { messageId: number }) => pubacks.push(p.messageId),
    } as unknown as MqttClient;
    bridge.attach(new AckGate(client, Date.now), () => {});

    // each owner takes its types through subscribeUplinks, as the status and command modules do
    const received: Array<{ owner: UplinkOwner; type: string; topic: string; message_id: string }> = [];
    for (const owner of OWNERS) {
      const ownerBus = scopedBus(bus, bus.mailbox(owner), () => {});
      const record = (type: string) => (ev: UplinkEvent) => {
        received.push({ owner, type, topic: ev.topic, message_id: ev.msg.message_id });
        return { written: Promise.resolve() };
      };
      const handlers = Object.fromEntries(uplinkTypesOf(owner).map((t) => [t, record(t)]));
      subscribeUplinks(ownerBus, owner, handlers as unknown as UplinkHandlers<typeof owner>);
    }

    const done = new Map<number, Error | undefined>();
    const sent = UPLINK_TYPES.map((type, i) => {
      const msg = agentMessage(type);
      const packet = {
        cmd: 'publish',
        topic: UPLINK_TOPIC[UPLINKS[type].kind],
        payload: Buffer.from(JSON.stringify(msg)),
        qos: 1,
        messageId: i + 1,
        retain: false,
        dup: false,
      } as IPublishPacket;
      bridge.handle(packet, (err) => done.set(i + 1, err));
      return { type, messageId: i + 1, message_id: msg.message_id as string };
    });
    const durable = sent.filter((s) => UPLINKS[s.type].durable);
    await until(
      () => received.length === sent.length && pubacks.length === durable.length,
      10_000,
      'every uplink handed over and every durable one acknowledged',
    );
    for (const s of sent) {
      const spec = UPLINKS[s.type];
      const got = received.filter((r) => r.message_id === s.message_id);
      assert.deepEqual(
        got.map((r) => [r.owner, r.type]),
        [[spec.owner, s.type]],
        `${s.type} reaches ${spec.owner} only, once`,
      );
      assert.equal(got[0].topic, UPLINK_TOPIC[spec.kind]);
      if (spec.durable) {
        assert.equal(done.get(s.messageId), DEFER_ACK, `${s.type}: mqtt.js does not acknowledge it itself`);
        assert.ok(pubacks.includes(s.messageId), `${s.type}: acknowledged once its owner answered`);
      } else {
        assert.equal(done.get(s.messageId), undefined, `${s.type}: acknowledged once the bus took it`);
        assert.ok(!pubacks.includes(s.messageId));
      }
    }
    assert.deepEqual(bridge.counters.rejected_by_code, {});
    assert.equal(BRIDGE.uplink(PID, 'data', 'heartbeat'), `hub/uplink/${PID}/data/heartbeat`);
  });

  test("the bridge's verification follows each entry's signature and freshness", async () => {
    const bus = new Bus(silentLogger());
    let requireDataSignature = false;
    bus.mailbox('status').subscribe(
      STATUS.credentials,
      (): ProjectCredentials => ({
        project_id: PID,
        enabled: true,
        state: 'online',
        secrets: [SECRET],
        require_data_signature: requireDataSignature,
      }),
    );
    const verifierBus = scopedBus(bus, bus.mailbox('mqtt-bridge'), () => {});
    const fresh = () => new UplinkVerifier({ bus: verifierBus, now: Date.now, credentialsTtlMs: 0 });
    for (const type of UPLINK_TYPES) {
      const spec = UPLINKS[type];
      const kind = spec.kind;
      const verify = async (v: UplinkVerifier, msg: Record<string, unknown>) =>
        v.verify(kind, msg as unknown as Parameters<UplinkVerifier['verify']>[1]);

      // a copy signed 400 s ago: only a type that is not checked against the past is taken
      const old = await verify(fresh(), agentMessage(type, { timestamp: Date.now() - 400_000 }));
      assert.equal(old.ok, spec.freshness !== 'window_and_replay', `${type}: an old copy (${spec.freshness})`);

      // the same message twice, the first handled: a replay only where the id is checked
      const v = fresh();
      const msg = agentMessage(type);
      const first = await verify(v, msg);
      assert.ok(first.ok, type);
      v.commit(first.replayKey);
      const again = await verify(v, msg);
      assert.equal(again.ok, spec.freshness !== 'window_and_replay', `${type}: a second copy (${spec.freshness})`);

      if (kind === 'data') {
        // unsigned: taken when the entry and the project allow it
        for (const required of [false, true]) {
          requireDataSignature = required;
          const r = await verify(fresh(), agentMessage(type, {}, false));
          const allowed: boolean = spec.signature === 'when_present' && !required;
          assert.equal(r.ok, allowed, `${type} unsigned, require_data_signature ${required}`);
          if (!r.ok) assert.equal(r.code, 'PROTO_ERR_UNSIGNED');
        }
        requireDataSignature = false;
      }
    }
  });

  test('the fuzzer generates every type of the table', () => {
    const ids = {
      a: { project_id: 'fuzz-a', secret: SECRET },
      b: { project_id: 'fuzz-b', secret: 'u'.repeat(32) },
      commandsA: [randomUUID()],
      commandsB: [randomUUID()],
    };
    const types = new Set(
      fc.sample(uplinkArb(ids, Date.now(), [randomUUID()]), { numRuns: 400, seed: 1 }).map((u) => u.type),
    );
    assert.deepEqual([...types].sort(), [...UPLINK_TYPES].sort());
  });
});
