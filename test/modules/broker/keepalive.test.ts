/**
 * modules/broker/keepalive.ts through the broker module: one sweep stands in for aedes' timer a
 * connection. A client silent past 1.5× its keepalive is ended (its will published); one that
 * keeps pinging stays; one that asked for no keepalive is never ended by it; and every client
 * that asked for one holds a mark, not a Node timer (the memory it saves).
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import type { IConnectPacket } from 'mqtt-packet';
import { KeepaliveMark, KeepaliveSweep } from '../../../modules/broker/keepalive.js';
import { deriveMqttPassword } from '../../../modules/shared/credentials.js';
import { type RawMqttClient, rawMqttClient } from '../../helpers/mqtt.js';
import { scaled, until } from '../../helpers/wait.js';
import { A, type BrokerUnderTest, connectHub, end, recorder, startBroker, subscribe, uplink } from './setup.js';

const UP_MSG = 'wdd/RDMC/message/up';

/** Agent A's connection written packet by packet: it pings only when the test says. */
function rawAgent(
  url: string,
  clientId: string,
  keepalive: number,
  will?: IConnectPacket['will'],
): Promise<RawMqttClient> {
  return rawMqttClient(Number(new URL(url).port), {
    clientId,
    keepalive,
    username: A.id,
    password: Buffer.from(deriveMqttPassword(A.id, A.secret)),
    ...(will ? { will } : {}),
  });
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe('keepalive by one sweep (the broker module)', () => {
  let b: BrokerUnderTest;
  before(async () => {
    b = await startBroker();
  });
  after(async () => {
    await b?.stop();
  });

  test('a client silent past 1.5× its keepalive is ended, and its will is published', async () => {
    const hub = await connectHub(b);
    const seen = recorder(hub);
    assert.deepEqual(await subscribe(hub, [UP_MSG]), [1]);
    const raw = await rawAgent(b.url, 'ka-silent', 1, {
      topic: UP_MSG,
      payload: Buffer.from(uplink(A.id, 'ka-will')),
      qos: 1,
      retain: false,
    });
    try {
      // not before its interval (1.5 s): a window where nothing may happen, so not scaled
      await sleep(1_000);
      assert.equal(raw.closed(), false, 'still connected within its interval');
      const before = (await b.stats()).keepalive_timeouts;
      await until(() => raw.closed(), scaled(15_000), 'the silent client ended');
      // by the sweep, not by a timer of aedes' own (which counts nothing here)
      assert.equal((await b.stats()).keepalive_timeouts, before + 1);
      await until(() => seen.seen.some((m) => m.marker === 'ka-will'), scaled(10_000), 'its will published');
    } finally {
      await raw.drop();
      await end(hub);
    }
  });

  test('a client that pings stays for many intervals, then ends once it stops', async () => {
    const raw = await rawAgent(b.url, 'ka-pinging', 1);
    try {
      for (let i = 0; i < 8; i++) {
        raw.send({ cmd: 'pingreq' });
        await sleep(500);
        assert.equal(raw.closed(), false, `connected after ${(i + 1) * 500} ms of pings`);
      }
      const pongs = raw.packets.filter((p) => p.cmd === 'pingresp').length;
      assert.ok(pongs >= 7, `answered its pings (${pongs} of 8)`);
      await until(() => raw.closed(), scaled(15_000), 'ended once silent');
    } finally {
      await raw.drop();
    }
  });

  test('keepalive 0 asks for none: the client is never ended for silence', async () => {
    const raw = await rawAgent(b.url, 'ka-none', 0);
    try {
      await sleep(2_500);
      assert.equal(raw.closed(), false);
      raw.send({ cmd: 'pingreq' });
      await until(() => raw.packets.some((p) => p.cmd === 'pingresp'), scaled(10_000), 'still served');
    } finally {
      await raw.drop();
    }
  });
});

describe('KeepaliveSweep on aedes clients', () => {
  test('a connected client holds a mark, no Node timer; ended once; a client gone leaves; one unlike aedes 1.x keeps its own', () => {
    const emitted: string[] = [];
    const aedes = { emit: (e: string) => emitted.push(e) };
    const sweep = new KeepaliveSweep(aedes as never);
    const clientOf = (interval: number) => {
      const errors: string[] = [];
      const timer = setTimeout(() => assert.fail('aedes timer fired after adopt'), 60_000);
      return {
        errors,
        timer,
        client: {
          _keepaliveInterval: interval,
          _keepaliveTimer: timer as unknown,
          emit: (_e: string, err: Error) => errors.push(err.message),
        },
      };
    };
    try {
      const silent = clientOf(1_501);
      const alive = clientOf(1_501);
      const gone = clientOf(1_501);
      for (const x of [silent, alive, gone]) assert.equal(sweep.adopt(x.client as never), 'adopted');
      assert.ok(silent.client._keepaliveTimer instanceof KeepaliveMark);
      assert.equal((silent.timer as unknown as { _destroyed: boolean })._destroyed, true, "aedes' timer cleared");
      assert.equal(sweep.size, 3);
      // silent past its interval (its mark moved back): ended once, however many sweeps follow
      (silent.client._keepaliveTimer as KeepaliveMark).at -= 100;
      // closed by aedes (which sets the timer to null): dropped at the next sweep, never ended
      gone.client._keepaliveTimer = null;
      sweep.sweep();
      sweep.sweep();
      assert.deepEqual(silent.errors, ['keep alive timeout']);
      assert.deepEqual(emitted, ['keepaliveTimeout']);
      assert.deepEqual([alive.errors, gone.errors], [[], []]);
      assert.equal(sweep.ended, 1);
      assert.equal(sweep.size, 1, 'the live client only');
      // clearTimeout, as aedes calls it at close, takes a mark without complaint
      clearTimeout(alive.client._keepaliveTimer as never);

      assert.equal(sweep.adopt({ _keepaliveInterval: -1, _keepaliveTimer: null } as never), 'none');
      const other = { refresh() {} };
      const unlike = { _keepaliveInterval: 1_501, _keepaliveTimer: other };
      assert.equal(sweep.adopt(unlike as never), 'unlike');
      assert.equal(unlike._keepaliveTimer, other, 'left as it was');

      // the broker closing: a client connecting meanwhile keeps aedes' timer, no sweep outlives it
      sweep.stop();
      const late = clientOf(1_501);
      assert.equal(sweep.adopt(late.client as never), 'none');
      assert.equal(late.client._keepaliveTimer, late.timer);
      clearTimeout(late.timer);
    } finally {
      sweep.stop();
    }
  });
});
