/**
 * Issue 15, item 5: a config edit moving the web API to a taken port stopped the running server,
 * failed to start the new one, and retried in a loop; the log said `restarted:[]` and the hint
 * named HUB_HTTP_PORT, which the file did not use. Now the edit is refused before anything stops,
 * the API serves on from its old port, and the log line says what failed and what runs.
 */
import assert from 'node:assert/strict';
import net from 'node:net';
import { test } from 'node:test';
import { HOST_TOPICS } from '../../core/host-topics.js';
import { builtinProviders } from '../../modules/index.js';
import { recordEvents } from '../fixtures/bus-events.js';
import { captureLog, LEVEL } from '../fixtures/capture-log.js';
import { startHost } from '../helpers/host.js';
import { freePort } from '../helpers/process.js';

const webOnly = (port: number, extra = '') => `modules:\n  web: { port: ${port}, database: null${extra} }\n`;
const health = async (port: number) => (await fetch(`http://127.0.0.1:${port}/healthz`)).status;

test('a reload to a taken port keeps the web API on its old port, says why, and does not loop', async () => {
  const cap = captureLog();
  const oldPort = await freePort();
  const h = await startHost(webOnly(oldPort), builtinProviders(), { log: cap.log });
  const holder = net.createServer();
  await new Promise<void>((r) => holder.listen(0, '127.0.0.1', () => r()));
  const taken = (holder.address() as net.AddressInfo).port;
  try {
    const seen = recordEvents(h.host, [HOST_TOPICS.moduleFailed, HOST_TOPICS.moduleStopped]);
    assert.equal(await health(oldPort), 200);

    h.writeConfig(webOnly(taken));
    const outcome = await h.host.reload();
    assert.equal(outcome.applied, true);
    assert.deepEqual(outcome.restarted, []);
    assert.equal(outcome.failed.length, 1);
    const [failed] = outcome.failed;
    assert.equal(failed.name, 'web');
    assert.equal(failed.code, 'HOST_ERR_PORT_IN_USE');
    assert.equal(failed.kept_previous, true);
    assert.match(
      failed.message,
      new RegExp(`^port ${taken} is in use \\(change modules\\.web\\.port in .*config\\.yml\\)$`),
    );

    // still serving where it was, never stopped, nothing scheduled to retry
    assert.equal(await health(oldPort), 200);
    const web = h.host.list().find((m) => m.name === 'web')!;
    assert.equal(web.state, 'running');
    assert.equal(web.failures, 0);
    assert.equal(web.restarts, 0);
    assert.equal(seen.all.length, 0, 'no module/failed or module/stopped event');
    assert.equal(
      (h.host.currentConfig.modules.web.settings as { port: number }).port,
      oldPort,
      'what runs is in force',
    );

    // one error line names what happened (not `restarted: []` at info level)
    const lines = cap.lines.filter((l) => String(l.msg).startsWith('config reloaded'));
    assert.equal(lines.length, 1);
    assert.equal(lines[0].level, LEVEL.error);
    assert.match(
      String(lines[0].msg),
      new RegExp(`modules\\.web: port ${taken} is in use .*kept running with its previous settings`),
    );

    // the port is free now: the same file applies
    await new Promise<void>((r) => holder.close(() => r()));
    const again = await h.host.reload();
    assert.deepEqual(again.restarted, ['web']);
    assert.deepEqual(again.failed, []);
    assert.equal(await health(taken), 200);
  } finally {
    if (holder.listening) await new Promise<void>((r) => holder.close(() => r()));
    await h.stop();
  }
});

test('an edit that fails to start for another reason brings the previous settings back', async () => {
  const port = await freePort();
  // with a token the web module listens where `host` says; TEST-NET-3 is no address of this machine
  const h = await startHost(webOnly(port, ', token: "t0ken"'), builtinProviders());
  try {
    h.writeConfig(webOnly(port, ', token: "t0ken", host: 203.0.113.7'));
    const outcome = await h.host.reload();
    assert.deepEqual(outcome.restarted, []);
    assert.equal(outcome.failed[0]?.name, 'web');
    assert.equal(outcome.failed[0]?.kept_previous, true);
    assert.equal(await health(port), 200);
    const web = h.host.list().find((m) => m.name === 'web')!;
    assert.equal(web.state, 'running');
    assert.equal(web.failures, 0);
  } finally {
    await h.stop();
  }
});
