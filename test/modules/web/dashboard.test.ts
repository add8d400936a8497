/**
 * The dashboard in a real browser (Debian's Chromium through playwright-core): live project
 * state from a StatusChangedEvent, a command sent through the form and its result shown,
 * provisioning with the secret shown once, the token prompt, against fake domain modules so
 * every state can be staged. dashboard-live.test.ts drives the same page over the real hub.
 */
import assert from 'node:assert/strict';
import { mkdirSync } from 'node:fs';
import path from 'node:path';
import { describe, test } from 'node:test';
import { scaled, until } from '../../helpers/wait.js';
import { launchBrowser as launch, noBrowser, screenshotPath, sendThroughForm } from './browser.js';
import { startWeb } from './harness.js';

const SCREENSHOT = screenshotPath('dashboard-fake');
const WAIT = 10_000;

describe('dashboard', () => {
  test('live projects, a command sent through the form with its result, provisioning; screenshot', async (t) => {
    if (noBrowser(t)) return;
    const w = await startWeb();
    const browser = await launch();
    try {
      const d = w.domain;
      d.addProject('plant-berlin', 'online');
      d.addProject('plant-lyon', 'offline');
      d.addProject('warehouse-7', 'verifying');
      d.addProject('plant-osaka', 'offline');
      // history for the commands table: one done, one failed, one still running
      const done = d.send({ project_id: 'plant-berlin', command_type: 'echo', payload: { ping: 1 } });
      const failed = d.send({ project_id: 'plant-berlin', command_type: 'host_exec', payload: { cmd: 'df -h' } });
      d.advance(failed.command_id, 'sent');
      d.complete(failed.command_id, 'df: /data: No such file or directory', 'failure');
      d.send({ project_id: 'plant-berlin', command_type: 'hang', payload: {} });
      await w.h.host.bus.drain(scaled(WAIT));
      assert.ok(d.commands.get(done.command_id));

      const page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
      const errors: string[] = [];
      page.on('pageerror', (e) => errors.push(e.message));
      await page.goto(`${w.base}/`);
      await page.waitForSelector('#live:text("live")', { timeout: scaled(WAIT) });
      await page.waitForSelector('tr[data-project="plant-osaka"] .state:has-text("offline")', {
        timeout: scaled(WAIT),
      });

      // a status event on the bus turns the project online in the page
      d.setState('plant-osaka', 'online', 'register_complete');
      await page.waitForSelector('tr[data-project="plant-osaka"] .state:has-text("online")', { timeout: scaled(WAIT) });
      assert.match((await page.textContent('#online-count')) ?? '', /2 online \/ 4/);

      // send through the form and wait for the result the fake command module reports
      const result = await sendThroughForm(
        page,
        'plant-osaka',
        'echo',
        '{"message": "hello from the dashboard"}',
        WAIT,
      );
      assert.equal(result.status, 'completed');
      assert.equal(result.result.output, '{"message":"hello from the dashboard"}');
      assert.equal(d.sends.at(-1)?.command_id, result.command_id);

      // a command still running shows as in flight, and turns completed live
      const running = [...d.commands.values()].find((c) => c.command_type === 'hang')!;
      await page.waitForSelector(`tr.inflight[data-command="${running.command_id}"]`, { timeout: scaled(WAIT) });

      // provisioning shows the secret once
      await page.fill('#provision-id', 'plant-nairobi');
      await page.fill('#provision-name', 'Nairobi plant');
      await page.click('#provision-form button[type="submit"]');
      await page.waitForSelector('#provision-result:not([hidden])', { timeout: scaled(WAIT) });
      assert.equal(await page.textContent('#secret-value'), 's'.repeat(64));
      await page.waitForSelector('tr[data-project="plant-nairobi"]', { timeout: scaled(WAIT) });

      mkdirSync(path.dirname(SCREENSHOT), { recursive: true });
      await page.screenshot({ path: SCREENSHOT, fullPage: true });

      await page.click('#secret-dismiss');
      assert.equal(await page.textContent('#secret-value'), '');
      assert.deepEqual(errors, []);
    } finally {
      await browser.close();
      await w.stop();
    }
  });

  test('with a token the page asks for it once and keeps it for the tab', async (t) => {
    if (noBrowser(t)) return;
    const w = await startWeb({ token: 'dash-token' });
    const browser = await launch();
    try {
      w.domain.addProject('p-secure', 'online');
      const page = await browser.newPage();
      await page.goto(`${w.base}/`);
      await page.waitForSelector('#token-dialog[open]', { timeout: scaled(WAIT) });
      await page.fill('#token-input', 'dash-token');
      await page.click('#token-form button[type="submit"]');
      await page.waitForSelector('tr[data-project="p-secure"]', { timeout: scaled(WAIT) });
      await page.waitForSelector('#live:text("live")', { timeout: scaled(WAIT) });
      assert.equal(await page.evaluate(() => sessionStorage.getItem('gmq-hub.token')), 'dash-token');
      w.domain.setState('p-secure', 'offline');
      await page.waitForSelector('tr[data-project="p-secure"] .state:has-text("offline")', { timeout: scaled(WAIT) });
    } finally {
      await browser.close();
      await w.stop();
    }
  });

  test('issue 15: heartbeat live, results after a reload, queued apart from pending, dated times, favicon, /docs', async (t) => {
    if (noBrowser(t)) return;
    const w = await startWeb();
    const browser = await launch();
    try {
      const d = w.domain;
      d.addProject('plant-hb', 'online');
      d.addProject('plant-off', 'offline');
      // a command answered before the page was opened: its result must show after a (re)load
      const done = d.send({ project_id: 'plant-hb', command_type: 'echo', payload: { before: 'load' } });
      await w.h.host.bus.drain(scaled(WAIT));
      await until(() => d.commands.get(done.command_id)?.status === 'completed', WAIT, 'the echo completed');
      // a command waiting for an offline project, and one about to go out
      const queued = d.send({ project_id: 'plant-off', command_type: 'reboot', offline_policy: 'queue' });
      const pending = d.send({ project_id: 'plant-hb', command_type: 'slow', payload: {} });

      const page = await browser.newPage();
      const errors: string[] = [];
      const failedRequests: string[] = [];
      page.on('pageerror', (e) => errors.push(e.message));
      page.on('response', (r) => {
        if (r.status() >= 400) failedRequests.push(`${r.status()} ${r.url()}`);
      });
      await page.goto(`${w.base}/`);
      await page.waitForSelector('#live:text("live")', { timeout: scaled(WAIT) });

      // results after a load: the finished command's output, not "—"
      const output = `tr[data-command="${done.command_id}"] .output`;
      await page.waitForSelector(`${output}:has-text("before")`, { timeout: scaled(WAIT) });
      await page.reload();
      await page.waitForSelector(`${output}:has-text("before")`, { timeout: scaled(WAIT) });

      // queued and pending look different
      await page.waitForSelector(`tr.queued[data-command="${queued.command_id}"] .badge-queued:text("queued")`, {
        timeout: scaled(WAIT),
      });
      await page.waitForSelector(
        `tr:not(.queued)[data-command="${pending.command_id}"] .badge-pending:text("pending")`,
        {
          timeout: scaled(WAIT),
        },
      );

      // times carry the date and a zone
      const since = (await page.textContent('tr[data-project="plant-hb"] td.since')) ?? '';
      assert.match(since, /^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2} \S+/, since);

      // a heartbeat changes no state and sends no event: the page still shows the new one
      const beat = new Date(Date.now() - 1000).toISOString();
      d.projects.set('plant-hb', { ...d.projects.get('plant-hb')!, last_heartbeat_at: beat });
      // within one refresh period (5 s) plus the work
      await page.waitForSelector(`tr[data-project="plant-hb"] td.heartbeat[data-ts="${beat}"]`, {
        timeout: scaled(5_000 + WAIT),
      });
      assert.match((await page.textContent('tr[data-project="plant-hb"] td.heartbeat')) ?? '', /\d+ s ago/);

      // the favicon the page names, and the one browsers ask for on their own
      const icon = await fetch(`${w.base}/favicon.ico`);
      assert.equal(icon.status, 200);
      assert.equal(icon.headers.get('content-type'), 'image/x-icon');
      assert.equal((await fetch(`${w.base}/favicon.svg`)).status, 200);

      // /docs renders every operation of /openapi.json, under the same CSP, from nothing outside
      const doc = (await (await fetch(`${w.base}/openapi.json`)).json()) as { paths: Record<string, object> };
      const operations = Object.values(doc.paths).reduce(
        (n, item) => n + Object.keys(item).filter((k) => ['get', 'post', 'put', 'patch', 'delete'].includes(k)).length,
        0,
      );
      await page.goto(`${w.base}/docs`);
      await page.waitForSelector('body[data-ready]', { timeout: scaled(WAIT) });
      assert.equal(await page.getAttribute('body', 'data-ready'), String(operations));
      assert.equal(await page.locator('details.op[data-op="POST /api/exchange-hub/command/sync"]').count(), 1);
      assert.equal((await fetch(`${w.base}/docs/`)).status, 200);

      assert.deepEqual(failedRequests, []);
      assert.deepEqual(errors, []);
    } finally {
      await browser.close();
      await w.stop();
    }
  });
});
