import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import fc from 'fast-check';
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

describe('EventFeed replay while nobody holds it (idleMs)', () => {
  const all = { all: true };
  const ids = (r: ReturnType<EventFeed['since']>) => (r.ok ? r.events.map((e) => e.id) : r.reason);

  test('events are kept while a client holds the feed and for idleMs after the last lets go; then the ring is emptied', () => {
    let t = 0;
    const feed = new EventFeed({ replay: 10, idleMs: 1000, now: () => t });
    feed.push(ev('p'));
    feed.push(ev('p'));
    assert.equal(feed.kept, 0, 'nobody has held the feed: nobody can resume, nothing kept');
    assert.deepEqual(ids(feed.since(feed.epoch, 0, all)), 'too_old');
    assert.deepEqual(ids(feed.since(feed.epoch, 2, all)), [], 'nothing missed: nothing to replay');

    const release = feed.hold();
    for (let i = 0; i < 3; i++) feed.push(ev('p'));
    assert.deepEqual(ids(feed.since(feed.epoch, 2, all)), [3, 4, 5]);
    release();
    release(); // a second call lets go of nothing more
    t += 999;
    feed.push(ev('p'));
    assert.deepEqual(ids(feed.since(feed.epoch, 2, all)), [3, 4, 5, 6], 'within idleMs of the last release');

    const other = feed.hold();
    t += 5000;
    feed.push(ev('p'));
    assert.deepEqual(ids(feed.since(feed.epoch, 2, all)), [3, 4, 5, 6, 7], 'a holder keeps it, however long');
    other();

    t += 1000;
    feed.push(ev('p'));
    assert.equal(feed.kept, 0, 'idleMs after the last release: emptied at the next event');
    // never a partial replay: the ids before 8 are gone, so a resume from them must resync
    assert.deepEqual(ids(feed.since(feed.epoch, 6, all)), 'too_old');
    assert.deepEqual(ids(feed.since(feed.epoch, 8, all)), []);

    const off = feed.watch({ filter: all, deliver: () => true });
    feed.push(ev('p'));
    feed.push(ev('p'));
    assert.deepEqual(ids(feed.since(feed.epoch, 8, all)), [9, 10], 'a watcher holds the feed too');
    assert.deepEqual(ids(feed.since(feed.epoch, 7, all)), 'too_old');
    off();
  });

  test("commands' owners are learned only while events are kept, and let go with them", () => {
    const feed = new EventFeed({ idleMs: 0 });
    const f = feed as unknown as { fromCommand(ev: unknown): void; owners: { size: number } | null };
    const view = (project_id: string, command_id: string) => ({ project_id, command_id, status: 'sent' });
    f.fromCommand({ kind: 'state', command: view('a', 'c-1'), at: 1 });
    assert.equal(f.owners?.size ?? 0, 0, 'nobody connected: nothing learned');
    const seen: string[] = [];
    const off = feed.watch({
      filter: { commands: ['c-2'] },
      deliver: (ev) => seen.push(`${ev.type} ${ev.project_id}`) > 0,
    });
    f.fromCommand({ kind: 'state', command: view('b', 'c-2'), at: 2 });
    f.fromCommand({ kind: 'log', project_id: 'a', command_id: 'c-2', seq: 0, content: 'forged', at: 3 });
    assert.deepEqual(seen, ['command.state b'], 'a watcher holds the feed: the owner is known and checked');
    off();
    feed.push(ev('p'));
    assert.equal(f.owners, null, 'let go with the events');
  });

  test('property: a resume is either exactly every matching event after its id, or a resync', () => {
    type Step =
      | { op: 'push'; project: 'a' | 'b' }
      | { op: 'hold' }
      | { op: 'release'; which: number }
      | { op: 'advance'; ms: number }
      | { op: 'since'; back: number; project: 'a' | 'b' | null };
    const step: fc.Arbitrary<Step> = fc.oneof(
      {
        weight: 5,
        arbitrary: fc.record({
          op: fc.constant('push' as const),
          project: fc.constantFrom('a' as const, 'b' as const),
        }),
      },
      { weight: 2, arbitrary: fc.record({ op: fc.constant('hold' as const) }) },
      { weight: 2, arbitrary: fc.record({ op: fc.constant('release' as const), which: fc.nat(5) }) },
      {
        weight: 2,
        arbitrary: fc.record({
          op: fc.constant('advance' as const),
          ms: fc.oneof(fc.integer({ min: 0, max: 999 }), fc.constant(1000)),
        }),
      },
      {
        weight: 3,
        arbitrary: fc.record({
          op: fc.constant('since' as const),
          back: fc.nat(20),
          project: fc.constantFrom('a' as const, 'b' as const, null),
        }),
      },
    );
    fc.assert(
      fc.property(
        fc.integer({ min: 1, max: 8 }),
        fc.array(step, { minLength: 10, maxLength: 120, size: 'max' }),
        (replay, steps) => {
          let t = 0;
          const feed = new EventFeed({ replay, idleMs: 1000, now: () => t });
          const history: Array<{ id: number; project: string }> = [];
          const releases: Array<() => void> = [];
          let holders = 0;
          let releasedAt = Number.NEGATIVE_INFINITY;
          /** The first id pushed since keeping last (re)started: a resume from before it cannot be whole. */
          let keptFrom = Number.POSITIVE_INFINITY;
          for (const s of steps) {
            if (s.op === 'push') {
              const keeping = holders > 0 || t - releasedAt < 1000;
              const e = feed.push(ev(s.project));
              history.push({ id: e.id, project: s.project });
              if (!keeping) keptFrom = Number.POSITIVE_INFINITY;
              else if (keptFrom === Number.POSITIVE_INFINITY) keptFrom = e.id;
            } else if (s.op === 'hold') {
              releases.push(feed.hold());
              holders++;
            } else if (s.op === 'release') {
              const r = releases.splice(s.which % Math.max(1, releases.length), 1)[0];
              if (r) {
                r();
                holders--;
                if (holders === 0) releasedAt = t;
              }
            } else if (s.op === 'advance') t += s.ms;
            else {
              const last = Math.max(0, feed.lastId - s.back);
              const filter = s.project === null ? all : { projects: [s.project] };
              const r = feed.since(feed.epoch, last, filter);
              const want = history.filter((h) => h.id > last && (s.project === null || h.project === s.project));
              if (r.ok) {
                // safety: exactly the events after `last` that match, in order, none missing
                assert.deepEqual(
                  r.events.map((e) => e.id),
                  want.map((h) => h.id),
                );
              } else {
                assert.equal(r.reason, 'too_old');
                // liveness: a resume from within what was kept, and within the ring's size, is answered
                const within = last + 1 >= keptFrom && feed.lastId - last <= replay;
                assert.ok(
                  !within,
                  `resync for ${last} though kept from ${keptFrom} (last ${feed.lastId}, replay ${replay})`,
                );
              }
            }
          }
        },
      ),
      { numRuns: 1000 },
    );
  });
});
