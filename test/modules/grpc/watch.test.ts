import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { after, before, describe, test } from 'node:test';
import { type ClientReadableStream, type Metadata, type ServiceError, status } from '@grpc/grpc-js';
import { until, withTimeout } from '../../helpers/wait.js';
import { call, type Hub, logEvent, type Msg, startHub, statusEvent, watch } from './harness.js';

interface Collected {
  stream: ClientReadableStream<Msg>;
  events: Msg[];
  metadata: Promise<Metadata>;
  ended: Promise<ServiceError>;
}

/** Opens a stream and records everything it delivers. */
function collect(hub: Hub, req: Msg, client = hub.client): Collected {
  const stream = watch(client, req);
  const events: Msg[] = [];
  stream.on('data', (ev: Msg) => events.push(ev));
  const metadata = new Promise<Metadata>((resolve) => stream.once('metadata', resolve));
  const ended = new Promise<ServiceError>((resolve) => stream.once('error', resolve));
  return { stream, events, metadata, ended };
}

/** Opens a stream and waits until the server has registered it (its initial metadata came). */
async function open(hub: Hub, req: Msg, client = hub.client): Promise<Collected & { epoch: string; lastId: number }> {
  const c = collect(hub, req, client);
  const md = await withTimeout(c.metadata, 5000, 'stream metadata');
  return { ...c, epoch: String(md.get('feed-epoch')[0]), lastId: Number(md.get('feed-last-id')[0]) };
}

const data = (ev: Msg) => JSON.parse(String(ev.data_json)) as Record<string, unknown>;
const seqs = (c: Collected) => c.events.map((e) => data(e).seq);
const enough = (c: Collected, n: number, what: string) => until(() => c.events.length >= n, 5000, what);

function close(c: Collected): void {
  c.stream.cancel();
}

describe('grpc: WatchEvents', () => {
  let hub: Hub;
  before(async () => {
    // a burst of events is written in one turn of the event loop, faster than any socket drains:
    // the stream buffer must hold the bursts of these tests (50 events) with room to spare
    hub = await startHub({ replay: 40, stream_buffer_max: 100 });
  });
  after(async () => {
    await hub?.stop();
  });

  test('filters: all, by project, by command', async () => {
    const cmd = randomUUID();
    const all = await open(hub, { all: true });
    const proj = await open(hub, { projects: ['f-1'] });
    const byCmd = await open(hub, { commands: [cmd] });

    statusEvent(hub, 'f-1', 'online');
    logEvent(hub, 'f-1', randomUUID(), 1);
    statusEvent(hub, 'f-2', 'online');
    // the fake command module emits command.state then command.result for it (a command of
    // f-1: a watcher of a command sees only events naming the command's own project)
    const done = await call<{ command: Msg }>(hub.client, 'SendSyncCommand', {
      project_id: 'f-1',
      command_type: 'echo',
      payload_json: '{"x":1}',
      command_id: cmd,
    });
    assert.equal(done.command.status, 'completed');
    // a last event every stream matches: once it arrives, nothing earlier is still on its way
    logEvent(hub, 'f-1', cmd, 99);

    await enough(all, 6, 'all: 6 events');
    await enough(proj, 5, 'project: 5 events');
    await enough(byCmd, 3, 'command: 3 events');
    assert.deepEqual(
      all.events.map((e) => `${e.type} ${e.project_id}`),
      [
        'project.status f-1',
        'command.log f-1',
        'project.status f-2',
        'command.state f-1',
        'command.result f-1',
        'command.log f-1',
      ],
    );
    assert.deepEqual(
      proj.events.map((e) => e.type),
      ['project.status', 'command.log', 'command.state', 'command.result', 'command.log'],
    );
    assert.deepEqual(
      byCmd.events.map((e) => e.type),
      ['command.state', 'command.result', 'command.log'],
    );
    // ids are consecutive in the feed, events carry the feed's epoch, data is JSON text
    const ids = all.events.map((e) => Number(e.id));
    assert.deepEqual(
      ids,
      ids.map((_, i) => ids[0] + i),
    );
    assert.equal(ids[0], all.lastId + 1);
    for (const e of all.events) assert.equal(e.epoch, all.epoch);
    const result = data(byCmd.events[1]) as { command: Msg; result: Msg };
    assert.equal(result.command.command_id, cmd);
    assert.equal(result.result.output, '{"x":1}');
    assert.equal(byCmd.events[1].command_id, cmd);
    assert.equal(data(all.events[0]).state, 'online');
    assert.equal(all.events[0].command_id, undefined);
    for (const c of [all, proj, byCmd]) close(c);
  });

  test('a client that reconnects with its last id gets exactly the events it missed, then live ones', async () => {
    const first = await open(hub, { projects: ['r-1'] });
    const cmd = randomUUID();
    for (let i = 1; i <= 3; i++) {
      logEvent(hub, 'r-1', cmd, i);
      logEvent(hub, 'r-other', cmd, 100 + i);
    }
    await enough(first, 3, 'three events before the disconnect');
    const last = first.events[2];
    close(first);
    await first.ended;

    for (let i = 4; i <= 6; i++) {
      logEvent(hub, 'r-1', cmd, i);
      logEvent(hub, 'r-other', cmd, 100 + i);
    }
    await until(async () => (await hub.stats()).feed_last_id >= Number(last.id) + 6, 5000, 'events while away');
    const again = collect(hub, { projects: ['r-1'], resume_epoch: last.epoch, last_event_id: last.id });
    await enough(again, 3, 'the missed events');
    logEvent(hub, 'r-1', cmd, 7);
    await enough(again, 4, 'the live event');
    assert.deepEqual(seqs(first), [1, 2, 3]);
    assert.deepEqual(seqs(again), [4, 5, 6, 7]);
    close(again);
  });

  test('resuming from the initial metadata when no event had arrived yet', async () => {
    const first = await open(hub, { projects: ['r-2'] });
    close(first);
    await first.ended;
    logEvent(hub, 'r-2', randomUUID(), 1);
    const again = collect(hub, { projects: ['r-2'], resume_epoch: first.epoch, last_event_id: first.lastId });
    await enough(again, 1, 'the missed event');
    logEvent(hub, 'r-2', randomUUID(), 2);
    await enough(again, 2, 'the live event');
    assert.deepEqual(seqs(again), [1, 2]);
    close(again);
  });

  test('an impossible resume starts with one resync event, then goes on live', async () => {
    const other = collect(hub, { projects: ['r-3'], resume_epoch: 'not-this-feed', last_event_id: 1 });
    await enough(other, 1, 'resync');
    assert.equal(other.events[0].type, 'resync');
    assert.deepEqual(data(other.events[0]), { reason: 'unknown_epoch', oldest: data(other.events[0]).oldest });
    logEvent(hub, 'r-3', randomUUID(), 1);
    await enough(other, 2, 'live after resync');
    assert.deepEqual(
      other.events.map((e) => e.type),
      ['resync', 'command.log'],
    );
    close(other);

    // older than the replay buffer (40 events)
    const probe = await open(hub, { projects: ['r-4'] });
    close(probe);
    for (let i = 0; i < 50; i++) logEvent(hub, 'r-4', randomUUID(), i);
    await until(async () => (await hub.stats()).feed_last_id >= probe.lastId + 50, 5000, '50 events');
    const old = collect(hub, { projects: ['r-4'], resume_epoch: probe.epoch, last_event_id: probe.lastId });
    await enough(old, 1, 'resync');
    assert.equal(old.events[0].type, 'resync');
    const d = data(old.events[0]);
    assert.equal(d.reason, 'too_old');
    assert.equal(d.oldest, probe.lastId + 50 - 40 + 1);
    assert.equal(old.events[0].id, probe.lastId + 50, 'a resync carries the last id: resume from it later');
    close(old);
  });

  test('a stream that does not read is ended with RESOURCE_EXHAUSTED; another keeps receiving', async () => {
    const slowClient = hub.newClient();
    const fastClient = hub.newClient();
    const slow = await open(hub, { projects: ['s-1'] }, slowClient);
    const fast = await open(hub, { projects: ['s-1'] }, fastClient);
    slow.stream.pause();
    const cmd = randomUUID();
    const chunk = 'x'.repeat(4096);
    let sent = 0;
    const before = (await hub.stats()).streams_slow;
    assert.equal(before, 0, 'the bursts of the earlier tests cut no healthy stream');
    // publish until the server gives up on the slow stream (HTTP/2 flow control fills, then its queue)
    for (let round = 0; round < 500 && (await hub.stats()).streams_slow === before; round++) {
      for (let i = 0; i < 20; i++) logEvent(hub, 's-1', cmd, ++sent, chunk);
      await enough(fast, sent, 'the fast stream keeps up');
    }
    const stats = await hub.stats();
    assert.equal(stats.streams_slow, before + 1);
    logEvent(hub, 's-1', cmd, ++sent, 'after');
    await enough(fast, sent, 'the fast stream after the slow one was ended');
    assert.deepEqual(
      seqs(fast),
      Array.from({ length: sent }, (_, i) => i + 1),
    );

    // the slow client reads what it had been sent, in order, then the status
    slow.stream.resume();
    const err = await withTimeout(slow.ended, 5000, 'the slow stream to end');
    assert.equal(err.code, status.RESOURCE_EXHAUSTED);
    assert.match(err.details, /did not keep up/);
    assert.ok(slow.events.length < sent);
    assert.deepEqual(
      seqs(slow),
      Array.from({ length: slow.events.length }, (_, i) => i + 1),
    );
    close(fast);
    await until(async () => (await hub.stats()).streams_open === 0, 5000, 'streams closed');
  });
});

describe('grpc: WatchEvents with no stream open (replay_idle_s)', () => {
  let hub: Hub;
  before(async () => {
    hub = await startHub({ replay: 40, replay_idle_s: 0 });
  });
  after(async () => {
    await hub.stop();
  });

  test('events are kept while a stream is open; with none open past the idle time a resume starts with resync', async () => {
    const probe = await open(hub, { projects: ['i-1'] });
    logEvent(hub, 'i-1', randomUUID(), 1);
    await enough(probe, 1, 'a live event');
    assert.equal((await hub.stats()).feed_replay_kept, 1, 'kept while the stream is open');
    close(probe);
    await until(async () => (await hub.stats()).streams_open === 0, 5000, 'the stream ended on the server');
    const last = probe.events[0];
    logEvent(hub, 'i-1', randomUUID(), 2);
    await until(async () => (await hub.stats()).feed_last_id >= Number(last.id) + 1, 5000, 'the event while away');
    assert.equal((await hub.stats()).feed_replay_kept, 0, 'nobody can resume: nothing kept');
    const again = collect(hub, { projects: ['i-1'], resume_epoch: last.epoch, last_event_id: last.id });
    await enough(again, 1, 'resync');
    assert.equal(again.events[0].type, 'resync');
    assert.equal(data(again.events[0]).reason, 'too_old');
    logEvent(hub, 'i-1', randomUUID(), 3);
    await enough(again, 2, 'live after the resync');
    assert.deepEqual(
      again.events.map((e) => e.type),
      ['resync', 'command.log'],
    );
    assert.equal(seqs(again).at(-1), 3);
    close(again);
  });
});
