import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { COMMAND } from '../../../modules/command/contract/topics.js';
import { scaled, until } from '../../helpers/wait.js';
import { DRIVERS, FAST, type Hub, startHub } from './harness.js';

type Stats = Record<string, number>;

/**
 * The publish outcome window (relay.ts): a send's first PUBACK is recorded at the end of a
 * window, and not at all when the agent's ack was written meanwhile. No re-publish interferes
 * here (a minute of backoff), so each outcome is the window's.
 */
const WINDOW_MS = 3_000;
const SETTINGS = { ...FAST, publish_outcome_delay_ms: WINDOW_MS, retry_base_ms: 60_000, retry_max_ms: 60_000 };

for (const driver of DRIVERS) {
  describe(`publish outcomes (${driver.name})`, () => {
    let hub: Hub;
    before(async () => {
      hub = await startHub(driver, SETTINGS);
    });
    after(async () => {
      await hub?.stop();
    });
    const stats = () => hub.req<Stats>(COMMAND.stats, {});

    test('an agent that acks within the window: no outcome write, and its ack carries attempts and sent_at', async () => {
      const pid = 'po-quick';
      hub.project(pid, 'online', 'auto');
      const skipped = (await stats()).outcomes_skipped;
      const ids: string[] = [];
      for (let i = 0; i < 5; i++) ids.push((await hub.send({ project_id: pid, command_type: 'x' })).command_id);
      for (const id of ids) await hub.waitStatus(id, (d) => d.status === 'completed', 'completed');
      await until(
        async () => (await stats()).outcomes_skipped >= skipped + 5,
        scaled(WINDOW_MS + 20_000),
        'five outcomes left to their acks',
      );
      for (const id of ids) {
        const d = await hub.get(id);
        assert.equal(d.attempts, 1, 'the first attempt, counted when the row was inserted');
        assert.ok(d.sent_at && d.acked_at && d.sent_at <= d.acked_at, `sent_at ${d.sent_at}, acked_at ${d.acked_at}`);
        const sent = hub.w.events.filter(
          (e) => e.kind === 'state' && e.command.command_id === id && e.command.status === 'sent',
        );
        assert.equal(sent.length, 0, 'no stale `sent` after the ack');
      }
    });

    test('an agent that does not ack: `sent` at the end of the window, with its PUBACK time', async () => {
      const pid = 'po-silent';
      hub.project(pid, 'online', 'silent');
      const skipped = (await stats()).outcomes_skipped;
      const { command_id } = await hub.send({ project_id: pid, command_type: 'x' });
      const d = await hub.waitStatus(command_id, (x) => x.status === 'sent', 'sent', scaled(WINDOW_MS + 20_000));
      assert.equal(d.attempts, 1);
      const [p] = hub.publishedFor(command_id);
      assert.ok(d.sent_at && Date.parse(d.sent_at) >= p.at, `sent_at ${d.sent_at} is the PUBACK's, after the publish`);
      assert.equal((await stats()).outcomes_skipped, skipped);
    });

    test('a stop within the window writes the outcomes it holds before the module ends', async () => {
      const pid = 'po-stop';
      hub.project(pid, 'online', 'silent');
      const { command_id } = await hub.send({ project_id: pid, command_type: 'x' });
      await until(() => hub.publishedFor(command_id).length > 0, scaled(10_000), 'published');
      await hub.h.host.restartModule('command');
      // read at once: written by the stop, not by a later window
      const d = await hub.get(command_id);
      assert.equal(d.status, 'sent');
      assert.equal(d.attempts, 1);
    });
  });
}
