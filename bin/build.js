#!/usr/bin/env node
/**
 * `npm run build` (and prestart, pretest, prepare, the `gmq-hub` shim): compiles the TypeScript
 * sources into dist/ only when dist/ is out of date, and never deletes dist/ (a hub may be
 * running from it). Out of date means: a source has no output or is newer than it, tsconfig.json
 * is newer than the oldest output, or the last build failed. Outputs whose source is gone are
 * removed one by one afterwards, so `npm test` never runs a deleted test.
 *
 * Usage: node bin/build.js [--force] [--quiet] [--root DIR]
 *
 * @example
 *   node bin/build.js          # "dist/ is up to date" in a few ms, or runs tsc
 */
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const REPO = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
/** Left in dist/ when tsc fails: type errors still emit files, which must not count as a build. */
const FAILED_MARK = '.build-failed';

/** The `.ts` sources tsconfig.json includes (its `include` globs are all `<dir>/**\/*.ts`). */
function sources(root) {
  const tsconfig = JSON.parse(fs.readFileSync(path.join(root, 'tsconfig.json'), 'utf8'));
  const dirs = (tsconfig.include ?? []).map((g) => g.split('/')[0]).filter((d) => fs.existsSync(path.join(root, d)));
  const out = [];
  const walk = (rel) => {
    for (const e of fs.readdirSync(path.join(root, rel), { withFileTypes: true })) {
      const r = path.join(rel, e.name);
      if (e.isDirectory()) {
        if (e.name !== 'node_modules' && e.name !== 'dist') walk(r);
      } else if (e.name.endsWith('.ts') && !e.name.endsWith('.d.ts')) out.push(r);
    }
  };
  for (const d of [...new Set(dirs)]) walk(d);
  return { files: out, dirs: [...new Set(dirs)] };
}

const mtime = (file) => {
  try {
    return fs.statSync(file).mtimeMs;
  } catch {
    return undefined;
  }
};

/** Why dist/ needs a build, or null when it is up to date. */
export function staleReason(root = REPO) {
  const dist = path.join(root, 'dist');
  if (fs.existsSync(path.join(dist, FAILED_MARK))) return 'the last build failed';
  const { files } = sources(root);
  let oldest = Number.POSITIVE_INFINITY;
  for (const src of files) {
    const out = path.join(dist, src.replace(/\.ts$/, '.js'));
    const built = mtime(out);
    if (built === undefined) return `dist/${src.replace(/\.ts$/, '.js')} is missing`;
    if (mtime(path.join(root, src)) > built) return `${src} changed`;
    oldest = Math.min(oldest, built);
  }
  if (mtime(path.join(root, 'tsconfig.json')) > oldest) return 'tsconfig.json changed';
  return null;
}

/** Removes outputs (their source maps and declarations) whose `.ts` source no longer exists; returns how many. */
export function pruneOrphans(root = REPO) {
  const dist = path.join(root, 'dist');
  const { files, dirs } = sources(root);
  const expected = new Set(files.map((f) => f.replace(/\.ts$/, '.js')));
  let removed = 0;
  const walk = (rel) => {
    let entries;
    try {
      entries = fs.readdirSync(path.join(dist, rel), { withFileTypes: true });
    } catch {
      return;
    }
    for (const e of entries) {
      const r = path.join(rel, e.name);
      if (e.isDirectory()) walk(r);
      else if (e.name.endsWith('.js') && !expected.has(r)) {
        fs.rmSync(path.join(dist, r), { force: true });
        fs.rmSync(path.join(dist, `${r}.map`), { force: true });
        removed++;
      } else if (e.name.endsWith('.d.ts') && !expected.has(`${r.slice(0, -'.d.ts'.length)}.js`)) {
        // a moved source's declarations would otherwise ship in the package beside its new ones
        fs.rmSync(path.join(dist, r), { force: true });
        removed++;
      }
    }
  };
  for (const d of dirs) walk(d);
  return removed;
}

/**
 * Builds when needed. Returns true when dist/ is usable afterwards. tsc's own output goes to
 * stderr, so a command printing JSON on stdout (`gmq-hub … --json`) stays parseable.
 */
/** tsc writes files without the exec bit; the CLI is also run directly (./dist/bootstrap/cli.js). */
function cliExecutable(root) {
  try {
    fs.chmodSync(path.join(root, 'dist', 'bootstrap', 'cli.js'), 0o755);
  } catch {
    // no CLI in this tree (a partial build): bin/gmq-hub.js runs it through node anyway
  }
}

export function ensureBuilt(opts = {}) {
  const root = opts.root ?? REPO;
  const say = (line) => {
    if (!opts.quiet) process.stderr.write(`gmq-hub build: ${line}\n`);
  };
  // An installed package (npm install -g, npx from a tarball) ships dist/ and no sources or
  // tsconfig.json (package.json "files"): there is nothing to build, only dist/ to run.
  if (!fs.existsSync(path.join(root, 'tsconfig.json'))) {
    return fs.existsSync(path.join(root, 'dist', 'bootstrap', 'cli.js'));
  }
  const reason = opts.force ? 'forced' : staleReason(root);
  if (reason === null) {
    cliExecutable(root);
    const pruned = pruneOrphans(root);
    say(`dist/ is up to date${pruned ? ` (${pruned} stale output(s) removed)` : ''}`);
    return true;
  }
  // the project's own compiler (tsc -p), from its node_modules or this script's
  const tsc = [root, REPO]
    .map((r) => path.join(r, 'node_modules', 'typescript', 'bin', 'tsc'))
    .find((f) => fs.existsSync(f));
  if (!tsc) {
    process.stderr.write(
      `gmq-hub build: dist/ needs a build (${reason}) but TypeScript is not installed: run npm install\n`,
    );
    return false;
  }
  say(`compiling (${reason})`);
  const mark = path.join(root, 'dist', FAILED_MARK);
  const r = spawnSync(process.execPath, [tsc, '-p', root], { cwd: root, stdio: ['ignore', 2, 2] });
  if (r.status !== 0) {
    fs.mkdirSync(path.dirname(mark), { recursive: true });
    fs.writeFileSync(mark, `tsc exited with ${r.status ?? r.signal}\n`);
    process.stderr.write(`gmq-hub build: tsc failed (exit ${r.status ?? r.signal}); dist/ is not up to date\n`);
    return false;
  }
  fs.rmSync(mark, { force: true });
  cliExecutable(root);
  const pruned = pruneOrphans(root);
  say(`done${pruned ? ` (${pruned} stale output(s) removed)` : ''}`);
  return true;
}

if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const args = process.argv.slice(2);
  const at = args.indexOf('--root');
  const ok = ensureBuilt({
    force: args.includes('--force'),
    quiet: args.includes('--quiet'),
    root: at >= 0 ? path.resolve(args[at + 1]) : REPO,
  });
  process.exit(ok ? 0 : 1);
}
