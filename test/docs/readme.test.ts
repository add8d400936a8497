/**
 * The README's reference stays true: every setting of every built-in module's schema, and every
 * REST route, is named in it. A key added to a schema without a line in the README fails here.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { describe, test } from 'node:test';
import type { z } from 'zod';
import { builtinProviders } from '../../modules/index.js';
import { REPO_ROOT } from '../helpers/process.js';

const README = fs.readFileSync(path.join(REPO_ROOT, 'README.md'), 'utf8');

/** The object schema under defaults, optionals, prefaults and refinements, or null for a leaf. */
function objectShape(schema: z.ZodType): Record<string, z.ZodType> | null {
  let s = schema as unknown as { def: { type: string; innerType?: z.ZodType; in?: z.ZodType }; shape?: unknown };
  for (let i = 0; i < 10; i++) {
    if (s.def.type === 'object') return s.shape as Record<string, z.ZodType>;
    const inner = s.def.innerType ?? s.def.in;
    if (!inner) return null;
    s = inner as unknown as typeof s;
  }
  return null;
}

/** Dotted paths of every leaf setting: `port`, `ws.replay`, `handlers.host_exec.allow`. */
function settingPaths(schema: z.ZodType, prefix = ''): string[] {
  const shape = objectShape(schema);
  if (!shape) return [prefix];
  return Object.entries(shape).flatMap(([k, v]) => settingPaths(v, prefix ? `${prefix}.${k}` : k));
}

/** The README paragraph and table of one module under "Module settings". */
function sectionOf(module: string): string {
  const start = README.indexOf(`**\`${module}\`**`);
  assert.ok(start >= 0, `README has no settings section for the ${module} module`);
  const next = README.indexOf('\n**`', start + 1);
  const end = README.indexOf('\n## ', start);
  return README.slice(start, next > 0 && next < end ? next : end);
}

const escapeRegExp = (s: string) => s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');

describe('README', () => {
  const registry = builtinProviders();
  for (const name of registry.names()) {
    test(`names every setting of the ${name} module`, () => {
      const section = sectionOf(name);
      const missing = settingPaths(registry.resolve(name, name).schema).filter((p) => {
        const parts = p.split('.');
        const leaf = parts.at(-1)!;
        // `a.b.leaf`, `.leaf` (a continuation of the row's first path) or `leaf` at top level
        const named = new RegExp(`\`(?:[\\w.]*\\.)?${escapeRegExp(leaf)}\``).test(section);
        const parentNamed = parts.length === 1 || section.includes(`\`${parts[0]}.`);
        return !(named && parentNamed);
      });
      assert.deepEqual(missing, [], `settings of ${name} missing from the README: ${missing.join(', ')}`);
    });
  }

  test('names every REST route', async () => {
    const { buildRoutes } = await import('../../modules/web/routes.js');
    const { webConfigSchema } = await import('../../modules/web/config.js');
    const routes = buildRoutes({
      name: 'web',
      cfg: webConfigSchema.parse({}),
      bus: {} as never,
      waiter: {} as never,
      ready: async () => ({ ready: true, checks: {} }),
    });
    const missing = routes
      .map((r) => `${r.method} ${r.url.replace('/api/exchange-hub', '')}`)
      .filter((line) => !README.includes(line));
    assert.deepEqual(missing, [], `routes missing from the README's REST table: ${missing.join(', ')}`);
  });
});
