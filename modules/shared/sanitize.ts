/**
 * The one check for free-form JSON that crosses the hub's edge (an agent's metrics, a caller's
 * metadata or command payload): PostgreSQL `text`/`jsonb` hold neither NUL (`\u0000`) nor lone
 * UTF-16 surrogates, and a value nested thousands deep makes every later reader (jsonb, zod,
 * JSON.stringify of a response) fail or recurse. Such a value is refused where it enters, with a
 * reason naming where it is, so it can never sink a batch or a listing later.
 *
 * The value being checked may be deeper than the JavaScript stack: the reporting walk is
 * iterative (an explicit stack), and the first pass recurses no deeper than the depth limit.
 *
 * @example
 *   const bad = findUnsafeJson(msg.payload.metrics);
 *   if (bad) return refuse('PROTO_ERR_UNSAFE_VALUE', `payload.metrics${bad.path}: ${bad.problem}`);
 */

/** How deep free-form JSON may nest (objects and arrays), and how many values it may hold. */
export interface JsonLimits {
  maxDepth: number;
  maxNodes: number;
}

export const DEFAULT_JSON_LIMITS: JsonLimits = { maxDepth: 32, maxNodes: 10_000 };

export interface UnsafeJson {
  /** Where, relative to the checked value: `.a.b[3]` ('' for the value itself). */
  path: string;
  problem: string;
}

const LONE_SURROGATE = /[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/;
/** Any NUL or surrogate at all: one plain scan that clears almost every string, before the two exact checks. */
// biome-ignore lint/suspicious/noControlCharactersInRegex: matching NUL is the point
const SUSPECT = /[\u0000\uD800-\uDFFF]/;

/** Why a string cannot be stored as PostgreSQL text, or null when it can. */
export function unsafeTextProblem(s: string): string | null {
  if (!SUSPECT.test(s)) return null;
  if (s.includes('\u0000')) return 'contains a NUL character (\\u0000)';
  if (LONE_SURROGATE.test(s)) return 'contains a lone UTF-16 surrogate (not encodable as UTF-8)';
  return null;
}

function keyPath(parent: string, key: string | number): string {
  if (typeof key === 'number') return `${parent}[${key}]`;
  return /^[A-Za-z_][A-Za-z0-9_]*$/.test(key) ? `${parent}.${key}` : `${parent}[${JSON.stringify(key)}]`;
}

function shortPath(path: string): string {
  return path.length > 120 ? `${path.slice(0, 117)}...` : path;
}

/**
 * The first thing in `value` that the hub cannot store or serve, or null when there is none:
 * NUL or a lone surrogate in a string or a key, nesting deeper than `maxDepth`, more than
 * `maxNodes` values, or something JSON cannot carry (a function, a symbol, a bigint, a
 * non-finite number).
 */
export function findUnsafeJson(value: unknown, limits: JsonLimits = DEFAULT_JSON_LIMITS): UnsafeJson | null {
  return isSafeJson(value, limits) ? null : locateUnsafeJson(value, limits);
}

/**
 * findUnsafeJson's verdict without the report: the same values, the same count, no path strings
 * or stack records. Every uplink's payload is checked and almost all are safe: building a path
 * string and a record for every value was 9 % of the bytes the hub allocated under heartbeats.
 * The report is made by walking again, only for a refused value.
 *
 * It recurses, and allocates nothing: an explicit stack of values and depths, and Object.keys of
 * every object, were still about 750 bytes and 1.1 µs a heartbeat payload (0.56 µs now). The node
 * count travels as the return value (what is left of `maxNodes`, or UNSAFE), so there is no
 * counter object either. The recursion is no deeper than `maxDepth` + 1, since an object at that
 * depth is refused before it is entered; for a limit that deep (none in the hub: 32) the
 * iterative walk answers instead.
 */
function isSafeJson(value: unknown, limits: JsonLimits): boolean {
  if (limits.maxDepth > MAX_RECURSIVE_DEPTH) return locateUnsafeJson(value, limits) === null;
  return safeValue(value, limits.maxDepth, limits.maxNodes) !== UNSAFE;
}

/** Beyond this `maxDepth`, isSafeJson does not recurse (the JavaScript stack holds thousands of frames; this is far inside). */
const MAX_RECURSIVE_DEPTH = 256;

/** safeValue's answer for a value that is not safe (any other answer is the node budget left). */
const UNSAFE = -1;

const hasOwn = Object.prototype.hasOwnProperty;

/**
 * `budget` values may still be read, and objects may still be entered `depthLeft` levels down.
 * Returns the budget left after `v` and everything in it, or UNSAFE.
 */
function safeValue(v: unknown, depthLeft: number, budget: number): number {
  let left = budget - 1;
  if (left < 0) return UNSAFE;
  if (v === null || typeof v === 'boolean') return left;
  if (typeof v === 'string') return unsafeTextProblem(v) === null ? left : UNSAFE;
  if (typeof v === 'number') return Number.isFinite(v) ? left : UNSAFE;
  if (typeof v !== 'object' || depthLeft <= 0) return UNSAFE;
  if (Array.isArray(v)) {
    for (let i = 0; i < v.length && left !== UNSAFE; i++) left = safeValue(v[i], depthLeft - 1, left);
    return left;
  }
  // for-in over own keys: Object.keys' keys in its order, without its array
  for (const k in v) {
    if (!hasOwn.call(v, k)) continue;
    if (unsafeTextProblem(k) !== null) return UNSAFE;
    left = safeValue((v as Record<string, unknown>)[k], depthLeft - 1, left);
    if (left === UNSAFE) return UNSAFE;
  }
  return left;
}

/**
 * The walk that names what is unsafe and where: findUnsafeJson runs it once isSafeJson said no.
 * Exported as the model findUnsafeJson is held to (test/modules/shared/sanitize.test.ts).
 */
export function locateUnsafeJson(value: unknown, limits: JsonLimits): UnsafeJson | null {
  const stack: Array<{ v: unknown; path: string; depth: number }> = [{ v: value, path: '', depth: 0 }];
  let nodes = 0;
  while (stack.length > 0) {
    const { v, path, depth } = stack.pop()!;
    if (++nodes > limits.maxNodes) return { path: '', problem: `holds more than ${limits.maxNodes} values` };
    if (v === null || typeof v === 'boolean') continue;
    if (typeof v === 'string') {
      const p = unsafeTextProblem(v);
      if (p) return { path: shortPath(path), problem: p };
      continue;
    }
    if (typeof v === 'number') {
      if (!Number.isFinite(v)) return { path: shortPath(path), problem: 'is not a finite number' };
      continue;
    }
    if (typeof v !== 'object') return { path: shortPath(path), problem: `is a ${typeof v}, not JSON` };
    if (depth >= limits.maxDepth) {
      return { path: shortPath(path), problem: `nests deeper than ${limits.maxDepth} levels` };
    }
    if (Array.isArray(v)) {
      for (let i = v.length - 1; i >= 0; i--) stack.push({ v: v[i], path: keyPath(path, i), depth: depth + 1 });
      continue;
    }
    for (const k of Object.keys(v)) {
      const kp = unsafeTextProblem(k);
      if (kp) return { path: shortPath(path), problem: `has a key that ${kp}` };
      stack.push({ v: (v as Record<string, unknown>)[k], path: keyPath(path, k), depth: depth + 1 });
    }
  }
  return null;
}
