/**
 * `gmq-hub` starts on what it needs to parse its arguments and talk HTTP: its static imports
 * (the compiled JS, where type-only imports are gone) reach no package. It once imported the
 * command module's schemas for the list of statuses a `--status` may name, which loaded zod, the
 * protocol and its signing: more than half of every invocation's start (0.50–0.59 s against
 * 0.20–0.23 s for `--help` on a busy 2-core machine). Packages a command needs are imported by
 * that command when it runs (`watch` loads `ws`).
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import { REPO_ROOT } from '../helpers/process.js';

/** A static import or re-export line of emitted JS: `import … from '…'`, `export … from '…'`, `import '…'`. */
const STATIC_IMPORT = /^(?:import|export)\s(?:.*?\sfrom\s)?['"]([^'"]+)['"];?\s*$/;

/** The files `entry` loads at start (relative static imports, transitively) and the packages they import. */
function startupGraph(entry: string): { files: string[]; packages: Map<string, string> } {
  const files = new Set<string>();
  const packages = new Map<string, string>();
  const walk = (file: string) => {
    if (files.has(file)) return;
    files.add(file);
    for (const line of fs.readFileSync(file, 'utf8').split('\n')) {
      const spec = STATIC_IMPORT.exec(line)?.[1];
      if (spec === undefined || spec.startsWith('node:')) continue;
      if (spec.startsWith('.')) walk(path.resolve(path.dirname(file), spec));
      else if (!packages.has(spec)) packages.set(spec, path.relative(REPO_ROOT, file));
    }
  };
  walk(entry);
  return { files: [...files].map((f) => path.relative(REPO_ROOT, f)), packages };
}

test('the CLI loads no package at start: argument parsing, help and HTTP need none', () => {
  const { files, packages } = startupGraph(path.join(REPO_ROOT, 'dist/bootstrap/cli.js'));
  assert.ok(
    files.includes('dist/bootstrap/cli/commands.js'),
    `the walk follows the CLI's imports: ${files.join(', ')}`,
  );
  assert.deepEqual(
    [...packages].map(([pkg, from]) => `${pkg} (imported by ${from})`),
    [],
    'a package imported at start is loaded by every invocation, --help included',
  );
});

test('the walk sees what a module imports at start, and not what it imports when a command runs', () => {
  // the CLI's own command table imports the command contract; `watch` imports ws only when it runs
  const { files } = startupGraph(path.join(REPO_ROOT, 'dist/bootstrap/cli/commands.js'));
  assert.ok(files.includes('dist/modules/command/contract/topics.js'), files.join(', '));
  assert.ok(!files.includes('dist/bootstrap/cli/watch.js'), 'a dynamic import is not a start-up import');
  // and a file that imports packages at start is seen to: the hub's own entry
  const hub = startupGraph(path.join(REPO_ROOT, 'dist/bootstrap/main.js'));
  assert.ok(hub.packages.has('pino'), [...hub.packages.keys()].join(', '));
});
