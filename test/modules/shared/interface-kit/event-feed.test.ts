import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { EventFeed } from '../../../../modules/shared/interface-kit/event-feed.js';

const ev = (project_id: string) => ({ type: 'project.status' as const, project_id, at: 0, data: {} });

describe('EventFeed replay buffer', () => {
  test('keeps the newest `replay` events across wrap-around, in order; older ids must resync', () => {
    const feed = new EventFeed({ replay: 3 });
    for (let i = 1; i <= 7; i++) feed.push(ev(i % 2 ? 'odd' : 'even'));
    assert.equal(feed.lastId, 7);
    const all = { all: true };
    const ids = (r: ReturnType<EventFeed['since']>) => (r.ok ? r.events.map((e) => e.id) : r.reason);
    assert.deepEqual(ids(feed.since(feed.epoch, 4, all)), [5, 6, 7]);
    assert.deepEqual(ids(feed.since(feed.epoch, 5, all)), [6, 7]);
    assert.deepEqual(ids(feed.since(feed.epoch, 7, all)), []);
    assert.deepEqual(ids(feed.since(feed.epoch, 3, all)), 'too_old');
    assert.deepEqual(ids(feed.since('another-epoch', 5, all)), 'unknown_epoch');
    assert.deepEqual(ids(feed.since(feed.epoch, 4, { projects: ['odd'] })), [5, 7]);
  });

  test('replay 0 keeps nothing: any gap asks for a resync', () => {
    const feed = new EventFeed({ replay: 0 });
    feed.push(ev('p'));
    feed.push(ev('p'));
    const r = feed.since(feed.epoch, 1, { all: true });
    assert.equal(r.ok, false);
  });
});

describe('EventFeed command watchers', () => {
  const view = (project_id: string, command_id: string) =>
    ({
      project_id,
      command_id,
      status: 'sent',
    }) as unknown as import('../../../../modules/command/contract/topics.js').CommandView;

  test('a command is matched on (project, command): a log naming another project reaches no watcher of it', () => {
    const feed = new EventFeed();
    const seen: string[] = [];
    feed.watch({ filter: { commands: ['c-b'] }, deliver: (ev) => seen.push(`${ev.type} ${ev.project_id}`) > 0 });
    const f = feed as unknown as { fromCommand(ev: unknown): void };
    f.fromCommand({ kind: 'state', command: view('b', 'c-b'), at: 1 });
    f.fromCommand({ kind: 'log', project_id: 'a', command_id: 'c-b', seq: 0, content: 'forged', at: 2 });
    f.fromCommand({ kind: 'log', project_id: 'b', command_id: 'c-b', seq: 1, content: 'real', at: 3 });
    assert.deepEqual(seen, ['command.state b', 'command.log b']);
    // replay applies the same rule
    const r = feed.since(feed.epoch, 0, { commands: ['c-b'] });
    assert.ok(r.ok);
    assert.deepEqual(
      r.events.map((e) => `${e.type} ${e.project_id}`),
      ['command.state b', 'command.log b'],
    );
  });
});
