import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { commandConfigSchema } from '../../../modules/command/config.js';
import { type Counters, newCounters } from '../../../modules/command/events.js';
import { OutcomeWindow } from '../../../modules/command/outcome-window.js';
import type { Claimed } from '../../../modules/command/relay.js';
import { scaled, until } from '../../helpers/wait.js';

/**
 * The publish outcome window on its own (the hub-level behaviour is in publish-outcome.test.ts):
 * which outcomes reach the write at the window's end, whichever of the PUBACK and the ack's write
 * came first.
 */
function row(id: string): Claimed {
  return { id, command_id: id, project_id: 'p', topic: 't', payload: '{}', attempts: 1, had_error: false, fast: true };
}

function windowOf(delayMs: number): {
  w: OutcomeWindow;
  writes: Array<{ ids: string[]; at: Map<string, number> }>;
  tracked: Promise<void>[];
  counters: Counters;
} {
  const writes: Array<{ ids: string[]; at: Map<string, number> }> = [];
  const tracked: Promise<void>[] = [];
  const counters = newCounters();
  const w = new OutcomeWindow({
    delayMs,
    counters,
    write: async (rows, at) => {
      writes.push({ ids: rows.map((r) => r.command_id), at });
    },
    track: (run) => tracked.push(run),
  });
  return { w, writes, tracked, counters };
}

describe('publish outcome window', () => {
  test('at its end only the outcomes no ack wrote are written, with their PUBACK times', async () => {
    const { w, writes, counters } = windowOf(50);
    // acked before the window saw its PUBACK (the bridge may hand over the ack first)
    w.ackWritten('early');
    assert.equal(w.hold(row('early'), 1_000), true);
    assert.equal(w.hold(row('late'), 2_000), true);
    assert.equal(w.hold(row('silent'), 3_000), true);
    assert.equal(w.pubackAt('late'), 2_000, 'the ack write reads the PUBACK time while the window holds it');
    w.ackWritten('late');
    await until(() => writes.length === 1, scaled(10_000), 'the window ends');
    assert.deepEqual(writes[0].ids, ['silent']);
    assert.equal(writes[0].at.get('silent'), 3_000);
    assert.equal(counters.outcomes_skipped, 2);
    assert.equal(w.pubackAt('silent'), undefined, 'nothing is held after the end');
  });

  test('an ack remembered for a command the window never held does not skip a later outcome of another', async () => {
    const { w, writes } = windowOf(20);
    w.ackWritten('never-held');
    w.hold(row('a'), 1);
    await until(() => writes.length === 1, scaled(10_000), 'the window ends');
    assert.deepEqual(writes[0].ids, ['a']);
  });

  test('a stop writes what is held at once, and nothing is held after it', () => {
    const { w, writes, tracked } = windowOf(60_000);
    w.hold(row('a'), 1);
    w.stop();
    assert.deepEqual(
      writes.map((x) => x.ids),
      [['a']],
      'written at the stop, not after the minute',
    );
    assert.equal(tracked.length, 1, 'the write is one the stop waits for');
    assert.equal(w.hold(row('b'), 2), false, 'after the stop the caller writes the outcome itself');
  });

  test('a full window is written without waiting for its timer', () => {
    const { w, writes } = windowOf(60_000);
    for (let i = 0; i < 2_000; i++) w.hold(row(`c${i}`), i);
    assert.equal(writes.length, 1);
    assert.equal(writes[0].ids.length, 2_000);
    w.stop();
  });
});

describe('the window by default', () => {
  test('lasts as long as the first re-publish backoff: an agent that has not acked by its end is published again then anyway', () => {
    const d = commandConfigSchema.parse({});
    // at 256 commands in flight on 2 cores, 37-58 % of acks came after a 250 ms window, and each of
    // those commands paid a tracker UPDATE its ack made stale a moment later (docs/benchmarks.md "The publish
    // outcome window as long as the first backoff")
    assert.equal(d.publish_outcome_delay_ms, d.retry_base_ms);
  });
});
