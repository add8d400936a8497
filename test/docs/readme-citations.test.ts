/**
 * Every README section the project cites exists (issue 15, item 8: config.yml sent a newcomer to
 * a "Running an agent" section that was not there). Cited are: `README "Name"` (also
 * `README ("Name"`, `README, "Name"`, curly quotes) in any tracked source, config or document,
 * `README.md#anchor` links, and the README's own `(#anchor)` links. A quoted name is a heading or
 * a bold paragraph title (`**Idempotent sends.**`); an anchor is a heading's GitHub anchor.
 * The measurements behind the README's benchmark figures are cited the same way by name,
 * `docs/benchmarks.md "Name"`, and are held to that page (its anchors: test/docs/citations.test.ts).
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { describe, test } from 'node:test';
import { REPO_ROOT } from '../helpers/process.js';

const README = fs.readFileSync(path.join(REPO_ROOT, 'README.md'), 'utf8');
const BENCHMARKS = fs.readFileSync(path.join(REPO_ROOT, 'docs/benchmarks.md'), 'utf8');

/** Heading texts without the #s and inline code marks, outside fenced code blocks. */
function headings(md: string): string[] {
  const out: string[] = [];
  let fenced = false;
  for (const line of md.split('\n')) {
    if (line.startsWith('```')) fenced = !fenced;
    const m = !fenced && /^#{1,6}\s+(.*?)\s*$/.exec(line);
    if (m) out.push(m[1].replace(/`/g, ''));
  }
  return out;
}

/** GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens. */
function anchor(heading: string): string {
  return heading
    .toLowerCase()
    .replace(/[^\p{L}\p{N}\s_-]/gu, '')
    .replace(/\s/g, '-');
}

/** Bold paragraph titles: `**Idempotent sends.**` → `Idempotent sends`. */
function boldTitles(md: string): string[] {
  return [...md.matchAll(/^\*\*([^*]+?)\.?\*\*/gm)].map((m) => m[1].replace(/`/g, ''));
}

/** Files that show the citation forms themselves (placeholders such as `README.md#anchor`). */
const DESCRIBE_THE_FORMS = new Set(['test/docs/citations.test.ts', 'test/docs/readme-citations.test.ts']);

/** The tracked files a citation can sit in (not node_modules, dist or binaries). */
function trackedTextFiles(): string[] {
  const files = execFileSync('git', ['ls-files'], { cwd: REPO_ROOT, encoding: 'utf8' }).split('\n');
  return files.filter(
    (f) => (/\.(ts|js|mjs|cjs|ya?ml|md|proto|json|tsv|html)$/.test(f) || f === '.ci/run') && !DESCRIBE_THE_FORMS.has(f),
  );
}

/** The text with line breaks and the comment marks that start continuation lines folded into spaces. */
function folded(text: string): string {
  return text.replace(/\s*\n\s*(?:\/\/+|\*|#+(?=\s))?\s*/g, ' ');
}

interface Citation {
  file: string;
  /** The document cited: the README, or docs/benchmarks.md (by name only). */
  doc: 'README' | 'benchmarks';
  name?: string;
  anchor?: string;
}

function citations(): Citation[] {
  const out: Citation[] = [];
  for (const file of trackedTextFiles()) {
    const abs = path.join(REPO_ROOT, file);
    if (!fs.existsSync(abs)) continue;
    const text = folded(fs.readFileSync(abs, 'utf8'));
    for (const m of text.matchAll(/\bREADME(?:\.md)?\s*[,(]?\s*(?:section\s+)?["“]([^"”]{2,80})["”]/g)) {
      out.push({ file, doc: 'README', name: m[1].trim() });
    }
    for (const m of text.matchAll(/\bdocs\/benchmarks\.md\s*[,(]?\s*["“]([^"”]{2,80})["”]/g)) {
      out.push({ file, doc: 'benchmarks', name: m[1].trim() });
    }
    for (const m of text.matchAll(/README\.md#([a-z0-9_-]+)/g)) out.push({ file, doc: 'README', anchor: m[1] });
    if (file === 'README.md') {
      for (const m of text.matchAll(/\]\(#([a-z0-9_-]+)\)/g)) out.push({ file, doc: 'README', anchor: m[1] });
    }
  }
  return out;
}

describe('README citations', () => {
  const heads = headings(README);
  const names = new Set([...heads, ...boldTitles(README)]);
  const anchors = new Set(heads.map(anchor));
  const benchmarkNames = new Set([...headings(BENCHMARKS), ...boldTitles(BENCHMARKS)]);
  const found = citations();

  test('the citations are found (the scan reads what it should)', () => {
    // config.yml sends the reader to the agent's section; the README's contents line links its sections
    assert.ok(
      found.some((c) => c.file === 'config.yml'),
      'config.yml cites the README',
    );
    assert.ok(found.filter((c) => c.file === 'README.md' && c.anchor).length >= 10, 'the contents line is read');
    assert.ok(
      found.some((c) => c.name === 'Running an agent'),
      'the quoted form is read',
    );
    assert.ok(anchors.has('running-an-agent') && anchors.has('lifecycle-start-reload-stop'));
    assert.ok(
      found.some((c) => c.doc === 'benchmarks' && c.name === 'Bounded maps that stay fast when full'),
      'the quoted form of docs/benchmarks.md is read',
    );
  });

  test('every cited section exists', () => {
    const missing = found
      .filter((c) =>
        c.doc === 'benchmarks'
          ? !benchmarkNames.has(c.name!)
          : c.name !== undefined
            ? !names.has(c.name)
            : !anchors.has(c.anchor!),
      )
      .map((c) => `${c.file}: ${c.doc} ${c.name !== undefined ? `"${c.name}"` : `#${c.anchor}`}`);
    assert.deepEqual(missing, [], `sections cited but missing:\n${missing.join('\n')}`);
  });
});
