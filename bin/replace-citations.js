#!/usr/bin/env node
/**
 * Rewrites citations of the design documents that live outside this repository into links to
 * the repository's own docs/, from the table in docs/citations.tsv (one `<old>\t<new>` per line).
 *
 * Two kinds of lines:
 * - a section citation, `<DOC> §<n>` → `docs/<page>.md#<anchor>`. Chains are rewritten section by
 *   section, keeping their separators, also across a comment line break:
 *   `<DOC> §4, §5`, `<DOC> §4 and §6`, `(<DOC> §6,\n * §10)`;
 * - any other line is a phrase, replaced literally (longest first, before the sections).
 * In Markdown files each `docs/<page>.md#<anchor>` of a replacement becomes a link relative to
 * the file. Every target anchor must exist (checked before anything is written).
 *
 * Files: .ts .js .mjs .cjs .md .yml .yaml .json .proto .py .sql under the repository, without
 * node_modules, dist, .git and data; this script, the table and the test that checks for
 * citations are left alone.
 * Prints the replacements per file, then formats the rewritten files with the repository's own
 * Biome (a longer comment or string can change how a line wraps); exits 1 when a citation of
 * those documents remains.
 *
 * Usage: node bin/replace-citations.js [--root DIR] [--table FILE] [--check]
 *   --check  rewrite nothing; list what would change and what remains (exit 1 if anything would)
 */
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const EXTENSIONS = new Set(['.ts', '.js', '.mjs', '.cjs', '.md', '.yml', '.yaml', '.json', '.proto', '.py', '.sql']);
const SKIP_DIRS = new Set(['node_modules', 'dist', '.git', 'data']);
const TARGET = /docs\/([a-z0-9-]+\.md)#([a-z0-9_-]+)/g;
const SECTION_KEY = /^([A-Z]+) §(\d+)$/;
/** The test that checks for citations names the documents on purpose (test/docs/citations.test.ts). */
const EXEMPT = new Set(['test/docs/citations.test.ts']);

function parseArgs(argv) {
  const self = fileURLToPath(import.meta.url);
  const out = { root: path.resolve(path.dirname(self), '..'), table: null, check: false, self };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === '--root') out.root = path.resolve(argv[++i]);
    else if (a === '--table') out.table = path.resolve(argv[++i]);
    else if (a === '--check') out.check = true;
    else {
      process.stderr.write(`replace-citations: unknown argument ${a}\n`);
      process.exit(2);
    }
  }
  out.table ??= path.join(out.root, 'docs', 'citations.tsv');
  return out;
}

/** GitHub's heading anchors: markup dropped, lowercase, punctuation dropped, spaces → '-', repeats numbered. */
function anchorsOf(markdown) {
  const seen = new Map();
  const anchors = new Set();
  let fence = null;
  for (const line of markdown.split('\n')) {
    const f = /^\s*(```+|~~~+)/.exec(line);
    if (f) {
      if (fence === null) fence = f[1][0];
      else if (f[1][0] === fence) fence = null;
      continue;
    }
    if (fence !== null) continue;
    const h = /^#{1,6}\s+(.*?)\s*#*\s*$/.exec(line);
    if (!h) continue;
    const text = h[1]
      .replace(/!?\[([^\]]*)\]\([^)]*\)/g, '$1')
      .replace(/<[^>]+>/g, '')
      .replace(/[`*]/g, '');
    const base = text
      .toLowerCase()
      .replace(/[^\p{L}\p{N}\s_-]/gu, '')
      .replace(/\s/g, '-');
    const n = seen.get(base) ?? 0;
    seen.set(base, n + 1);
    anchors.add(n === 0 ? base : `${base}-${n}`);
  }
  return anchors;
}

function readTable(file, root) {
  const sections = new Map();
  const phrases = [];
  const docs = new Set();
  const problems = [];
  const lines = fs.readFileSync(file, 'utf8').split('\n');
  lines.forEach((line, i) => {
    if (line.trim() === '') return;
    const cols = line.split('\t');
    if (cols.length !== 2 || cols[0] === '' || cols[1] === '') {
      problems.push(`line ${i + 1}: expected "<old>\\t<new>"`);
      return;
    }
    const [from, to] = cols;
    const targets = [...to.matchAll(TARGET)];
    if (targets.length === 0) problems.push(`line ${i + 1}: ${to} names no docs/<page>.md#<anchor>`);
    for (const [, page, anchor] of targets) {
      const pageFile = path.join(root, 'docs', page);
      if (!fs.existsSync(pageFile)) problems.push(`line ${i + 1}: docs/${page} does not exist`);
      else if (!anchorsOf(fs.readFileSync(pageFile, 'utf8')).has(anchor)) {
        problems.push(`line ${i + 1}: docs/${page} has no heading with anchor #${anchor}`);
      }
    }
    const m = SECTION_KEY.exec(from);
    if (m) {
      sections.set(from, to);
      docs.add(m[1]);
    } else phrases.push([from, to]);
  });
  phrases.sort((a, b) => b[0].length - a[0].length);
  return { sections, phrases, docs: [...docs], problems };
}

function* walk(dir, root) {
  for (const entry of fs.readdirSync(dir, { withFileTypes: true })) {
    const full = path.join(dir, entry.name);
    if (entry.isDirectory()) {
      if (!SKIP_DIRS.has(entry.name)) yield* walk(full, root);
    } else if (entry.isFile() && EXTENSIONS.has(path.extname(entry.name))) {
      yield full;
    }
  }
}

/** In Markdown, `docs/x.md#a` becomes `[docs/x.md](<relative>/docs/x.md#a)`. */
function linkify(text, file, root) {
  if (path.extname(file) !== '.md') return text;
  const rel = path.relative(path.dirname(file), path.join(root, 'docs')).split(path.sep).join('/');
  const prefix = rel === '' ? '' : `${rel}/`;
  return text.replace(TARGET, (_m, page, anchor) => `[docs/${page}](${prefix}${page}#${anchor})`);
}

function rewrite(text, file, root, table) {
  let count = 0;
  let out = text;
  for (const [from, to] of table.phrases) {
    const parts = out.split(from);
    if (parts.length > 1) {
      count += parts.length - 1;
      out = parts.join(linkify(to, file, root));
    }
  }
  const names = table.docs.join('|');
  if (names) {
    // `<DOC> §4`, then any `, §5` / ` and §6`, also after a line break and a comment leader
    const chain = new RegExp(`\\b(${names}) §(\\d+)((?:(?:,|\\s+and)\\s*(?:(?:\\*|//|#)\\s*)?§\\d+)*)`, 'g');
    out = out.replace(chain, (whole, doc, first, rest) => {
      const target = (n) => table.sections.get(`${doc} §${n}`);
      if (target(first) === undefined) return whole;
      const more = [...rest.matchAll(/§(\d+)/g)].map((m) => m[1]);
      if (more.some((n) => target(n) === undefined)) return whole;
      count += 1 + more.length;
      const tail = rest.replace(/§(\d+)/g, (_m, n) => linkify(target(n), file, root));
      return linkify(target(first), file, root) + tail;
    });
  }
  return { out, count };
}

/** Lines that still cite the documents: `<DOC> §n`, or the document named as a word. */
function remaining(text, docs) {
  if (docs.length === 0) return [];
  const cite = new RegExp(`\\b(${docs.join('|')})\\b`);
  const found = [];
  text.split('\n').forEach((line, i) => {
    if (cite.test(line)) found.push({ line: i + 1, text: line.trim() });
  });
  return found;
}

/** Biome formats the files its configuration covers and skips the others (no error for those). */
function format(root, files) {
  const biome = path.join(root, 'node_modules', '.bin', 'biome');
  if (!fs.existsSync(biome)) {
    process.stdout.write('biome not installed: run `npx biome check --write` on the files above\n');
    return;
  }
  const r = spawnSync(biome, ['format', '--write', '--no-errors-on-unmatched', ...files], {
    cwd: root,
    stdio: 'inherit',
  });
  if (r.status !== 0) {
    process.stderr.write('replace-citations: biome could not format the rewritten files\n');
    process.exit(1);
  }
}

function main() {
  const opts = parseArgs(process.argv.slice(2));
  const table = readTable(opts.table, opts.root);
  if (table.problems.length > 0) {
    for (const p of table.problems)
      process.stderr.write(`replace-citations: ${path.relative(opts.root, opts.table)} ${p}\n`);
    process.exit(1);
  }
  let total = 0;
  const left = [];
  const changed = [];
  for (const file of walk(opts.root, opts.root)) {
    if (file === opts.self || file === opts.table) continue;
    const rel = path.relative(opts.root, file).split(path.sep).join('/');
    if (EXEMPT.has(rel)) continue;
    const text = fs.readFileSync(file, 'utf8');
    const { out, count } = rewrite(text, file, opts.root, table);
    if (count > 0) {
      total += count;
      if (!opts.check) fs.writeFileSync(file, out);
      changed.push(file);
      process.stdout.write(`${String(count).padStart(4)}  ${rel}\n`);
    }
    for (const r of remaining(out, table.docs)) left.push(`${rel}:${r.line}: ${r.text}`);
  }
  process.stdout.write(`${total} citation(s) ${opts.check ? 'to replace' : 'replaced'}\n`);
  if (!opts.check && changed.length > 0) format(opts.root, changed);
  if (left.length > 0) {
    process.stderr.write(`replace-citations: ${left.length} line(s) still cite a document outside the repository:\n`);
    for (const l of left) process.stderr.write(`  ${l}\n`);
    process.exit(1);
  }
  if (opts.check && total > 0) process.exit(1);
}

main();
