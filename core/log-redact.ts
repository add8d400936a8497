/**
 * Secrets never reach a log line: a logged object's `secret`, `password`, `token` and
 * `api_token` values, at its top level and two levels down (`{config: {mqtt: {secret}}}`,
 * `{targets: [{token}]}`), are written as `[redacted]`.
 *
 * Why not pino's own `redact` option: its wildcard paths (`*.secret`) run a path parser and a
 * selective clone of the object on every line, whether or not a secret is there: about 10 KB
 * of garbage per line, a quarter of everything the hub allocated per command on the async
 * path (docs/benchmarks.md, "Log lines without wildcard redaction"). This walk allocates nothing when there
 * is nothing to hide, which is every line the hub writes; when there is, it copies only the
 * objects on the way to the secret, so the caller's object is never changed.
 *
 * @example
 *   redactSecrets({ project_id: 'p', config: { mqtt: { secret: 's' } } })
 *   // → { project_id: 'p', config: { mqtt: { secret: '[redacted]' } } }
 */

export const CENSOR = '[redacted]';

/** The key names whose values are never logged, at any of the levels walked. */
export const SECRET_KEYS: ReadonlySet<string> = new Set(['secret', 'password', 'token', 'api_token']);

/** Levels of keys looked at: the object's own (1) and two below it. */
export const REDACT_DEPTH = 3;

/** The object itself when it holds no secret within REDACT_DEPTH, else a copy with them censored. */
export function redactSecrets<T>(obj: T): T {
  return redactAt(obj, 1) as T;
}

function redactAt(value: unknown, depth: number): unknown {
  if (value === null || typeof value !== 'object' || depth > REDACT_DEPTH) return value;
  if (Array.isArray(value)) {
    let copy: unknown[] | null = null;
    for (let i = 0; i < value.length; i++) {
      const item = value[i];
      if (item === null || typeof item !== 'object') continue;
      const r = redactAt(item, depth + 1);
      if (r !== item) {
        copy ??= value.slice();
        copy[i] = r;
      }
    }
    return copy ?? value;
  }
  // Buffers, dates, maps, typed arrays: no named secret fields to look in, and their bytes are
  // not walked (a log line never carries a batch)
  if (ArrayBuffer.isView(value) || value instanceof Date || value instanceof Map || value instanceof Set) return value;
  const obj = value as Record<string, unknown>;
  let copy: Record<string, unknown> | null = null;
  for (const key in obj) {
    if (!Object.hasOwn(obj, key)) continue;
    const v = obj[key];
    let r: unknown;
    if (SECRET_KEYS.has(key)) r = v === undefined || v === null ? v : CENSOR;
    else if (v !== null && typeof v === 'object') r = redactAt(v, depth + 1);
    else continue;
    if (r !== v) {
      copy ??= copyOf(obj);
      copy[key] = r;
    }
  }
  return copy ?? obj;
}

/**
 * A shallow copy that keeps what the log serializers need: an Error stays an Error (same
 * prototype, its non-enumerable message and stack kept), so pino's `err` serializer still
 * writes its type, message and stack.
 */
function copyOf(obj: Record<string, unknown>): Record<string, unknown> {
  const proto = Object.getPrototypeOf(obj) as object | null;
  if (proto === Object.prototype || proto === null) return { ...obj };
  return Object.create(proto, Object.getOwnPropertyDescriptors(obj)) as Record<string, unknown>;
}
