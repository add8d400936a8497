/**
 * Regression (issue 9, "nothing lost under faults"): the bridge acknowledged an agent's result to
 * the broker as soon as the command module's mailbox took it; a hub killed before the write lost
 * the result for good (the agent never resends what the broker acknowledged, and the ack was
 * already written, so the relay never re-published). Now a result is acknowledged only after its
 * write: on Mosquitto the broker delivers it again to the restarted hub's session; with the
 * embedded broker (which dies with the hub) the restarted hub asks the agent again, and the
 * agent answers from memory without running the command a second time.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { type Agent, BACKEND_TITLE, BACKENDS, Hub, T } from '../e2e/harness.js';
import { withTimeout } from '../helpers/wait.js';

for (const backend of BACKENDS) {
  describe(`a result in flight when the hub is killed is stored after restart (${BACKEND_TITLE[backend]})`, () => {
    let hub: Hub;
    let agent: Agent | undefined;
    before(async () => {
      hub = await Hub.create(backend, { command: { reask_after_ms: 1_000, reask_interval_ms: 1_000 } });
      await hub.start();
    });
    after(async () => {
      await agent?.dispose();
      await hub?.dispose();
    });

    test('killed while about to write the result: completed after restart, run once', async () => {
      const project = await hub.provision('kill');
      const pid = project.project_id;
      agent = hub.newAgent(project);
      await agent.start();
      await hub.waitState(pid, 'online');
      // from now on the hub kills itself when it is about to write a result it received
      assert.equal((await hub.stop()).code, 0);
      await hub.start({ HUB_CRASH_POINT: 'command.before_result_write' });
      await hub.waitBack(pid);

      // the restarted hub may find the project's row stale and ask the agent to register again,
      // so the project can be briefly not online after waitBack saw it online: send until accepted
      const body = { project_id: pid, command_type: 'echo', payload: { kept: 'through the kill' } };
      let sent = await hub.api('POST', '/command/send', body);
      for (const until = Date.now() + T; sent.status === 409 && Date.now() < until; ) {
        if (sent.json?.error?.code !== 'CMD_ERR_PROJECT_OFFLINE') break;
        await new Promise((r) => setTimeout(r, 200));
        sent = await hub.api('POST', '/command/send', body);
      }
      assert.equal(sent.status, 202, JSON.stringify(sent.json));
      const id: string = sent.json.command_id;
      const exit = await withTimeout(hub.proc.exited, T, 'the hub killing itself at the crash point');
      assert.equal(exit.signal, 'SIGKILL', 'the hub died at the crash point');

      await hub.start();
      await hub.waitBack(pid, 2 * T);
      const done = await hub.waitCommand(id, (c) => c.status === 'completed', 2 * T);
      assert.deepEqual(done.result?.output ? JSON.parse(done.result.output) : null, { kept: 'through the kill' });
      // executed once: the agent accepted it once; any later copy was a duplicate it answered from memory
      assert.equal(agent.logs('command accepted', id).length, 1);
    });
  });
}
