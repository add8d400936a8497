import assert from 'node:assert/strict';
import { Readable } from 'node:stream';
import { test } from 'node:test';
import type { Aedes, Client } from 'aedes';
import type { IPublishPacket } from 'mqtt-packet';
import { connectClient, rawMqttClient, startTestBroker } from '../../helpers/mqtt.js';
import { deferred, until } from '../../helpers/wait.js';

/**
 * A persistent session's queue on real aedes with the embedded broker's session queues
 * (`startTestBroker` builds it with `sessionQueues`: the indexed queues, and a forward check
 * dropping stale resends), driven by a client written packet by packet so the test decides which
 * PUBACKs go out. `errors`: what aedes reported of its clients.
 */
async function startBroker() {
  const b = await startTestBroker();
  const errors: string[] = [];
  b.aedes.on('clientError', (_c, err) => errors.push(err.message));
  return { ...b, errors };
}

/** One connection of a persistent session (clean session off) that acknowledges only when told. */
async function rawSession(port: number, clientId: string) {
  const raw = await rawMqttClient(port, { clientId, clean: false }, 5000);
  return Object.assign(raw, {
    subscribe: async (topic: string) => {
      raw.send({ cmd: 'subscribe', messageId: 1, subscriptions: [{ topic, qos: 1 }] });
      await until(() => raw.packets.some((p) => p.cmd === 'suback'), 5000, 'SUBACK');
    },
    puback: (messageId: number) => raw.send({ cmd: 'puback', messageId }),
  });
}

const text = (p: IPublishPacket) => p.payload.toString();

test('a PUBACK on a new connection clears its own packet, not an older one that had the same id', async () => {
  const b = await startBroker();
  const id = 'session-ids';
  // aedes numbers a connection's packets from a random start: make the second one start at the
  // id the first connection gave its unacknowledged packet, as it does by chance once in a while
  let forceNextId: number | undefined;
  b.aedes.on('client', (c: Client) => {
    if (c.id === id && forceNextId !== undefined) (c as unknown as { _nextId: number })._nextId = forceNextId;
  });
  const publisher = await connectClient(`mqtt://127.0.0.1:${b.port}`);
  try {
    const first = await rawSession(b.port, id);
    await first.subscribe('t');
    await publisher.publishAsync('t', 'P', { qos: 1 });
    await until(() => first.publishes.length === 1, 5000, 'P on the first connection');
    const pId = first.publishes[0].messageId!;
    await first.drop(); // P not acknowledged: it stays in the session's queue with its id

    forceNextId = pId;
    const second = await rawSession(b.port, id);
    await until(() => second.publishes.some((p) => text(p) === 'P'), 5000, 'P resent on reconnect');
    assert.equal(second.publishes.find((p) => text(p) === 'P')!.messageId, pId, 'a resend keeps its id');
    await publisher.publishAsync('t', 'Q', { qos: 1 });
    await until(() => second.publishes.some((p) => text(p) === 'Q'), 5000, 'Q on the second connection');
    const qId = second.publishes.find((p) => text(p) === 'Q')!.messageId!;
    assert.notEqual(qId, pId, 'a new packet never takes an id a queued packet holds');
    second.puback(qId); // Q handled; P still not
    await until(async () => (await queued(b.aedes, id)).length === 1, 5000, 'Q cleared');
    await second.drop();

    const third = await rawSession(b.port, id);
    await until(() => third.publishes.length > 0, 5000, 'the resend on the third connection');
    await new Promise((r) => setTimeout(r, 100)); // anything else the resend would bring
    assert.deepEqual(third.publishes.map(text), ['P'], 'P comes again, Q (acknowledged) does not');
    third.puback(pId);
    await until(async () => (await queued(b.aedes, id)).length === 0, 5000, 'the queue empty');
    await third.drop();
    assert.deepEqual(
      b.errors.filter((e) => e === 'no such packet'),
      [],
    );
  } finally {
    await publisher.endAsync();
    await b.close();
  }
});

/**
 * A broker whose resend of a session's queue on reconnect (aedes' `emptyQueue`, which walks a
 * snapshot of it) waits at two gates: before the snapshot is taken, and after, before the first
 * packet of it is resent. That is the window in which a new packet reaches the client at once
 * and is in the snapshot too: what the client does with it meanwhile is up to the test.
 */
async function startGatedBroker() {
  const b = await startBroker();
  const persistence = (b.aedes as unknown as { persistence: { outgoingStream(c: { id: string }): Readable } })
    .persistence;
  const realStream = persistence.outgoingStream.bind(persistence);
  const gates = { beforeSnapshot: deferred(), snapshotTaken: deferred(), beforeResend: deferred() };
  let armed = false;
  persistence.outgoingStream = (client) => {
    // only the resend of the connection the test arms it for (aedes reads the queue elsewhere too)
    if (!armed) return realStream(client);
    armed = false;
    return Readable.from(
      (async function* gated() {
        await gates.beforeSnapshot.promise;
        const snapshot: unknown[] = [];
        for await (const p of realStream(client)) snapshot.push(p);
        gates.snapshotTaken.resolve();
        await gates.beforeResend.promise;
        yield* snapshot;
      })(),
    );
  };
  return {
    ...b,
    gates,
    /** The next connection's resend waits at the gates. */
    arm: () => {
      armed = true;
    },
  };
}

for (const when of ['before', 'after'] as const) {
  test(`a new packet that is also in the resend's snapshot, acknowledged ${when} the resend comes to it: sent once, the connection stays`, async () => {
    const b = await startGatedBroker();
    const id = `session-resend-${when}`;
    const publisher = await connectClient(`mqtt://127.0.0.1:${b.port}`);
    try {
      const first = await rawSession(b.port, id);
      await first.subscribe('t');
      await first.drop();
      await publisher.publishAsync('t', 'B', { qos: 1 }); // queued while the session is away
      b.arm();
      const second = await rawSession(b.port, id); // its resend waits at the first gate
      await publisher.publishAsync('t', 'L', { qos: 1 }); // reaches the client at once, and the queue
      await until(() => second.publishes.some((p) => text(p) === 'L'), 5000, 'L sent at once');
      const lId = second.publishes.find((p) => text(p) === 'L')!.messageId!;
      b.gates.beforeSnapshot.resolve();
      await b.gates.snapshotTaken.promise; // B and L in it
      if (when === 'before') {
        second.puback(lId);
        await until(async () => (await queued(b.aedes, id)).length === 1, 5000, 'L cleared');
      }
      b.gates.beforeResend.resolve();
      await until(() => second.publishes.some((p) => text(p) === 'B'), 5000, 'B resent');
      second.puback(second.publishes.find((p) => text(p) === 'B')!.messageId!);
      if (when === 'after') second.puback(lId);
      await until(async () => (await queued(b.aedes, id)).length === 0, 5000, 'the queue empty');
      await new Promise((r) => setTimeout(r, 100)); // a second L would be on its way
      assert.deepEqual(second.publishes.map(text).sort(), ['B', 'L'], 'each packet once');
      // aedes' error for a resend of a packet no longer queued, after which it closed the connection
      assert.deepEqual(
        b.errors.filter((e) => e !== 'connection closed'),
        [],
        'the connection was never closed over the resend',
      );
      await second.drop();
    } finally {
      await publisher.endAsync();
      await b.close();
    }
  });
}

/** The packets a session's queue holds now. */
async function queued(aedes: Aedes, clientId: string): Promise<unknown[]> {
  const out: unknown[] = [];
  const persistence = (
    aedes as unknown as { persistence: { outgoingStream(c: { id: string }): AsyncIterable<unknown> } }
  ).persistence;
  for await (const p of persistence.outgoingStream({ id: clientId })) out.push(p);
  return out;
}
