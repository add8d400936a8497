/**
 * What `npm pack` ships and how it runs once installed (issue 15, item 9): the compiled dist/ the
 * package needs at run time (package.json `files`), the `gmq-hub/client` export with its types,
 * and `gmq-hub` from an installed layout (no sources, no tsconfig.json): `--help`, and `start`
 * with a config.yml in the current directory serving the dashboard files from the package.
 */
import assert from 'node:assert/strict';
import { execFileSync, spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, describe, test } from 'node:test';
import { freePort, REPO_ROOT } from '../helpers/process.js';
import { scaled, until } from '../helpers/wait.js';

const pkg = JSON.parse(fs.readFileSync(path.join(REPO_ROOT, 'package.json'), 'utf8')) as {
  files: string[];
  bin: Record<string, string>;
  exports: Record<string, { types: string; default: string }>;
};

describe('the npm package', () => {
  const dirs: string[] = [];
  after(() => {
    for (const d of dirs) fs.rmSync(d, { recursive: true, force: true });
  });

  test('npm pack ships the compiled CLI, modules, client with types, dashboard files and example configs', () => {
    // --ignore-scripts: dist/ is built already (pretest); the list is what `files` selects
    const out = execFileSync('npm', ['pack', '--dry-run', '--json', '--ignore-scripts'], {
      cwd: REPO_ROOT,
      encoding: 'utf8',
      stdio: ['ignore', 'pipe', 'ignore'],
    });
    const files = new Set((JSON.parse(out) as Array<{ files: Array<{ path: string }> }>)[0].files.map((f) => f.path));
    for (const f of [
      'bin/gmq-hub.js',
      'bin/build.js',
      'dist/bootstrap/cli.js',
      'dist/bootstrap/main.js',
      'dist/modules/index.js',
      'dist/client/index.js',
      'dist/client/index.d.ts',
      'dist/modules/command/contract/topics.d.ts',
      'resource/web/index.html',
      'resource/web/docs/index.html',
      'resource/web/favicon.ico',
      'resource/proto/exchangehub/v1/exchange_hub.proto',
      'config.yml',
      'examples/agent/config.yml',
      'README.md',
      'CHANGELOG.md',
    ]) {
      assert.ok(files.has(f), `the package has ${f}`);
    }
    assert.ok(![...files].some((f) => f.startsWith('dist/test/') || f.startsWith('dist/bench/')), 'no tests');
    assert.ok(![...files].some((f) => f.endsWith('.ts') && !f.endsWith('.d.ts')), 'no TypeScript sources');
    for (const target of [pkg.exports['./client'].types, pkg.exports['./client'].default, pkg.bin['gmq-hub']]) {
      assert.ok(files.has(target.replace(/^\.\//, '')), `package.json points at a shipped file: ${target}`);
    }
  });

  test('installed (no sources, no tsconfig.json): --help, and start with ./config.yml serves', async () => {
    // the installed layout: what `files` ships, with the dependencies beside it
    const root = fs.mkdtempSync(path.join(os.tmpdir(), 'gmq-installed-'));
    dirs.push(root);
    fs.cpSync(path.join(REPO_ROOT, 'bin'), path.join(root, 'bin'), { recursive: true });
    fs.copyFileSync(path.join(REPO_ROOT, 'package.json'), path.join(root, 'package.json'));
    for (const d of ['resource', 'node_modules']) fs.symlinkSync(path.join(REPO_ROOT, d), path.join(root, d));
    fs.mkdirSync(path.join(root, 'dist'));
    for (const d of ['bootstrap', 'core', 'modules', 'client']) {
      fs.symlinkSync(path.join(REPO_ROOT, 'dist', d), path.join(root, 'dist', d));
    }
    const bin = path.join(root, 'bin', 'gmq-hub.js');

    const help = execFileSync(process.execPath, [bin, '--help'], { encoding: 'utf8' });
    assert.match(help, /^Usage: gmq-hub <command>/m);
    assert.ok(!fs.existsSync(path.join(root, 'dist', '.build-failed')), 'it did not try to compile');

    // a directory of the user's, with its own config.yml
    const cwd = fs.mkdtempSync(path.join(os.tmpdir(), 'gmq-installed-cwd-'));
    dirs.push(cwd);
    const port = await freePort();
    fs.writeFileSync(path.join(cwd, 'config.yml'), `modules:\n  web:\n    port: ${port}\n`);
    const env: NodeJS.ProcessEnv = { ...process.env, LOG_FORMAT: 'json' };
    delete env.HUB_CONFIG;
    const child = spawn(process.execPath, [bin, 'start'], { cwd, env, stdio: ['ignore', 'pipe', 'pipe'] });
    let output = '';
    child.stdout.on('data', (b: Buffer) => {
      output += b.toString();
    });
    child.stderr.on('data', (b: Buffer) => {
      output += b.toString();
    });
    try {
      await until(
        async () => (await fetch(`http://127.0.0.1:${port}/healthz`).catch(() => null))?.status === 200,
        30_000,
        `the installed hub serving (${output.slice(-500)})`,
      );
      const page = await fetch(`http://127.0.0.1:${port}/`);
      assert.equal(page.status, 200);
      assert.match(await page.text(), /gmq-hub/);
      assert.equal((await fetch(`http://127.0.0.1:${port}/docs`)).status, 200);
    } finally {
      child.kill('SIGTERM');
      const killer = setTimeout(() => child.kill('SIGKILL'), scaled(15_000));
      await new Promise((r) => child.once('exit', r));
      clearTimeout(killer);
    }
  });
});
