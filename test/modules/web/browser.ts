/**
 * Debian's Chromium through playwright-core for the dashboard tests (npm browser downloads do
 * not work on these machines). Without Chromium the tests skip and say why; CI sets
 * GMQ_REQUIRE_CHROMIUM=1 after installing it, so there a missing browser fails instead.
 */
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { TestContext } from 'node:test';
import { fileURLToPath } from 'node:url';
import { type Browser, chromium, type Page } from 'playwright-core';
import { scaled } from '../../helpers/wait.js';

export const CHROMIUM = '/usr/bin/chromium';

const here = path.dirname(fileURLToPath(import.meta.url));
// test/modules/web → repo root (dist/test/modules/web when compiled)
const ROOT = path.resolve(here, here.includes(`${path.sep}dist${path.sep}`) ? '../../../..' : '../../..');

/**
 * Where a test's screenshot goes: the README's docs/dashboard.png only on request
 * (UPDATE_SCREENSHOT=1), so a test run never dirties the working tree.
 */
export function screenshotPath(name: string): string {
  return process.env.UPDATE_SCREENSHOT
    ? path.join(ROOT, 'docs', `${name}.png`)
    : path.join(os.tmpdir(), `gmq-${name}-${process.pid}.png`);
}

export function noBrowser(t: TestContext): boolean {
  if (existsSync(CHROMIUM)) return false;
  if (process.env.GMQ_REQUIRE_CHROMIUM === '1') assert.fail(`${CHROMIUM} is required (GMQ_REQUIRE_CHROMIUM=1)`);
  t.skip(`${CHROMIUM} is not installed (apt-get install -y chromium); CI installs it`);
  return true;
}

/** Headless, with the flags that keep Chromium off this closed network (background fetches are refused). */
export function launchBrowser(): Promise<Browser> {
  return chromium.launch({
    executablePath: CHROMIUM,
    args: [
      '--headless',
      '--no-sandbox',
      '--disable-gpu',
      '--disable-quic',
      '--no-first-run',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
    ],
  });
}

/**
 * Sends a sync command through the dashboard's form and returns the command the page shows once
 * it reads "completed" (and the commands table has its row completed too).
 */
export async function sendThroughForm(
  page: Page,
  projectId: string,
  commandType: string,
  payloadJson: string,
  waitMs: number,
): Promise<{ command_id: string; status: string; result: { status: string; output: string } }> {
  await page.selectOption('#send-project', projectId);
  await page.fill('#send-type', commandType);
  await page.fill('#send-payload', payloadJson);
  await page.check('#send-sync');
  await page.click('#send-button');
  await page.waitForSelector('#send-result:has-text("completed")', { timeout: scaled(waitMs) });
  const shown = JSON.parse((await page.textContent('#send-result')) ?? '{}');
  await page.waitForSelector(`tr[data-command="${shown.command_id}"] .status:has-text("completed")`, {
    timeout: scaled(waitMs),
  });
  return shown;
}
