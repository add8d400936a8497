/**
 * Comments and docs cite this repository's own docs/, never a document outside it: no line of a
 * source, config or doc file names the external design documents (by section or by name), and
 * every `docs/<page>.md#<anchor>` cited anywhere (links in Markdown included) names a heading
 * that exists. The citation table `docs/citations.tsv`, which bin/replace-citations.js applies,
 * must point at existing headings too.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { describe, test } from 'node:test';
import { REPO_ROOT } from '../helpers/process.js';

const EXTENSIONS = new Set(['.ts', '.js', '.mjs', '.cjs', '.md', '.yml', '.yaml', '.json', '.proto', '.py', '.sql']);
const SKIP_DIRS = new Set(['node_modules', 'dist', '.git', 'data']);
/** Files that name the external documents on purpose: this test and the script that rewrites citations. */
const EXEMPT = new Set(['test/docs/citations.test.ts', 'bin/replace-citations.js']);
/** The documents outside the repository, as comments used to cite them. */
const EXTERNAL = /\b(?:DESIGN|CONVENTIONS)\b/;
const DOC_TARGET = /docs\/([a-z0-9-]+\.md)#([\p{L}\p{N}_-]+)/gu;

function* walk(dir: string): Generator<string> {
  for (const entry of fs.readdirSync(dir, { withFileTypes: true })) {
    const full = path.join(dir, entry.name);
    if (entry.isDirectory()) {
      if (!SKIP_DIRS.has(entry.name)) yield* walk(full);
    } else if (entry.isFile() && EXTENSIONS.has(path.extname(entry.name))) {
      yield full;
    }
  }
}

function repoFiles(): Array<{ rel: string; text: string }> {
  const out: Array<{ rel: string; text: string }> = [];
  for (const file of walk(REPO_ROOT)) {
    const rel = path.relative(REPO_ROOT, file).split(path.sep).join('/');
    if (!EXEMPT.has(rel)) out.push({ rel, text: fs.readFileSync(file, 'utf8') });
  }
  return out;
}

/** GitHub's heading anchors: markup dropped, lowercase, punctuation dropped, spaces → '-', repeats numbered. */
function headingAnchors(markdown: string): Set<string> {
  const seen = new Map<string, number>();
  const anchors = new Set<string>();
  let fence: string | null = null;
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

const fileAnchors = new Map<string, Set<string> | null>();
/** The heading anchors of a Markdown file, null when it does not exist. */
function anchorsOfFile(file: string): Set<string> | null {
  if (!fileAnchors.has(file)) {
    fileAnchors.set(file, fs.existsSync(file) ? headingAnchors(fs.readFileSync(file, 'utf8')) : null);
  }
  return fileAnchors.get(file) ?? null;
}
const anchorsOfPage = (page: string) => anchorsOfFile(path.join(REPO_ROOT, 'docs', page));

/** `docs/<page>.md#<anchor>` targets in `text` that name no heading of an existing page. */
function brokenTargets(text: string): string[] {
  const broken: string[] = [];
  for (const [whole, page, anchor] of text.matchAll(DOC_TARGET)) {
    const anchors = anchorsOfPage(page);
    if (!anchors) broken.push(`${whole} (no such page)`);
    else if (!anchors.has(anchor)) broken.push(`${whole} (no such heading)`);
  }
  return broken;
}

describe('citations', () => {
  const files = repoFiles();

  test('the anchor function renders headings as GitHub does', () => {
    const a = headingAnchors(
      '# MQTT wire protocol\n## `web` and `grpc`\n## A command, end to end\n## Topics\n## Topics\n```\n# not a heading\n```\n',
    );
    assert.deepEqual([...a], ['mqtt-wire-protocol', 'web-and-grpc', 'a-command-end-to-end', 'topics', 'topics-1']);
  });

  test('no file cites a document outside the repository', () => {
    const found: string[] = [];
    for (const { rel, text } of files) {
      text.split('\n').forEach((line, i) => {
        if (EXTERNAL.test(line)) found.push(`${rel}:${i + 1}: ${line.trim().slice(0, 160)}`);
      });
    }
    assert.deepEqual(found, [], `cite docs/*.md instead (node bin/replace-citations.js):\n${found.join('\n')}`);
  });

  test('every docs/<page>.md#<anchor> cited in the repository names an existing heading', () => {
    const broken: string[] = [];
    for (const { rel, text } of files) for (const b of brokenTargets(text)) broken.push(`${rel}: ${b}`);
    assert.deepEqual(broken, []);
  });

  test('links between the pages of docs/ name existing headings', () => {
    const broken: string[] = [];
    for (const page of fs.readdirSync(path.join(REPO_ROOT, 'docs')).filter((f) => f.endsWith('.md'))) {
      const text = fs.readFileSync(path.join(REPO_ROOT, 'docs', page), 'utf8');
      // [text](#anchor), [text](page.md#anchor), [text](../README.md#anchor)
      for (const [, target, anchor] of text.matchAll(/\]\(((?:\.\.\/)*[\w.-]*\.md)?#([^)\s]+)\)/g)) {
        const anchors = anchorsOfFile(path.resolve(REPO_ROOT, 'docs', target ?? page));
        if (!anchors?.has(anchor)) broken.push(`docs/${page}: ${target ?? ''}#${anchor}`);
      }
    }
    assert.deepEqual(broken, []);
  });

  test('docs/citations.tsv maps each citation to an existing heading', () => {
    const lines = fs
      .readFileSync(path.join(REPO_ROOT, 'docs', 'citations.tsv'), 'utf8')
      .split('\n')
      .filter((l) => l.trim() !== '');
    assert.ok(lines.length > 0, 'the table is not empty');
    const olds = new Set<string>();
    for (const line of lines) {
      const cols = line.split('\t');
      assert.equal(cols.length, 2, `two tab-separated columns: ${JSON.stringify(line)}`);
      const [from, to] = cols;
      assert.ok(!olds.has(from), `${from} is listed once`);
      olds.add(from);
      assert.ok(EXTERNAL.test(from), `${from} cites an external document`);
      assert.ok(!EXTERNAL.test(to), `${to} does not`);
      assert.match(to, new RegExp(DOC_TARGET.source, 'u'), `${from} maps to docs/<page>.md#<anchor>`);
      assert.deepEqual(brokenTargets(to), [], `${from} → ${to}`);
    }
  });
});
