import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { after, before, describe, test } from 'node:test';
import { HOST_TOPICS } from '../../../core/host-topics.js';
import { STATUS } from '../../../modules/status/contract/topics.js';
import { WEB } from '../../../modules/web/contract/topics.js';
import { scaled, until } from '../../helpers/wait.js';
import { captureLog, type Json, startWeb, WAIT_MS, type WebHarness, WsClient } from './harness.js';

const API = '/api/exchange-hub';

/** Ids must be contiguous and unique in a run of events from one feed. */
function assertContiguous(ids: number[], from: number, to: number): void {
  assert.deepEqual(
    ids,
    Array.from({ length: to - from + 1 }, (_, i) => from + i),
  );
}

describe('WebSocket feed', () => {
  let w: WebHarness;
  const cap = captureLog();
  before(async () => {
    w = await startWeb({ log: cap.log, web: { ws: { replay: 50, max_buffered_bytes: 65_536 } } });
  });
  after(() => w.stop());

  test('hello carries the epoch; subscribe all receives status and command events in order', async () => {
    const c = await WsClient.open(w.base);
    try {
      const hello = c.received[0];
      assert.equal(typeof hello.epoch, 'string');
      assert.equal(typeof hello.last_event_id, 'number');
      c.send({ op: 'subscribe', all: true });
      await c.next((m) => m.op === 'subscribed' && m.all === true);
      w.domain.setState('ws-a', 'online');
      const sent = await w.call('POST', `${API}/command/send`, {
        project_id: 'ws-a',
        command_type: 'echo',
        payload: 1,
      });
      await c.until(() => c.events().some((e) => e.type === 'command.result'));
      const evs = c.events();
      assert.equal(evs[0].type, 'project.status');
      assert.equal(evs[0].project_id, 'ws-a');
      assert.equal(evs[0].data.state, 'online');
      assert.deepEqual(
        evs.slice(1).map((e: Json) => [e.type, e.command_id, e.type === 'command.state' ? e.data.status : null]),
        [
          ['command.state', sent.json.command_id, 'pending'],
          ['command.state', sent.json.command_id, 'sent'],
          ['command.state', sent.json.command_id, 'acked'],
          ['command.state', sent.json.command_id, 'completed'],
          ['command.result', sent.json.command_id, null],
        ],
      );
      assert.equal(evs.at(-1).data.result.output, '1');
      assert.equal(c.binaryFrames, 0, 'events go out as JSON text frames');
      assertContiguous(
        evs.map((e: Json) => e.id),
        evs[0].id,
        evs[0].id + evs.length - 1,
      );
    } finally {
      await c.close();
    }
  });

  test('subscribe by project and by command receives only those', async () => {
    w.domain.setState('ws-b', 'online');
    w.domain.setState('ws-c', 'online');
    const byProject = await WsClient.open(w.base);
    const byCommand = await WsClient.open(w.base);
    try {
      byProject.send({ op: 'subscribe', projects: ['ws-b'] });
      await byProject.next((m) => m.op === 'subscribed');
      const other = await w.call('POST', `${API}/command/send`, { project_id: 'ws-c', command_type: 'hang' });
      const mine = await w.call('POST', `${API}/command/send`, { project_id: 'ws-b', command_type: 'hang' });
      byCommand.send({ op: 'subscribe', commands: [other.json.command_id] });
      await byCommand.next((m) => m.op === 'subscribed');
      w.domain.log(other.json.command_id, 1, 'line one');
      w.domain.log(mine.json.command_id, 1, 'mine');
      w.domain.setState('ws-b', 'offline');
      await byProject.until(() => byProject.events().some((e) => e.type === 'project.status'));
      await byCommand.until(() => byCommand.events().some((e) => e.type === 'command.log'));
      assert.ok(byProject.events().every((e) => e.project_id === 'ws-b'));
      assert.ok(byProject.events().some((e) => e.type === 'command.log' && e.data.content === 'mine'));
      assert.ok(byCommand.events().every((e) => e.command_id === other.json.command_id));
      // unsubscribe stops the flow
      byProject.send({ op: 'unsubscribe', projects: ['ws-b'] });
      await byProject.next((m) => m.op === 'unsubscribed' && m.projects.length === 0);
      const n = byProject.events().length;
      w.domain.setState('ws-b', 'online');
      byProject.send({ op: 'ping' });
      await byProject.next((m) => m.op === 'pong');
      assert.equal(byProject.events().length, n);
    } finally {
      await byProject.close();
      await byCommand.close();
    }
  });

  test('resume after a reconnect delivers exactly the missed events, then live ones, none twice', async () => {
    const first = await WsClient.open(w.base);
    first.send({ op: 'subscribe', all: true });
    await first.next((m) => m.op === 'subscribed');
    w.domain.setState('ws-r', 'connecting');
    w.domain.setState('ws-r', 'verifying');
    await first.until(() => first.events().length === 2);
    const epoch = first.received[0].epoch;
    const last = first.events().at(-1).id;
    await first.close();

    // missed while away
    for (const s of ['online', 'disconnecting', 'offline', 'connecting', 'online'] as const) {
      w.domain.setState('ws-r', s);
    }
    await w.h.host.bus.drain(WAIT_MS);

    // two ways to resume: fields on the subscribe, or a resume message before it
    for (const style of ['subscribe', 'resume-after', 'resume-first'] as const) {
      const again = await WsClient.open(w.base);
      try {
        if (style === 'subscribe') again.send({ op: 'subscribe', all: true, epoch, last_event_id: last });
        else if (style === 'resume-first') {
          again.send({ op: 'resume', epoch, last_event_id: last });
          again.send({ op: 'subscribe', all: true });
        } else {
          again.send({ op: 'subscribe', all: true });
          await again.next((m) => m.op === 'subscribed');
          again.send({ op: 'resume', epoch, last_event_id: last });
        }
        const done = await again.next((m) => m.op === 'resumed');
        assert.equal(done.count, 5, style);
        const replayed = again.events();
        assertContiguous(
          replayed.map((e: Json) => e.id),
          last + 1,
          last + 5,
        );
        assert.deepEqual(
          replayed.map((e: Json) => e.data.state),
          ['online', 'disconnecting', 'offline', 'connecting', 'online'],
        );
        if (style === 'resume-first') {
          // live events continue right after the replay, without a gap or a repeat
          w.domain.setState('ws-r', 'disconnecting');
          await again.until(() => again.events().length === 6);
          assertContiguous(
            again.events().map((e: Json) => e.id),
            last + 1,
            last + 6,
          );
        }
      } finally {
        await again.close();
      }
    }
  });

  test('resync when the epoch is unknown or the id is older than the replay buffer', async () => {
    const c = await WsClient.open(w.base);
    try {
      c.send({ op: 'subscribe', all: true, epoch: randomUUID(), last_event_id: 3 });
      const r = await c.next((m) => m.op === 'resync');
      assert.equal(r.reason, 'unknown_epoch');
      assert.equal(r.epoch, c.received[0].epoch);
      // the buffer holds 50 events: push 60 more and ask for the first
      for (let i = 0; i < 60; i++) w.domain.setState('ws-old', i % 2 ? 'online' : 'offline');
      await c.until(() => c.events().filter((e) => e.project_id === 'ws-old').length === 60);
      c.send({ op: 'resume', epoch: c.received[0].epoch, last_event_id: 0 });
      const old = await c.next((m) => m.op === 'resync' && m.reason === 'too_old');
      assert.equal(old.reason, 'too_old');
    } finally {
      await c.close();
    }
  });

  test('bad client messages get an error, are counted, and the connection stays usable', async () => {
    const c = await WsClient.open(w.base);
    try {
      c.send('{not json');
      const e1 = await c.next((m) => m.op === 'error');
      assert.equal(e1.code, 'WEB_ERR_WS_MESSAGE');
      assert.match(e1.message, /malformed/);
      c.send({ op: 'dance' });
      c.send({ op: 'subscribe', projects: ['a/b'] });
      c.send({ op: 'subscribe', all: true, admin: true });
      await c.until(() => c.received.filter((m) => m.op === 'error').length === 4);
      const errs = c.received.filter((m) => m.op === 'error');
      assert.match(errs[2].message, /projects\.0/);
      assert.match(errs[3].message, /admin/);
      c.send({ op: 'ping' });
      await c.next((m) => m.op === 'pong');
      const metrics = await w.call('GET', '/metrics');
      assert.match(metrics.text, /hub_ws_messages_rejected_total\{reason="json"\} 1/);
      assert.match(metrics.text, /hub_ws_messages_rejected_total\{reason="invalid"\} 3/);
      // each refusal is one info line with its code (a caller's mistake, not an error of the hub)
      const refused = cap.lines.filter((l) => l.msg === 'websocket message refused');
      assert.equal(refused.length, 4);
      assert.ok(refused.every((l) => l.level === 30 && l.code === 'WEB_ERR_WS_MESSAGE'));
    } finally {
      await c.close();
    }
  });

  test('a burst handled in one turn, larger than max_buffered_bytes, reaches every reading client in order', async () => {
    // The web module coalesces the frames of one turn into one write per client; bytes waiting
    // for that write are not the client's fault and must not count as slowness.
    const slowCuts = async () =>
      Number(/hub_ws_slow_disconnects_total (\d+)/.exec((await w.call('GET', '/metrics')).text)?.[1] ?? 0);
    const before = await slowCuts();
    const clients = await Promise.all([1, 2, 3].map(() => WsClient.open(w.base)));
    try {
      for (const c of clients) {
        c.send({ op: 'subscribe', projects: ['ws-burst'] });
        await c.next((m) => m.op === 'subscribed');
      }
      const reason = 'y'.repeat(16_384);
      const n = 40; // 640 KB per client against a 64 KB limit
      for (let i = 0; i < n; i++) {
        // not awaited: all of them wait in the mailbox and are handled in one slice
        void w.h.host.bus.publish(STATUS.changed('ws-burst'), {
          project_id: 'ws-burst',
          state: 'online',
          previous: 'online',
          reason,
          at: Date.now(),
        });
      }
      for (const c of clients) {
        await c.until(() => c.events().length === n, 10_000);
        const ids = c.events().map((e: Json) => e.id);
        assertContiguous(ids, ids[0], ids[0] + n - 1);
        assert.equal(c.ws.readyState, c.ws.OPEN);
      }
      assert.equal(await slowCuts(), before);
    } finally {
      await Promise.all(clients.map((c) => c.close()));
    }
  });

  test('a slow client is closed with 1013 while a fast one keeps receiving everything', async () => {
    const fast = await WsClient.open(w.base);
    const slow = await WsClient.open(w.base);
    for (const c of [fast, slow]) {
      c.send({ op: 'subscribe', projects: ['ws-flood'] });
      await c.next((m) => m.op === 'subscribed');
    }
    // the slow client stops reading: its kernel buffers fill, then the server's unsent bytes grow
    (slow.ws as unknown as { _socket: { pause(): void } })._socket.pause();
    const reason = 'x'.repeat(16_384);
    let pushed = 0;
    const cut = async () => /hub_ws_slow_disconnects_total 1/.test((await w.call('GET', '/metrics')).text);
    try {
      // at most 200 MB, in batches, until the server gives up on the slow one
      while (pushed < 12_800) {
        for (let i = 0; i < 100; i++, pushed++) {
          await w.h.host.bus.publish(STATUS.changed('ws-flood'), {
            project_id: 'ws-flood',
            state: 'online',
            previous: 'online',
            reason,
            at: Date.now(),
          });
        }
        await w.h.host.bus.drain(WAIT_MS);
        if (await cut()) break;
      }
      assert.ok(await cut(), 'the slow client was cut off');
      await fast.until(() => fast.events().length === pushed, 30_000);
      const ids = fast.events().map((e: Json) => e.id);
      assertContiguous(ids, ids[0], ids[0] + pushed - 1);
      (slow.ws as unknown as { _socket: { resume(): void } })._socket.resume();
      const closed = await slow.closed;
      assert.equal(closed.code, 1013);
      assert.ok(slow.events().length < pushed);
    } finally {
      await fast.close();
      slow.ws.terminate();
    }
  });

  test('keepalive: a client that answers pings stays, one that does not is dropped', async () => {
    // a client must pong within one interval: 20 ms was shorter than a busy machine's turn, and
    // the answering client was dropped too (a run beside another suite)
    const k = await startWeb({ web: { ws: { ping_interval_ms: scaled(250) } } });
    try {
      const c = await WsClient.open(k.base);
      const mute = await WsClient.open(k.base, '', { autoPong: false });
      let pings = 0;
      c.ws.on('ping', () => pings++);
      await until(() => pings >= 3, WAIT_MS, 'three pings');
      const gone = await mute.closed;
      assert.equal(gone.code, 1006, 'terminated without a close frame');
      c.send({ op: 'ping' });
      await c.next((m) => m.op === 'pong');
      await c.close();
    } finally {
      await k.stop();
    }
  });

  test('a message over max_payload_bytes closes the connection with 1009', async () => {
    const c = await WsClient.open(w.base);
    c.send({ op: 'subscribe', projects: ['x'.repeat(70_000)] });
    const closed = await c.closed;
    assert.equal(closed.code, 1009);
  });
});

describe('WebSocket auth and stopping', () => {
  test('with a token: refused without it (401), accepted by header or ?token=; foreign origins refused', async () => {
    const w = await startWeb({ token: 'sekret-token' });
    try {
      const refused = new WsClient(`${w.base.replace('http', 'ws')}${API}/ws`);
      const status = await new Promise<number>((resolve) =>
        refused.ws.on('unexpected-response', (_req, res) => resolve(res.statusCode ?? 0)),
      );
      assert.equal(status, 401);
      const wrong = new WsClient(`${w.base.replace('http', 'ws')}${API}/ws?token=nope`);
      assert.equal(
        await new Promise<number>((resolve) =>
          wrong.ws.on('unexpected-response', (_q, res) => resolve(res.statusCode!)),
        ),
        401,
      );
      const byQuery = await WsClient.open(w.base, '?token=sekret-token');
      const byHeader = await WsClient.open(w.base, '', { headers: { authorization: 'Bearer sekret-token' } });
      await byQuery.close();
      await byHeader.close();
      const foreign = new WsClient(`${w.base.replace('http', 'ws')}${API}/ws?token=sekret-token`, {
        origin: 'https://evil.example',
      });
      assert.equal(
        await new Promise<number>((resolve) =>
          foreign.ws.on('unexpected-response', (_q, res) => resolve(res.statusCode!)),
        ),
        403,
      );
      const elsewhere = new WsClient(`${w.base.replace('http', 'ws')}/api/other?token=sekret-token`);
      assert.equal(
        await new Promise<number>((resolve) =>
          elsewhere.ws.on('unexpected-response', (_q, res) => resolve(res.statusCode!)),
        ),
        404,
      );
    } finally {
      await w.stop();
    }
  });

  test('host/stopping closes clients with 1001 and refuses new upgrades; the host then stops cleanly', async () => {
    const w = await startWeb();
    const c = await WsClient.open(w.base);
    c.send({ op: 'subscribe', all: true });
    await c.next((m) => m.op === 'subscribed');
    await w.h.host.bus.publish(HOST_TOPICS.stopping, {});
    const closed = await c.closed;
    assert.equal(closed.code, 1001);
    const late = new WsClient(`${w.base.replace('http', 'ws')}${API}/ws`);
    assert.equal(
      await new Promise<number>((resolve) => late.ws.on('unexpected-response', (_q, res) => resolve(res.statusCode!))),
      503,
    );
    await w.stop();
  });
});

describe('WebSocket feed: the replay buffer with nobody connected (ws.replay_idle_s)', () => {
  let w: WebHarness;
  before(async () => {
    w = await startWeb({ web: { ws: { replay: 50, replay_idle_s: 0 } } });
  });
  after(() => w.stop());

  /** The server's own count of connected clients (its socket may close after the client's). */
  const clientsNow = async () => (await w.h.host.bus.request<{ ws_clients: number }>(WEB.info('web'), {})).ws_clients;

  test('kept while any client is connected; with nobody connected past the idle time, a resume across the gap is told to resync', async () => {
    const first = await WsClient.open(w.base);
    first.send({ op: 'subscribe', all: true });
    await first.next((m) => m.op === 'subscribed');
    w.domain.setState('ws-idle', 'connecting');
    await first.until(() => first.events().length === 1);
    const epoch = first.received[0].epoch;
    const last = first.events().at(-1).id;

    // another client stays connected: the events after `last` are kept for the first one
    const stay = await WsClient.open(w.base);
    await first.close();
    await until(async () => (await clientsNow()) === 1, WAIT_MS, 'the first client gone');
    w.domain.setState('ws-idle', 'verifying');
    await w.h.host.bus.drain(WAIT_MS);
    const again = await WsClient.open(w.base);
    try {
      again.send({ op: 'subscribe', all: true, epoch, last_event_id: last });
      const done = await again.next((m) => m.op === 'resumed');
      assert.equal(done.count, 1);
      assert.deepEqual(
        again.events().map((e: Json) => e.data.state),
        ['verifying'],
      );
    } finally {
      await again.close();
      await stay.close();
    }

    // nobody connected (replay_idle_s 0): the next events are not kept, and what was kept is let go
    await until(async () => (await clientsNow()) === 0, WAIT_MS, 'every client gone');
    const peek = await WsClient.open(w.base);
    const since = peek.received[0].last_event_id;
    await peek.close();
    await until(async () => (await clientsNow()) === 0, WAIT_MS, 'every client gone again');
    w.domain.setState('ws-idle', 'online');
    w.domain.setState('ws-idle', 'disconnecting');
    await w.h.host.bus.drain(WAIT_MS);
    const kept = async () => Number(/hub_feed_replay_kept (\d+)/.exec((await w.call('GET', '/metrics')).text)?.[1]);
    assert.equal(await kept(), 0, 'nothing kept with nobody connected');
    const late = await WsClient.open(w.base);
    try {
      // never a partial replay: the gap was not kept, so the client must re-read over REST
      late.send({ op: 'subscribe', all: true, epoch, last_event_id: since });
      const r = await late.next((m) => m.op === 'resync');
      assert.equal(r.reason, 'too_old');
      assert.equal(r.last_event_id, since + 2);
      // live events still reach it, and a connected client's gap is kept again
      w.domain.setState('ws-idle', 'offline');
      await late.until(() => late.events().some((e: Json) => e.data.state === 'offline'));
      assert.equal(await kept(), 1, 'kept again while a client is connected');
    } finally {
      await late.close();
    }
  });
});
