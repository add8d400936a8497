import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { COMMAND, type CommandView } from '../../../modules/command/contract/topics.js';
import { until } from '../../helpers/wait.js';
import { DRIVERS, execResult, type Hub, startHub, uplink } from './harness.js';

type Page = { items: CommandView[]; total: number };

for (const driver of DRIVERS) {
  describe(`command module restarts (${driver.name})`, () => {
    let hub: Hub;
    before(async () => {
      hub = await startHub(driver);
    });
    after(async () => {
      await hub?.stop();
    });

    const count = async (project_id: string, status: string) =>
      (await hub.req<Page>(COMMAND.list, { project_id, status, limit: 1 })).total;

    test('a restart mid-flight keeps every command progressing', async () => {
      hub.project('r-auto', 'online', 'auto');
      hub.project('r-silent', 'online', 'silent');
      hub.project('r-queue', 'offline', 'auto');
      hub.project('r-slow', 'online', 'ack');

      const sends: Promise<CommandView>[] = [];
      for (let i = 0; i < 40; i++) sends.push(hub.send({ project_id: 'r-auto', command_type: 'x' }));
      // restart while the sends above are still being handled; the rest wait in the mailbox
      const restarting = hub.h.host.restartModule('command');
      for (let i = 0; i < 40; i++) sends.push(hub.send({ project_id: 'r-auto', command_type: 'x' }));
      const silent = await hub.send({ project_id: 'r-silent', command_type: 'x' });
      const queued = await hub.send({ project_id: 'r-queue', command_type: 'x', offline_policy: 'queue' });
      const slow = await hub.send({ project_id: 'r-slow', command_type: 'x', timeout_ms: 400 });
      const views = await Promise.all(sends);
      await restarting;
      assert.equal(new Set(views.map((v) => v.command_id)).size, 80);

      // the relay resumes re-publishing, the sweeper times out, the queue waits for its project
      await hub.h.host.restartModule('command');
      hub.setState('r-queue', 'online');
      await hub.h.host.restartModule('command');

      await until(async () => (await count('r-auto', 'completed')) === 80, 20_000, '80 completed');
      await hub.waitStatus(queued.command_id, (d) => d.status === 'completed', 'queued delivered');
      await hub.waitStatus(slow.command_id, (d) => d.status === 'timeout', 'timed out');
      const s = await hub.waitStatus(silent.command_id, (d) => d.status === 'failed', 'undeliverable');
      assert.equal(s.error, 'undeliverable');
      assert.equal(s.attempts, 4, 'attempts counted across restarts');
      const n = hub.publishedFor(silent.command_id).length;
      assert.ok(n >= 1 && n <= 4, `published ${n} times`);
      // every command executed exactly once by the (de-duplicating) fake agent
      for (const v of views) assert.ok(hub.w.executed.has(v.command_id));
    });

    test('acks and results that arrive while the module restarts are applied after it', async () => {
      const pid = 'r-mailbox';
      hub.project(pid, 'online', 'silent');
      const ids: string[] = [];
      for (let i = 0; i < 20; i++) ids.push((await hub.send({ project_id: pid, command_type: 'x' })).command_id);
      // published at least once (a silent agent's command may already have gone 'undeliverable':
      // an ack or a result still brings it back, see uplink.ts)
      await until(() => ids.every((id) => hub.publishedFor(id).length > 0), 10_000, 'all published');
      const restarting = hub.h.host.restartModule('command');
      for (const id of ids) {
        for (const [type, payload] of [
          ['command_ack', { command_id: id }],
          ['exec_result', execResult(id)],
        ] as const) {
          const u = uplink(pid, `secret-of-${pid}`, type, payload);
          void hub.h.host.bus.publish(u.topic, u.event);
        }
      }
      await restarting;
      await until(async () => (await count(pid, 'completed')) === 20, 10_000, 'all completed');
      for (const id of ids) assert.ok((await hub.get(id)).acked_at);
    });

    test('50 restarts leave no timers behind', async () => {
      const timers = () => process.getActiveResourcesInfo().filter((r) => r === 'Timeout').length;
      await hub.h.host.restartModule('command');
      const before = timers();
      for (let i = 0; i < 50; i++) await hub.h.host.restartModule('command');
      await until(() => timers() <= before + 2, 5000, `timers back near ${before}`);
    });
  });
}
