/**
 * The package as a user gets it (issue 15, item 9): `npm pack`, then `npm install -g --prefix
 * <tmp>` of the tarball, then the installed `gmq-hub start` in a directory of the user's with the
 * shipped config.yml copied into it. It serves: health and readiness (the embedded database and
 * broker up), the dashboard and /docs with their favicon, the installed `gmq-hub` CLI and the
 * installed `gmq-hub/client` against it.
 *
 * Not part of `npm test`: the install resolves the dependencies through the npm registry (its
 * cache first), which a closed CI runner may not reach, and it takes about a minute.
 * `npm run test:package` runs it (README "Development").
 */
import assert from 'node:assert/strict';
import { execFile, spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, describe, test } from 'node:test';
import { pathToFileURL } from 'node:url';
import { promisify } from 'node:util';
import type * as Client from '../../client/index.js';
import { freePort, REPO_ROOT } from '../helpers/process.js';
import { scaled, until } from '../helpers/wait.js';

const run = promisify(execFile);

describe('the packed tarball, installed with npm install -g', () => {
  const dirs: string[] = [];
  after(() => {
    for (const d of dirs) fs.rmSync(d, { recursive: true, force: true });
  });
  const tmp = (prefix: string) => {
    const d = fs.mkdtempSync(path.join(os.tmpdir(), prefix));
    dirs.push(d);
    return d;
  };

  test('gmq-hub start with ./config.yml serves the API, dashboard, /docs; its CLI and client work', async () => {
    // pack what `files` ships (dist/ is built by the npm script before this runs)
    const packDir = tmp('gmq-pack-');
    const packed = await run('npm', ['pack', '--json', '--ignore-scripts', '--pack-destination', packDir], {
      cwd: REPO_ROOT,
    });
    const tarball = path.join(packDir, (JSON.parse(packed.stdout) as Array<{ filename: string }>)[0].filename);
    assert.ok(fs.existsSync(tarball), tarball);

    // install it the way a user does, into a prefix of its own
    const prefix = tmp('gmq-prefix-');
    fs.chmodSync(prefix, 0o755); // as /usr/local is: the embedded server's user (when root) runs its binaries from there
    await run('npm', ['install', '-g', '--prefix', prefix, '--prefer-offline', '--no-audit', '--no-fund', tarball], {
      cwd: packDir,
      timeout: scaled(300_000),
    }).catch((err: { stderr?: string }) => assert.fail(`npm install -g of the tarball failed:\n${err.stderr}`));
    const bin = path.join(prefix, 'bin', 'gmq-hub');
    const installed = path.join(prefix, 'lib', 'node_modules', 'gmq-hub');
    assert.ok(fs.existsSync(bin), `${bin} is installed`);
    assert.ok(!fs.existsSync(path.join(installed, 'tsconfig.json')), 'no sources were installed');

    const help = await run(bin, ['--help']);
    assert.match(help.stdout, /^Usage: gmq-hub <command>/m);

    // a user's directory with the shipped config.yml in it, on free ports
    const cwd = tmp('gmq-user-');
    fs.chmodSync(cwd, 0o755); // as a user's directory is: the embedded server's user (when root) reaches it
    fs.copyFileSync(path.join(installed, 'config.yml'), path.join(cwd, 'config.yml'));
    const [http, mqtt, grpc] = [await freePort(), await freePort(), await freePort()];
    const env: NodeJS.ProcessEnv = {
      ...process.env,
      LOG_FORMAT: 'json',
      HUB_HTTP_PORT: String(http),
      HUB_MQTT_PORT: String(mqtt),
      HUB_GRPC_PORT: String(grpc),
    };
    for (const k of [
      'HUB_CONFIG',
      'HUB_DATA_DIR',
      'HUB_DB_DRIVER',
      'HUB_DATABASE_URL',
      'HUB_MQTT_URL',
      'HUB_API_TOKEN',
    ]) {
      delete env[k];
    }
    const child = spawn(bin, ['start'], { cwd, env, stdio: ['ignore', 'pipe', 'pipe'] });
    let output = '';
    const keep = (b: Buffer) => {
      output = (output + b.toString()).slice(-20_000);
    };
    child.stdout.on('data', keep);
    child.stderr.on('data', keep);
    const exited = new Promise((r) => child.once('exit', r));
    const base = `http://127.0.0.1:${http}`;
    try {
      // a fresh embedded database takes a while on a busy machine
      await until(
        async () => (await fetch(`${base}/readyz`).catch(() => null))?.status === 200,
        60_000,
        `the installed hub ready (${output.slice(-800)})`,
      );
      // the default database: the embedded PostgreSQL server, its cluster in the current directory
      assert.ok(
        fs.existsSync(path.join(cwd, 'data', 'postgres', 'PG_VERSION')),
        'its data lives in the current directory',
      );
      for (const p of ['/', '/docs', '/favicon.ico', '/openapi.json']) {
        assert.equal((await fetch(`${base}${p}`)).status, 200, p);
      }

      // the installed client, imported by name from a project that depends on the package
      const project = tmp('gmq-user-project-');
      fs.mkdirSync(path.join(project, 'node_modules'));
      fs.symlinkSync(installed, path.join(project, 'node_modules', 'gmq-hub'));
      fs.writeFileSync(
        path.join(project, 'main.mjs'),
        "import { HubClient } from 'gmq-hub/client';\nexport { HubClient };\n",
      );
      const { HubClient } = (await import(pathToFileURL(path.join(project, 'main.mjs')).href)) as typeof Client;
      const client = new HubClient({ url: base });
      const created = await client.createProject({ project_id: 'installed-plant' });
      assert.match(created.secret, /^[0-9a-f]{64}$/);

      // the installed CLI sees it
      const list = await run(bin, ['projects', 'list', '--json', '--url', base], { cwd });
      const projects = JSON.parse(list.stdout) as { items: Array<{ project_id: string }> };
      assert.ok(
        projects.items.some((p) => p.project_id === 'installed-plant'),
        list.stdout,
      );
    } finally {
      child.kill('SIGTERM');
      const killer = setTimeout(() => child.kill('SIGKILL'), scaled(15_000));
      await exited;
      clearTimeout(killer);
    }
  });
});
