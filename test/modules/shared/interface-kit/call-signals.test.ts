/**
 * Per-call abort signals (interface-kit/call-signals.ts): the REST and gRPC sync waits end when
 * the module stops, through one listener on its stop signal whatever the number of calls. With a
 * listener per call, Node's EventTarget walked every other call's on each add and remove.
 */
import assert from 'node:assert/strict';
import { getEventListeners } from 'node:events';
import { describe, test } from 'node:test';
import { CallSignals } from '../../../../modules/shared/interface-kit/call-signals.js';

describe('call signals', () => {
  test('a thousand calls in flight: one listener on the stop signal, and stopping ends them all', () => {
    const stop = new AbortController();
    const calls = new CallSignals(stop.signal);
    const open = Array.from({ length: 1000 }, () => calls.open());
    assert.equal(getEventListeners(stop.signal, 'abort').length, 1);
    assert.equal(calls.size, 1000);
    // calls that ended are no longer held, and not aborted by the stop
    const ended = open.splice(0, 400);
    for (const ac of ended) calls.end(ac);
    assert.equal(calls.size, 600);
    stop.abort();
    assert.ok(
      open.every((ac) => ac.signal.aborted),
      'every open call aborted',
    );
    assert.ok(
      ended.every((ac) => !ac.signal.aborted),
      'ended calls left alone',
    );
    assert.equal(calls.size, 0);
  });

  test('a call opened once the module is stopping is aborted from the start and not held', () => {
    const stop = new AbortController();
    const calls = new CallSignals(stop.signal);
    stop.abort();
    const ac = calls.open();
    assert.equal(ac.signal.aborted, true);
    assert.equal(calls.size, 0);
  });

  test('a call aborted on its own (the client went away) leaves the others running', () => {
    const stop = new AbortController();
    const calls = new CallSignals(stop.signal);
    const a = calls.open();
    const b = calls.open();
    a.abort();
    calls.end(a);
    assert.equal(b.signal.aborted, false);
    assert.equal(calls.size, 1);
  });
});
