/**
 * Issue 15, items 2 and 3: `npx gmq-hub` said "not found" before the first build and "Permission
 * denied" after any rebuild (the bin was dist/bootstrap/cli.js, recreated by tsc without an exec
 * bit); `npm start` rebuilt every time and deleted dist/ under a hub that may run from it.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { describe, test } from 'node:test';
import { REPO_ROOT } from '../helpers/process.js';
import { scaled } from '../helpers/wait.js';

interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
}

function run(cmd: string, args: string[], opts: { cwd: string; env?: NodeJS.ProcessEnv; ms?: number }): Promise<Run> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { cwd: opts.cwd, env: { ...process.env, ...opts.env }, stdio: 'pipe' });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (d: string) => {
      stdout += d;
    });
    child.stderr.setEncoding('utf8').on('data', (d: string) => {
      stderr += d;
    });
    const bound = scaled(opts.ms ?? 60_000);
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`${cmd} ${args.join(' ')} did not exit within ${bound} ms\n${stdout}\n${stderr}`));
    }, bound);
    child.once('error', reject);
    child.once('close', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
  });
}

const BUILD = path.join(REPO_ROOT, 'bin/build.js');

describe('npx gmq-hub', () => {
  test('the bin is a committed script with its exec bit, not a build output', () => {
    const pkg = JSON.parse(fs.readFileSync(path.join(REPO_ROOT, 'package.json'), 'utf8')) as {
      bin: Record<string, string>;
    };
    const bin = pkg.bin['gmq-hub'];
    assert.ok(!bin.startsWith('dist/'), `bin ${bin} must not live in dist/, which tsc recreates without an exec bit`);
    const file = path.join(REPO_ROOT, bin);
    assert.ok(fs.readFileSync(file, 'utf8').startsWith('#!/usr/bin/env node\n'));
    assert.ok((fs.statSync(file).mode & 0o111) !== 0, `${bin} is executable`);
  });

  test('`npx gmq-hub --help` works, also after a rebuild left cli.js without an exec bit', async () => {
    // a rebuild writes dist/bootstrap/cli.js as 0644: what made the old bin "Permission denied"
    const cli = path.join(REPO_ROOT, 'dist/bootstrap/cli.js');
    const mode = fs.statSync(cli).mode & 0o777;
    fs.chmodSync(cli, 0o644);
    // a private, offline npm cache: npx links this checkout into it as a newcomer's first run does
    const cache = fs.mkdtempSync(path.join(os.tmpdir(), 'gmq-npx-cache-'));
    try {
      const r = await run('npx', ['--no-install', 'gmq-hub', '--help'], {
        cwd: REPO_ROOT,
        env: { npm_config_cache: cache, npm_config_offline: 'true', npm_config_update_notifier: 'false' },
      });
      assert.equal(r.code, 0, r.stderr);
      assert.match(r.stdout, /^Usage: gmq-hub <command>/);
    } finally {
      fs.rmSync(cache, { recursive: true, force: true });
      fs.chmodSync(cli, mode); // leave the checkout as it was
    }
  });
});

describe('bin/build.js (npm run build, prestart, pretest, prepare)', () => {
  test('builds only when sources changed, never deletes dist/, prunes outputs of deleted sources', async () => {
    const root = fs.mkdtempSync(path.join(os.tmpdir(), 'gmq-build-'));
    try {
      fs.symlinkSync(path.join(REPO_ROOT, 'node_modules'), path.join(root, 'node_modules'));
      fs.writeFileSync(
        path.join(root, 'tsconfig.json'),
        JSON.stringify({
          compilerOptions: { target: 'ES2022', module: 'NodeNext', outDir: 'dist', rootDir: '.', types: [] },
          include: ['src/**/*.ts'],
        }),
      );
      fs.mkdirSync(path.join(root, 'src'));
      fs.writeFileSync(path.join(root, 'src/a.ts'), 'export const a: number = 1;\n');
      fs.writeFileSync(path.join(root, 'src/b.ts'), 'export const b: number = 2;\n');
      const build = () => run(process.execPath, [BUILD, '--root', root], { cwd: root });
      const out = (f: string) => path.join(root, 'dist/src', f);

      const first = await build();
      assert.equal(first.code, 0, first.stderr);
      assert.match(first.stderr, /compiling \(dist\/src\/a\.js is missing\)/);
      assert.ok(fs.existsSync(out('a.js')) && fs.existsSync(out('b.js')));
      // stands for a hub running from dist/: the directory itself must survive every build
      const distIno = fs.statSync(path.join(root, 'dist')).ino;
      fs.writeFileSync(out('in-use.txt'), 'a running hub reads dist/');
      const builtAt = fs.statSync(out('a.js')).mtimeMs;

      const second = await build();
      assert.equal(second.code, 0, second.stderr);
      assert.match(second.stderr, /dist\/ is up to date/);
      assert.equal(fs.statSync(out('a.js')).mtimeMs, builtAt, 'nothing was rewritten');

      const later = new Date(Date.now() + 10_000);
      fs.utimesSync(path.join(root, 'src/a.ts'), later, later);
      fs.rmSync(path.join(root, 'src/b.ts'));
      const third = await build();
      assert.equal(third.code, 0, third.stderr);
      assert.match(third.stderr, /compiling \(src\/a\.ts changed\)/);
      assert.match(third.stderr, /1 stale output\(s\) removed/);
      assert.ok(!fs.existsSync(out('b.js')) && !fs.existsSync(out('b.js.map')));
      assert.ok(fs.existsSync(out('in-use.txt')));
      assert.equal(fs.statSync(path.join(root, 'dist')).ino, distIno, 'dist/ was never deleted');

      // a type error still emits files; they must not pass for an up-to-date build
      fs.writeFileSync(path.join(root, 'src/a.ts'), 'export const a: number = "one";\n');
      const broken = await build();
      assert.equal(broken.code, 1);
      assert.match(broken.stderr, /tsc failed/);
      const again = await build();
      assert.equal(again.code, 1);
      assert.match(again.stderr, /compiling \(the last build failed\)/);
    } finally {
      fs.rmSync(root, { recursive: true, force: true });
    }
  });
});
