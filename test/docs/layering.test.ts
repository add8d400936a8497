/**
 * The layers hold (README "Writing a module"): core imports no module; a module's file imports
 * only core, modules/shared, its own folder and other modules' contracts (`<module>/contract/`,
 * and modules/contracts.ts, the catalogue of them); modules/shared imports only core and itself;
 * a contract imports only core, modules/shared and its own contract folder, so importing one
 * never loads a module. Every relative import of every source file is read (static, re-export,
 * side-effect and dynamic), so a new edge across the layers fails here with its file and line.
 *
 * One narrow exception, named here so it cannot widen by accident: the interface kit
 * (modules/shared/interface-kit/) is what web and grpc share to *consume* the command and status
 * domains (the command waiter sends and waits on `command/*`, the event feed follows
 * `command/event/#` and `status/event/+`), so it may import those two contracts and no other.
 * No contract may import the interface kit back, so the exception cannot close a cycle.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { describe, test } from 'node:test';
import { REPO_ROOT } from '../helpers/process.js';

const IMPORT =
  /(?:^|[\s;])(?:import|export)\s(?:[^'";]*?\sfrom\s)?['"]([^'"]+)['"]|\bimport\(\s*['"]([^'"]+)['"]\s*\)/g;

/** Repository-relative paths of the .ts sources below `dir`. */
function sources(dir: string): string[] {
  const out: string[] = [];
  for (const entry of fs.readdirSync(path.join(REPO_ROOT, dir), { withFileTypes: true, recursive: true })) {
    if (entry.isFile() && entry.name.endsWith('.ts')) {
      out.push(path.relative(REPO_ROOT, path.join(entry.parentPath, entry.name)).split(path.sep).join('/'));
    }
  }
  return out.sort();
}

/** Every relative import of `file`, resolved to a repository-relative .ts path, with its line. */
function importsOf(file: string): Array<{ target: string; line: number }> {
  const text = fs.readFileSync(path.join(REPO_ROOT, file), 'utf8');
  const out: Array<{ target: string; line: number }> = [];
  for (const m of text.matchAll(IMPORT)) {
    const spec = m[1] ?? m[2];
    if (!spec.startsWith('.')) continue;
    const target = path.posix.normalize(path.posix.join(path.posix.dirname(file), spec)).replace(/\.js$/, '.ts');
    out.push({ target, line: text.slice(0, m.index).split('\n').length });
  }
  return out;
}

/** `modules/<name>/…` → name; undefined for files directly in modules/. */
const moduleOf = (file: string): string | undefined => /^modules\/([^/]+)\//.exec(file)?.[1];
const isContract = (file: string): boolean =>
  /^modules\/[^/]+\/contract\//.test(file) || file === 'modules/contracts.ts';
const INTERFACE_KIT = 'modules/shared/interface-kit/';
/** The contracts the interface kit consumes (see the header): command's and status's, nothing else. */
const KIT_CONSUMES = ['modules/command/contract/', 'modules/status/contract/'];

/** Why `file` may not import `target`, or undefined when it may. */
function violation(file: string, target: string): string | undefined {
  if (target.startsWith('core/')) return undefined;
  if (file.startsWith('core/')) return 'core imports no module';
  const own = moduleOf(file);
  const theirs = moduleOf(target);
  if (own === 'shared' && theirs !== 'shared') {
    if (file.startsWith(INTERFACE_KIT) && KIT_CONSUMES.some((c) => target.startsWith(c))) return undefined;
    return 'modules/shared imports only core and modules/shared (the interface kit also the command and status contracts)';
  }
  if (isContract(file) && file !== 'modules/contracts.ts') {
    if (target.startsWith(INTERFACE_KIT)) return 'a contract never imports the interface kit (it consumes contracts)';
    const ownContract = target.startsWith(`modules/${own}/contract/`);
    if (theirs !== 'shared' && !ownContract) return 'a contract imports only core, modules/shared and its own contract';
    return undefined;
  }
  if (theirs === 'shared' || theirs === own || isContract(target)) return undefined;
  return `a module reaches another module only through its contract (modules/${theirs}/contract/)`;
}

describe('layering', () => {
  // the two catalogues at the top of modules/ list every provider and every contract on purpose
  const CATALOGUES = new Set(['modules/index.ts', 'modules/contracts.ts']);
  const files = [...sources('core'), ...sources('modules')].filter((f) => !CATALOGUES.has(f));

  test('the rule reads real imports (guards the scanner itself)', () => {
    const seen = importsOf('modules/web/errors.ts').map((i) => i.target);
    assert.ok(seen.includes('core/errors.ts'), seen.join(', '));
    assert.ok(seen.includes('modules/contracts.ts'), 'a side-effect import counts');
    assert.equal(violation('modules/web/routes.ts', 'modules/command/send.ts') !== undefined, true);
    assert.equal(violation('modules/web/routes.ts', 'modules/command/contract/schemas.ts'), undefined);
    assert.equal(violation('core/bus.ts', 'modules/command/contract/topics.ts'), 'core imports no module');
    // the interface kit's exception is exactly as wide as the header says
    assert.equal(
      violation('modules/shared/interface-kit/event-feed.ts', 'modules/status/contract/topics.ts'),
      undefined,
    );
    assert.ok(violation('modules/shared/interface-kit/event-feed.ts', 'modules/broker/contract/topics.ts'));
    assert.ok(violation('modules/shared/protocol.ts', 'modules/command/contract/topics.ts'));
    assert.ok(violation('modules/command/contract/topics.ts', 'modules/shared/interface-kit/command-waiter.ts'));
    assert.ok(files.length > 100, `${files.length} source files`);
  });

  test('core, modules/shared, the contracts and every module keep to their layer', () => {
    const bad: string[] = [];
    for (const file of files) {
      for (const { target, line } of importsOf(file)) {
        const why = violation(file, target);
        if (why) bad.push(`${file}:${line} imports ${target}: ${why}`);
      }
    }
    assert.deepEqual(bad, []);
  });
});
