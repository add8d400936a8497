import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { EventOrder, MAX_REMEMBERED } from '../../../modules/command/events.js';
import { CommandOwners, MAX_OWNERS } from '../../../modules/command/owners.js';

const id = (i: number) => `00000000-0000-4000-8000-${String(i).padStart(12, '0')}`;

describe('EventOrder: the per-command gate of state and result events', () => {
  test('a state goes out only above the last version shown; a terminal state once; a result once', () => {
    const o = new EventOrder();
    assert.equal(o.admitState('c', 1, 'pending'), true);
    assert.equal(o.admitState('c', 1, 'pending'), false, 'the same version again');
    assert.equal(o.newer('c', 1), false);
    assert.equal(o.newer('c', 2), true);
    assert.equal(o.admitState('c', 3, 'completed'), true);
    assert.equal(o.admitState('c', 2, 'sent'), false, 'an older version never goes out after a newer one');
    assert.equal(o.admitState('c', 4, 'completed'), false, 'a terminal state just shown, with another version');
    assert.equal(o.admitState('c', undefined, 'completed'), true, 'no version: no gate');
    assert.equal(o.admitResult('c'), true);
    assert.equal(o.admitResult('c'), false);
    assert.equal(o.hasResult('c'), true);
  });

  test('the packed entry keeps version, status and result apart, at any version the tracker gives', () => {
    const o = new EventOrder();
    assert.equal(o.admitResult('r'), true, 'a result before any state');
    assert.equal(o.newer('r', 0), true, 'no state shown yet: any version goes out');
    assert.equal(o.admitState('r', 0, 'completed'), true);
    assert.equal(o.hasResult('r'), true, 'the state kept the result');
    assert.equal(o.admitResult('r'), false);
    assert.equal(o.admitState('r', 1, 'completed'), false, 'the same terminal state, another version');
    assert.equal(o.admitState('r', 2, 'failed'), true, 'another terminal state');
    const big = 2 ** 40 + 3;
    assert.equal(o.admitState('v', big, 'acked'), true);
    assert.equal(o.newer('v', big), false);
    assert.equal(o.newer('v', big + 1), true);
    assert.equal(o.admitState('v', big + 1, 'acked'), true, 'a later version of the same non-terminal status');
    assert.equal(o.hasResult('v'), false);
    assert.equal(o.admitState('w', 1, 'a status no list has'), true);
    assert.equal(o.admitState('w', 1, 'acked'), false, 'gated by version whatever the status');
    assert.equal(o.admitState('x', 2 ** 53, 'acked'), true, 'a version the number cannot carry is not gated');
    assert.equal(o.admitState('x', 2 ** 53, 'acked'), true);
  });

  test('full, it forgets the least recently changed commands first, and only those', () => {
    const o = new EventOrder();
    o.admitState(id(0), 1, 'pending');
    o.admitResult(id(0));
    for (let i = 1; i <= MAX_REMEMBERED; i++) {
      o.admitState(id(i), 1, 'pending');
      o.admitResult(id(i));
      // command 1 changes again halfway: it is then among the most recent
      if (i === MAX_REMEMBERED / 2) o.admitState(id(1), 2, 'sent');
    }
    assert.equal(o.newer(id(0), 1), true, 'the oldest was forgotten: its version 1 would go out again');
    assert.equal(o.hasResult(id(0)), false, 'and its result with it (one entry per command)');
    assert.equal(o.newer(id(1), 2), false, 'changed halfway: still remembered');
    assert.equal(o.newer(id(2), 1), false, 'one past the cap forgets one: the second oldest stays');
    assert.equal(o.hasResult(id(MAX_REMEMBERED)), true);
    assert.equal(o.admitResult(id(0)), true, 'the forgotten result would go out again');
  });
});

describe('CommandOwners: memory of which project owns a command', () => {
  test('full, it forgets the least recently used first', () => {
    const owners = new CommandOwners(() => undefined);
    for (let i = 0; i < MAX_OWNERS; i++) owners.remember(id(i), `p-${i % 7}`);
    assert.equal(owners.cached(id(0)), 'p-0');
    owners.remember(id(MAX_OWNERS), 'p-x');
    assert.equal(owners.cached(id(0)), 'p-0', 'read just before: kept');
    assert.equal(owners.cached(id(1)), undefined, 'the least recently used went (the table would be asked)');
    assert.equal(owners.cached(id(MAX_OWNERS)), 'p-x');
  });
});
