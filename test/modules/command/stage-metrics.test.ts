/**
 * The command module reports its latencies and final statuses itself (`metrics/command`):
 * `hub_command_stage_seconds{stage}` and `hub_commands_final_total{status}`, from the events it
 * sends, once per command however often a state goes out, and never for another instance's
 * (`remote`) commands. The web module only renders them (test/modules/web/ops.test.ts).
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import type { MetricFamily } from '../../../core/metrics.js';
import type { CommandEvent, CommandView } from '../../../modules/command/contract/topics.js';
import { StageMetrics } from '../../../modules/command/stage-metrics.js';

const T0 = Date.parse('2026-01-01T00:00:00.000Z');
const iso = (ms: number) => new Date(T0 + ms).toISOString();

function command(status: CommandView['status'], over: Partial<CommandView> = {}): CommandView {
  return {
    command_id: 'c-1',
    project_id: 'p-1',
    command_type: 'echo',
    module: null,
    operator_id: null,
    status,
    is_sync: false,
    offline_policy: 'fail',
    attempts: 1,
    created_at: iso(0),
    sent_at: null,
    acked_at: null,
    started_at: null,
    completed_at: null,
    timeout_at: iso(60_000),
    late_result: false,
    error: null,
    job_id: null,
    schedule_at: null,
    ...over,
  };
}

const state = (c: CommandView, remote = false): CommandEvent => ({
  kind: 'state',
  command: c,
  at: T0,
  ...(remote ? { remote: true as const } : {}),
});

function result(c: CommandView, durationMs: number): CommandEvent {
  const r = { status: 'success' as const, exit_code: 0, output: '', error: '', start_time: 0, end_time: 0 };
  return {
    kind: 'result',
    command: c,
    result: { ...r, duration: durationMs, received_at: c.completed_at ?? iso(0) },
    payload: null,
    timings: { queue_ms: null, delivery_ms: null, execution_ms: null, total_ms: null },
    at: T0,
  };
}

const family = (fs: MetricFamily[], name: string) => {
  const f = fs.find((x) => x.name === name);
  assert.ok(f, name);
  return f;
};
const countOf = (f: MetricFamily, label: string, value: string) =>
  f.samples.find((s) => s.labels?.[label] === value)?.value;

describe('command stage metrics', () => {
  test('one command: each stage observed once however often its state goes out, its final status once', () => {
    const m = new StageMetrics();
    const sent = command('sent', { sent_at: iso(2) });
    const acked = command('acked', { sent_at: iso(2), acked_at: iso(5) });
    const done = command('completed', { sent_at: iso(2), acked_at: iso(5), completed_at: iso(12) });
    for (const ev of [state(command('pending')), state(sent), state(sent), state(acked), state(done), state(done)]) {
      m.observe(ev);
    }
    m.observe(result(done, 3));
    const fs = m.families();
    const stage = family(fs, 'hub_command_stage_seconds');
    assert.equal(stage.type, 'histogram');
    assert.deepEqual(stage.labelNames, ['stage']);
    for (const s of ['queue', 'delivery', 'execution', 'total']) assert.equal(countOf(stage, 'stage', s), 1, s);
    const execution = stage.samples.find((s) => s.labels?.stage === 'execution')!;
    assert.equal(execution.sum, 0.003);
    // 3 ms is in the first bucket (le 0.005) and, cumulatively, in every one after it
    assert.equal(stage.buckets?.[0], 0.005);
    assert.ok(execution.counts?.every((n) => n === 1));
    const total = stage.samples.find((s) => s.labels?.stage === 'total')!;
    assert.equal(total.sum, 0.012);
    assert.deepEqual(total.counts?.slice(0, 3), [0, 0, 1], '12 ms: above 0.005 and 0.01, within 0.025');
    const finals = family(fs, 'hub_commands_final_total');
    assert.equal(finals.type, 'counter');
    assert.deepEqual(
      finals.samples.map((s) => [s.labels?.status, s.value]),
      [['completed', 1]],
    );
  });

  test('another instance’s commands and log chunks are not this instance’s to count', () => {
    const m = new StageMetrics();
    const done = command('failed', { sent_at: iso(1), acked_at: iso(2), completed_at: iso(3) });
    m.observe(state(done, true));
    m.observe({ kind: 'log', command_id: 'c-1', project_id: 'p-1', seq: 0, content: 'x', at: T0 });
    const fs = m.families();
    assert.deepEqual(family(fs, 'hub_command_stage_seconds').samples, []);
    assert.deepEqual(family(fs, 'hub_commands_final_total').samples, []);
    m.observe(state(done));
    assert.equal(countOf(family(m.families(), 'hub_commands_final_total'), 'status', 'failed'), 1);
  });

  test('a finished command stays known: a copy of its last events, after its result, is not counted again', () => {
    const m = new StageMetrics();
    const done = command('completed', { sent_at: iso(2), acked_at: iso(5), completed_at: iso(12) });
    const failed = command('failed', { command_id: 'c-2', sent_at: iso(1), acked_at: iso(2), completed_at: iso(3) });
    for (const ev of [state(done), result(done, 3), state(failed)]) m.observe(ev);
    // the broker redelivers, another path publishes the row again: both commands are finished
    for (const ev of [state(done), result(done, 3), state(failed), state(done)]) m.observe(ev);
    const fs = m.families();
    const stage = family(fs, 'hub_command_stage_seconds');
    for (const s of ['queue', 'delivery', 'total']) assert.equal(countOf(stage, 'stage', s), 2, s);
    assert.equal(countOf(stage, 'stage', 'execution'), 1);
    const finals = family(fs, 'hub_commands_final_total');
    assert.equal(countOf(finals, 'status', 'completed'), 1);
    assert.equal(countOf(finals, 'status', 'failed'), 1);
  });
});
