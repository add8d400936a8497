/**
 * Project patterns: a project id, or a glob where `*` stands for any run of characters and `?`
 * for exactly one, matched against the whole id. Used for a token's `projects` (which projects it
 * may see and act on), in memory (`ProjectScope.allows`) and in SQL (`likePatterns`), with the
 * same meaning both ways.
 *
 * Why not a glob library: project ids have no path separators, braces or classes to honour, and
 * the same two wildcards must become SQL LIKE patterns so that a paged list is filtered by the
 * database (its `total` and pages stay right). One tiny anchored conversion serves both.
 * `*` and `?` are always wildcards here (a project id containing them is matched by them too).
 */

import { isValidProjectId } from './protocol.js';

/** Most patterns one list request or token may carry. */
export const MAX_PROJECT_PATTERNS = 1000;

/** Whether a value is a project id or a glob of them (the wildcards aside, what a project id may be). */
export function isProjectPattern(v: unknown): v is string {
  return typeof v === 'string' && v.length > 0 && isValidProjectId(v.replace(/[*?]/g, 'x'));
}

/** The SQL LIKE form of a pattern, to use with `ESCAPE '\'`: `%`, `_` and `\` of the id are escaped. */
export function toLike(pattern: string): string {
  let out = '';
  for (const ch of pattern) {
    if (ch === '*') out += '%';
    else if (ch === '?') out += '_';
    else if (ch === '%' || ch === '_' || ch === '\\') out += `\\${ch}`;
    else out += ch;
  }
  return out;
}

/** The anchored RegExp of a pattern (`?` is one code point, as SQL's `_` is one character). */
export function toRegExp(pattern: string): RegExp {
  let src = '';
  for (const ch of pattern) {
    if (ch === '*') src += '.*';
    else if (ch === '?') src += '.';
    else src += ch.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&');
  }
  return new RegExp(`^${src}$`, 'su');
}

/**
 * A SQL condition limiting `column` to the patterns (the `project_patterns` of a list request),
 * or null when there are none. An empty list is "no project": it matches nothing.
 *
 * @example
 *   const c = likeCondition('project_id', ['site-*']); // { sql: "(project_id LIKE ? ESCAPE '\\')", args: ['site-%'] }
 */
export function likeCondition(
  column: string,
  patterns: readonly string[] | null | undefined,
): { sql: string; args: string[] } | null {
  if (patterns === null || patterns === undefined) return null;
  if (patterns.length === 0) return { sql: 'FALSE', args: [] };
  return {
    sql: `(${patterns.map(() => `${column} LIKE ? ESCAPE '\\'`).join(' OR ')})`,
    args: patterns.map(toLike),
  };
}

/** The projects a token is limited to. */
export class ProjectScope {
  private readonly exact = new Set<string>();
  private readonly globs: RegExp[] = [];

  constructor(readonly patterns: readonly string[]) {
    for (const p of patterns) {
      if (p.includes('*') || p.includes('?')) this.globs.push(toRegExp(p));
      else this.exact.add(p);
    }
  }

  /** Whether the scope includes this project id. */
  allows(projectId: string): boolean {
    return this.exact.has(projectId) || this.globs.some((g) => g.test(projectId));
  }
}
