/**
 * Issue 15, items 3 and 4. A taken port was reported only after the database had opened (a fresh
 * PGlite takes tens of seconds); a second hub on the same data directory opened the live PGlite
 * database and died with `Aborted()`. Both now fail at once with one line and a stable code.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { describe, test } from 'node:test';
import { lockDataDir, lockFileOf } from '../../core/services/data-dir-lock.js';
import { prepareSharedPgliteTemplate, tempPgliteConfig } from '../helpers/db.js';
import { freePort, HostProcess, REPO_ROOT } from '../helpers/process.js';

const SHIPPED = path.join(REPO_ROOT, 'config.yml');

/** The environment that runs the shipped config.yml on free ports, with its data under `dataDir`. */
async function shippedEnv(dataDir: string, http?: number): Promise<NodeJS.ProcessEnv> {
  return {
    HUB_DATA_DIR: dataDir,
    HUB_HTTP_PORT: String(http ?? (await freePort())),
    HUB_MQTT_PORT: String(await freePort()),
    HUB_GRPC_PORT: String(await freePort()),
    HUB_API_TOKEN: '',
    HUB_DB_DRIVER: 'pglite',
    LOG_LEVEL: 'info',
  };
}

const firstStderrLine = (p: HostProcess) => p.stderr.find((l) => l.startsWith('gmq-hub: ')) ?? p.stderr.join('\n');

describe('start checks before the database opens', () => {
  test('a taken port fails the start with one line naming the port and the variable; no database was created', async () => {
    const holder = net.createServer();
    await new Promise<void>((r) => holder.listen(0, '127.0.0.1', () => r()));
    const port = (holder.address() as net.AddressInfo).port;
    const data = fs.mkdtempSync(path.join(os.tmpdir(), 'gmq-start-port-'));
    const hub = new HostProcess(SHIPPED, await shippedEnv(data, port));
    try {
      const { code } = await hub.exited;
      assert.equal(code, 1);
      assert.equal(
        firstStderrLine(hub),
        `gmq-hub: HOST_ERR_PORT_IN_USE: port ${port} is in use (set HUB_HTTP_PORT to another port)`,
      );
      // checked before anything started: PGlite never initialised its directory
      assert.equal(fs.existsSync(path.join(data, 'pglite', 'PG_VERSION')), false);
      assert.equal(fs.existsSync(lockFileOf(path.join(data, 'pglite'))), false, 'the lock is released on exit');
    } finally {
      await hub.stop();
      await new Promise<void>((r) => holder.close(() => r()));
      fs.rmSync(data, { recursive: true, force: true });
    }
  });

  test('a second hub on the same data directory is refused at once; the first serves on; a dead owner’s lock is taken over', async () => {
    await prepareSharedPgliteTemplate();
    const data = fs.mkdtempSync(path.join(os.tmpdir(), 'gmq-start-lock-'));
    // a copy of an initialised cluster, where config.yml keeps it: spares the test PGlite's initdb
    fs.renameSync(tempPgliteConfig().config.data_dir!, path.join(data, 'pglite'));
    const firstEnv = await shippedEnv(data);
    const first = new HostProcess(SHIPPED, firstEnv);
    let third: HostProcess | undefined;
    try {
      await first.started(60_000);
      const second = new HostProcess(SHIPPED, await shippedEnv(data));
      const { code } = await second.exited;
      assert.equal(code, 1);
      const dir = path.join(data, 'pglite');
      assert.equal(
        firstStderrLine(second),
        `gmq-hub: DB_ERR_DATA_DIR_LOCKED: data directory ${dir} is in use by another gmq-hub (pid ${first.proc.pid}): stop it, or set HUB_DATA_DIR to another directory`,
      );
      // the first hub was not disturbed: it still answers
      const r = await fetch(`http://127.0.0.1:${firstEnv.HUB_HTTP_PORT}/healthz`);
      assert.equal(r.status, 200);

      // killed with -9, it leaves its lock behind; the next start sees a dead PID and takes it over
      await first.kill9();
      assert.equal(fs.existsSync(lockFileOf(dir)), true);
      third = new HostProcess(SHIPPED, await shippedEnv(data));
      await third.started(60_000);
      assert.equal(fs.readFileSync(lockFileOf(dir), 'utf8').split(' ')[0], String(third.proc.pid));
      await third.stop();
      assert.equal(fs.existsSync(lockFileOf(dir)), false, 'a graceful stop removes the lock');
    } finally {
      await first.stop();
      await third?.stop();
      fs.rmSync(data, { recursive: true, force: true });
    }
  });

  test('lockDataDir: refuses a live owner (here or in another process), takes over a dead one, releases only its own', async () => {
    const base = fs.mkdtempSync(path.join(os.tmpdir(), 'gmq-lock-'));
    const dir = path.join(base, 'pglite');
    const sleeper = spawn('sleep', ['60'], { stdio: 'ignore' });
    try {
      const release = lockDataDir(dir, {});
      assert.throws(() => lockDataDir(dir, {}), { code: 'DB_ERR_DATA_DIR_LOCKED' });
      release();
      release(); // twice is fine

      fs.writeFileSync(lockFileOf(dir), `${sleeper.pid} ${os.hostname()}\n`);
      assert.throws(
        () => lockDataDir(dir, {}),
        (err: Error & { code?: string }) => {
          assert.equal(err.code, 'DB_ERR_DATA_DIR_LOCKED');
          assert.match(
            err.message,
            new RegExp(`in use by another gmq-hub \\(pid ${sleeper.pid}\\): stop it, or use another data_dir$`),
          );
          return true;
        },
      );
      sleeper.kill('SIGKILL');
      await new Promise((r) => sleeper.once('exit', r));
      const again = lockDataDir(dir, {}); // its owner is gone: stale
      assert.equal(fs.readFileSync(lockFileOf(dir), 'utf8'), `${process.pid} ${os.hostname()}\n`);
      // someone else's lock (taken over meanwhile) is not removed by our release
      fs.writeFileSync(lockFileOf(dir), `1 ${os.hostname()}\n`);
      again();
      assert.equal(fs.existsSync(lockFileOf(dir)), true);
    } finally {
      sleeper.kill('SIGKILL');
      fs.rmSync(base, { recursive: true, force: true });
    }
  });
});
