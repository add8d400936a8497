/**
 * Regression (issue 8, finding 3): `log_result { command_id: <project B's command> }` published
 * by project A's agent reached the WebSocket watchers of B's command (the command module never
 * checked who owns a command for a log chunk, and the event feed matched watchers on the
 * command id alone), and log events went out for command ids that exist nowhere. Now a log
 * chunk is published only for a command of the project that sent it; the rest are counted.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import WebSocket from 'ws';
import type { CommandEvent } from '../../modules/command/contract/topics.js';
import { FullHub, HandAgent, type Json, metricSum, strayId, WAIT_MS } from '../fuzz/uplink-hub.js';
import { withTimeout } from '../helpers/wait.js';

describe('an agent cannot inject log lines into another project’s command', () => {
  let hub: FullHub;
  let a: HandAgent;
  let b: HandAgent;
  before(async () => {
    hub = await FullHub.start();
    a = await HandAgent.connect(hub, await hub.provision('a'));
    b = await HandAgent.connect(hub, await hub.provision('b'));
    await a.goOnline(hub);
    await b.goOnline(hub);
  });
  after(async () => {
    await a?.close();
    await b?.close();
    await hub?.stop();
  });

  test("A's log_result for B's command and for a made-up id reach no watcher and no bus event", async () => {
    const sent = await hub.api('POST', '/command/send', { project_id: b.projectId, command_type: 'echo', payload: {} });
    assert.equal(sent.status, 202, JSON.stringify(sent.json));
    const cmdB: string = sent.json.command_id;

    const onBus: CommandEvent[] = [];
    hub.bus.mailbox('test-log-observer').subscribe('command/event/#', (ev) => void onBus.push(ev as CommandEvent));

    const ws = new WebSocket(`${hub.base.replace('http', 'ws')}/api/exchange-hub/ws`);
    const frames: Json[] = [];
    ws.on('message', (data) => frames.push(JSON.parse(String(data))));
    await withTimeout(new Promise((r) => ws.once('open', r)), WAIT_MS, 'ws open');
    ws.send(JSON.stringify({ op: 'subscribe', commands: [cmdB] }));
    await hub.until(() => frames.some((f) => f.op === 'subscribed'), 'subscribed');

    const stray = strayId();
    await a.data('log_result', { command_id: cmdB, seq: 0, content: 'forged by A' });
    await a.data('log_result', { command_id: stray, seq: 0, content: 'about nothing' });
    await b.data('log_result', { command_id: cmdB, seq: 1, content: 'from B' });

    await hub.until(
      () => frames.some((f) => f.op === 'event' && f.type === 'command.log' && f.data?.content === 'from B'),
      "B's own log line on the watcher",
    );
    // A's messages went out before B's on the same broker; give stragglers a moment anyway
    await new Promise((r) => setTimeout(r, 300));
    ws.close();

    const logs = frames.filter((f) => f.op === 'event' && f.type === 'command.log');
    assert.deepEqual(
      logs.map((f) => [f.project_id, f.data?.content]),
      [[b.projectId, 'from B']],
    );
    const logEvents = onBus.filter((e): e is Extract<CommandEvent, { kind: 'log' }> => e.kind === 'log');
    assert.ok(!logEvents.some((e) => e.command_id === stray), 'a log event for a command that exists nowhere');
    assert.ok(!logEvents.some((e) => e.content === 'forged by A'), "a log event carrying A's line");
    for (const e of logEvents) assert.equal(e.project_id, b.projectId);

    // both refusals are counted where operators look
    await hub.until(
      async () => metricSum(await hub.metrics(), 'hub_uplinks_refused_total') >= 2,
      'the refusals in /metrics',
    );
  });
});
