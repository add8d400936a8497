/**
 * Regression (issue 8, finding 4): one agent's heartbeat with "\u0000" inside its metrics (or
 * metrics nested 10 000 deep, or a disconnect reason with NUL) made the batched presence write
 * fail; the failed batch was put back whole, so every later batch failed too — another project
 * that came online afterwards never got its state row — and each failure logged the whole
 * pending batch (a 935 MB log). Now such uplinks are refused at the edge
 * (PROTO_ERR_UNSAFE_VALUE, counted) and a row the database refuses anyway is written around.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { buildData, TOPIC_MESSAGE_UP } from '../../modules/shared/protocol.js';
import { capturingLogger, FullHub, HandAgent, metricSum } from '../fuzz/uplink-hub.js';

/** A monitor message 10 000 levels deep, as text (JSON.stringify and signing cannot make it). */
function deepMonitor(projectId: string): string {
  const shell = JSON.stringify(buildData(projectId, 'monitor', { metrics: { deep: '__DEEP__' } }));
  return shell.replace('"__DEEP__"', `${'{"d":'.repeat(10_000)}1${'}'.repeat(10_000)}`);
}

describe('one agent cannot stop presence from being saved, nor flood the log', () => {
  let hub: FullHub;
  let a: HandAgent;
  let b: HandAgent;
  const logLines: string[] = [];
  before(async () => {
    hub = await FullHub.start({ log: capturingLogger(logLines) });
    a = await HandAgent.connect(hub, await hub.provision('a'));
    b = await HandAgent.connect(hub, await hub.provision('b'));
    await a.goOnline(hub);
  });
  after(async () => {
    await a?.close();
    await b?.close();
    await hub?.stop();
  });

  test("NUL and deep metrics from A; B's state row is written all the same", async () => {
    await a.data('heartbeat', { metrics: { cpu: 'a\u0000b' } });
    await a.publishRaw(TOPIC_MESSAGE_UP, deepMonitor(a.projectId));
    await a.data('alert', { level: 'info', message: 'x\u0000' });
    // several flushes go by with whatever A left behind
    await new Promise((r) => setTimeout(r, 500));

    await b.goOnline(hub);
    await hub.until(async () => {
      const row = await hub.db('project_status').where({ project_id: b.projectId }).first();
      return row?.state === 'online';
    }, "B's presence row, online, in the database");
    // A's last good state is stored too
    const rowA = await hub.db('project_status').where({ project_id: a.projectId }).first();
    assert.equal(rowA?.state, 'online');

    // a disconnect whose reason holds NUL does not sink the batch either
    await a.data('disconnect', { reason: 'bye\u0000' });
    await b.data('heartbeat', { metrics: { cpu: 1 } });
    await hub.until(async () => {
      const row = await hub.db('project_status').where({ project_id: b.projectId }).first();
      return row?.metrics?.cpu === 1;
    }, "B's next heartbeat stored");

    const text = await hub.metrics();
    assert.ok(
      metricSum(text, 'hub_mqtt_uplinks_rejected_total{code="PROTO_ERR_UNSAFE_VALUE"}') >= 4,
      'every unsafe uplink is refused and counted',
    );
    const longest = Math.max(...logLines.map((l) => l.length));
    assert.ok(longest < 4_096, `a log line of ${longest} bytes`);
    assert.ok(!logLines.some((l) => l.includes('presence flush failed')), 'no presence flush failed');
  });
});
