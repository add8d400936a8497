/**
 * Regression (found by test/e2e/hub-agent.test.ts, "an async send completes with its timings"):
 * completed_at was the agent's end_time, on the agent's clock, and sent_at the moment the relay
 * wrote a whole batch's outcome, so total_ms came out smaller than queue_ms under load, and an
 * agent whose clock is behind (anything within the ±300 s window is accepted) made it negative.
 * Now created, sent, acked and completed are all the hub's moments, in that order.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { DRIVERS, execResult, type Hub, startHub, uplink } from '../modules/command/harness.js';

const driver = DRIVERS[0];

describe(`command timings are on the hub's clock (${driver.name})`, () => {
  let hub: Hub;
  before(async () => {
    hub = await startHub(driver);
  });
  after(async () => {
    await hub?.stop();
  });

  test('an agent two minutes behind: total_ms still covers queue and delivery, execution is its own', async () => {
    const pid = 'p-skewed-clock';
    hub.project(pid, 'online', 'ack');
    const view = await hub.send({ project_id: pid, command_type: 'echo', payload: {} });
    const id = view.command_id;
    await hub.waitStatus(id, (d) => d.status === 'acked', 'acked');
    const behind = execResult(id);
    behind.start_time -= 120_000;
    behind.end_time -= 120_000;
    const u = uplink(pid, `secret-of-${pid}`, 'exec_result', behind);
    void hub.h.host.bus.publish(u.topic, u.event);
    const done = await hub.waitStatus(id, (d) => d.status === 'completed', 'completed');
    const { queue_ms, delivery_ms, execution_ms, total_ms } = done.timings;
    for (const [k, v] of Object.entries(done.timings)) assert.ok(typeof v === 'number' && v >= 0, `${k} = ${v}`);
    assert.ok(total_ms! >= queue_ms! + delivery_ms!, JSON.stringify(done.timings));
    assert.equal(execution_ms, 7);
  });
});
