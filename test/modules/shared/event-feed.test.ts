import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { EventFeed } from '../../../modules/shared/event-feed.js';

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
