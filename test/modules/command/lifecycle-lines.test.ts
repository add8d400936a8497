import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { test } from 'node:test';
import { createRootLogger } from '../../../core/log.js';
import type { CommandView } from '../../../modules/command/contract/topics.js';
import { LifecycleLines } from '../../../modules/command/lifecycle-lines.js';
import { until } from '../../helpers/wait.js';

interface Line {
  msg: string;
  command_id?: string;
  status?: string;
}

/** A root logger whose lines land in `lines` (parsed), synchronously. */
function capture(onLine: (l: Line) => void = () => {}) {
  const lines: Line[] = [];
  const log = createRootLogger({
    level: 'info',
    destination: {
      write(s: string) {
        const l = JSON.parse(s) as Line;
        lines.push(l);
        onLine(l);
      },
    },
  });
  return { log, lines };
}

function view(status: string, over: Partial<CommandView> = {}): CommandView {
  return {
    command_id: randomUUID(),
    project_id: 'plant-7',
    command_type: 'echo',
    module: null,
    operator_id: null,
    status,
    is_sync: true,
    offline_policy: 'fail',
    attempts: 1,
    created_at: '2026-12-06T10:00:00.000Z',
    sent_at: null,
    acked_at: null,
    started_at: null,
    completed_at: status === 'completed' ? '2026-12-06T10:00:00.025Z' : null,
    timeout_at: '2026-12-06T10:01:00.000Z',
    schedule_at: null,
    late_result: false,
    error: null,
    job_id: null,
    ...over,
  } as CommandView;
}

const turn = () => new Promise<void>((r) => setImmediate(r));

test('a change’s line is written in the next turn: after the immediates its moment queued (the mailbox turns of its I/O)', async () => {
  const { log, lines } = capture();
  const trail = new LifecycleLines(log);
  const order: string[] = [];
  const accepted = view('pending');
  // what a send does: its publish is asked for in a microtask (the relay's fast lane), which
  // queues the bridge's mailbox turn; then its state goes out with its line
  queueMicrotask(() => setImmediate(() => order.push(`publish (${lines.length} lines by then)`)));
  trail.add(accepted, Date.now());
  assert.equal(lines.length, 0, 'nothing written in the moment of the change');
  assert.equal(trail.waiting, 1);
  await turn();
  await turn();
  assert.deepEqual(order, ['publish (0 lines by then)']);
  assert.deepEqual(
    lines.map((l) => [l.msg, l.command_id]),
    [['command accepted', accepted.command_id]],
  );
  assert.equal(trail.waiting, 0);
});

test('lines keep their order, states without a line hold nothing, and flush writes what is held at once', async () => {
  const { log, lines } = capture();
  const trail = new LifecycleLines(log);
  const a = view('pending');
  const sent = view('sent');
  const b = view('completed');
  const c = view('failed', { error: 'agent reported failure' });
  const d = view('scheduled', { schedule_at: '2026-12-24T18:00:00.000Z' });
  for (const v of [a, sent, b, c, d]) trail.add(v, Date.now());
  assert.equal(trail.waiting, 4, 'a sent state has no line');
  trail.flush(); // the module stops
  assert.deepEqual(
    lines.map((l) => [l.msg, l.command_id]),
    [
      ['command accepted', a.command_id],
      ['command completed', b.command_id],
      ['command failed', c.command_id],
      ['command scheduled', d.command_id],
    ],
  );
  await turn();
  await turn();
  assert.equal(lines.length, 4, 'the scheduled write finds nothing left: no line twice');
  trail.add(view('timeout'), Date.now());
  await until(() => lines.length === 5, 2000, 'a later change is written in its own turn');
});
