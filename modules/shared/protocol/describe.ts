/**
 * Parse results and refusal reasons: every refusal says where and what, `payload.exit_code:
 * expected integer, got non-integer number`, and never repeats more than a short, log-safe
 * rendering of what was sent.
 */
import type { z } from 'zod';
import type { ErrorCode } from '../../../core/errors.js';

export type ParseErrorCode = Extract<
  ErrorCode,
  | 'PROTO_ERR_JSON'
  | 'PROTO_ERR_SCHEMA'
  | 'PROTO_ERR_TOO_LARGE'
  | 'PROTO_ERR_UNKNOWN_TYPE'
  | 'PROTO_ERR_PROJECT_ID'
  | 'PROTO_ERR_UNSAFE_VALUE'
>;
/** Every code `parseUplink` / `parseDownlink` can return. */
export const PARSE_ERROR_CODES: readonly ParseErrorCode[] = [
  'PROTO_ERR_JSON',
  'PROTO_ERR_SCHEMA',
  'PROTO_ERR_TOO_LARGE',
  'PROTO_ERR_UNKNOWN_TYPE',
  'PROTO_ERR_PROJECT_ID',
  'PROTO_ERR_UNSAFE_VALUE',
];
export type ParseResult<T> = { ok: true; value: T } | { ok: false; code: ParseErrorCode; reason: string };

export type Fail = { ok: false; code: ParseErrorCode; reason: string };
export const fail = (code: ParseErrorCode, reason: string): Fail => ({ ok: false, code, reason });

/** Safe integers carry this message, so describeIssue says "integer" when a string arrives (zod says "number"). */
export const INT_MARK = 'expected integer';

/** Short, log-safe rendering of an untrusted value. */
export function show(value: unknown): string {
  let s: string;
  try {
    s = typeof value === 'string' ? JSON.stringify(value) : (JSON.stringify(value) ?? String(value));
  } catch {
    s = Object.prototype.toString.call(value);
  }
  return s.length > 64 ? `${s.slice(0, 61)}...` : s;
}

export function kindOf(value: unknown): string {
  if (value === null) return 'null';
  if (Array.isArray(value)) return 'array';
  if (typeof value === 'number' && !Number.isInteger(value)) return 'non-integer number';
  return typeof value;
}

/** `["payload","items",0,"x"]` → `payload.items[0].x` */
function formatPath(path: readonly PropertyKey[]): string {
  let out = '';
  for (const seg of path) {
    if (typeof seg === 'number') out += `[${seg}]`;
    else out += out === '' ? String(seg) : `.${String(seg)}`;
  }
  return out === '' ? '(message)' : out;
}

function valueAt(root: unknown, path: readonly PropertyKey[]): unknown {
  let cur: unknown = root;
  for (const seg of path) {
    if (cur === null || typeof cur !== 'object' || !Object.hasOwn(cur, seg)) return undefined;
    cur = (cur as Record<PropertyKey, unknown>)[seg];
  }
  return cur;
}

/** One zod issue as `path: what was expected` (e.g. `payload.exit_code: expected integer, got non-integer number`). */
function describeIssue(issue: z.core.$ZodIssue, root: unknown, prefix: readonly PropertyKey[]): string {
  const path = [...prefix, ...issue.path];
  const where = formatPath(path);
  const actual = valueAt(root, path);
  switch (issue.code) {
    case 'invalid_type': {
      if (actual === undefined) return `${where}: required`;
      const expected = issue.expected === 'int' || issue.message === INT_MARK ? 'integer' : issue.expected;
      return `${where}: expected ${expected}, got ${kindOf(actual)}`;
    }
    case 'invalid_union': {
      // a branch that failed below the union (orEmpty's object: one of its fields) says more
      let inner: z.core.$ZodIssue | undefined;
      for (const branch of issue.errors) {
        for (const i of branch) if (i.path.length > 0 && (!inner || i.path.length > inner.path.length)) inner = i;
      }
      if (inner) return describeIssue(inner, root, [...prefix, ...issue.path]);
      // our other unions carry their expectation as the message (wireTime, node_version)
      if (actual === undefined) return `${where}: required`;
      return `${where}: ${issue.message}, got ${kindOf(actual)}`;
    }
    case 'invalid_value':
      return `${where}: expected ${issue.values.map((v) => JSON.stringify(v)).join(' | ')}, got ${show(actual)}`;
    case 'invalid_format':
      if (issue.format === 'guid') return `${where}: expected a UUID, got ${show(actual)}`;
      if (issue.format === 'regex' && 'pattern' in issue) return `${where}: must match ${issue.pattern}`;
      return `${where}: expected ${issue.format} format`;
    case 'too_small':
    case 'too_big': {
      const op = issue.code === 'too_small' ? (issue.inclusive ? '>=' : '>') : issue.inclusive ? '<=' : '<';
      const limit = issue.code === 'too_small' ? issue.minimum : issue.maximum;
      const what = issue.origin === 'string' || issue.origin === 'array' ? 'length' : 'value';
      return `${where}: ${what} must be ${op} ${String(limit)}`;
    }
    default:
      return `${where}: ${issue.message}`;
  }
}

export function schemaFailure(error: z.ZodError, root: unknown, prefix: readonly PropertyKey[] = []): Fail {
  const [first, ...rest] = error.issues;
  const head = first ? describeIssue(first, root, prefix) : 'invalid message';
  return fail('PROTO_ERR_SCHEMA', rest.length > 0 ? `${head} (and ${rest.length} more)` : head);
}
