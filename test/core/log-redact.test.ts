/**
 * Secrets never reach a log line (core/log-redact.ts): the walk censors secret, password, token
 * and api_token values on the logged object and two levels down, never changes the caller's
 * object, and hands back the very same object when there is nothing to hide (the common line
 * allocates nothing). Checked as a function against a model, and through a real pino logger.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { isDeepStrictEqual } from 'node:util';
import fc from 'fast-check';
import { CENSOR, REDACT_DEPTH, redactSecrets, SECRET_KEYS } from '../../core/log-redact.js';
import { captureLog } from '../fixtures/capture-log.js';

const KEYS = ['id', 'name', 'config', 'mqtt', 'secret', 'password', 'token', 'api_token', 'targets', 'x'];

/** JSON-shaped values whose keys often are secret names, nested deeper than the walk goes. */
const logged = fc.letrec((tie) => ({
  value: fc.oneof(
    { depthSize: 'small', withCrossShrink: true },
    fc.oneof(fc.string(), fc.integer(), fc.boolean(), fc.constant(null)),
    tie('object'),
    fc.array(tie('value'), { maxLength: 4 }),
  ),
  object: fc.dictionary(fc.constantFrom(...KEYS), tie('value'), { maxKeys: 5, noNullPrototype: true }),
})).object as fc.Arbitrary<Record<string, unknown>>;

/** The model: every secret-named key with a value, at object level 1..REDACT_DEPTH. */
function secretsLeft(v: unknown, depth: number, out: string[], where = '$'): string[] {
  if (v === null || typeof v !== 'object' || depth > REDACT_DEPTH) return out;
  if (Array.isArray(v)) {
    v.forEach((item, i) => {
      secretsLeft(item, depth + 1, out, `${where}[${i}]`);
    });
    return out;
  }
  for (const [k, val] of Object.entries(v)) {
    if (SECRET_KEYS.has(k) && val !== null && val !== undefined && val !== CENSOR) out.push(`${where}.${k}`);
    secretsLeft(val, depth + 1, out, `${where}.${k}`);
  }
  return out;
}

function hasSecretKey(v: unknown, depth: number): boolean {
  if (v === null || typeof v !== 'object' || depth > REDACT_DEPTH) return false;
  if (Array.isArray(v)) return v.some((item) => hasSecretKey(item, depth + 1));
  return Object.entries(v).some(
    ([k, val]) => (SECRET_KEYS.has(k) && val !== null && val !== undefined) || hasSecretKey(val, depth + 1),
  );
}

/** Equal except at censored places: everything not a secret is kept as it was. */
function sameOutsideSecrets(before: unknown, after: unknown, depth: number): boolean {
  if (before === null || typeof before !== 'object' || depth > REDACT_DEPTH) return isDeepStrictEqual(before, after);
  if (Array.isArray(before)) {
    return (
      Array.isArray(after) &&
      after.length === before.length &&
      before.every((b, i) => sameOutsideSecrets(b, after[i], depth + 1))
    );
  }
  const a = after as Record<string, unknown>;
  const keys = Object.keys(before);
  if (keys.length !== Object.keys(a).length) return false;
  return keys.every((k) => {
    const b = (before as Record<string, unknown>)[k];
    if (SECRET_KEYS.has(k) && b !== null && b !== undefined) return a[k] === CENSOR;
    return sameOutsideSecrets(b, a[k], depth + 1);
  });
}

describe('log redaction', () => {
  test('no secret within reach survives; nothing else changes; the input is never touched', () => {
    fc.assert(
      fc.property(logged, (obj) => {
        const before = structuredClone(obj);
        const out = redactSecrets(obj);
        assert.deepEqual(obj, before, 'the caller keeps its object as it was');
        assert.deepEqual(secretsLeft(out, 1, []), []);
        assert.ok(sameOutsideSecrets(before, out, 1), 'only secret values differ');
        if (!hasSecretKey(obj, 1)) assert.equal(out, obj, 'nothing to hide: the same object, no copy');
      }),
      { numRuns: 2000 },
    );
  });

  test('an Error with a secret stays an Error with its message and stack', () => {
    const err = Object.assign(new Error('connect refused'), { code: 'ECONNREFUSED', password: 'hunter2' });
    const out = redactSecrets({ err }) as { err: Error & { password: string; code: string } };
    assert.ok(out.err instanceof Error);
    assert.equal(out.err.message, 'connect refused');
    assert.equal(out.err.stack, err.stack);
    assert.equal(out.err.code, 'ECONNREFUSED');
    assert.equal(out.err.password, CENSOR);
    assert.equal(err.password, 'hunter2', 'the thrown error is not changed');
  });

  test('through the hub logger: nested, in arrays, in errors and in child bindings', () => {
    const cap = captureLog();
    const child = cap.log.child({ module: 'mqtt-bridge', token: 'bound-secret' });
    child.info(
      {
        project_id: 'p1',
        secret: 'top',
        config: { mqtt: { secret: 'deep', url: 'mqtt://h' } },
        tokens: [{ token_id: 't1', token: 'in-array' }],
        err: Object.assign(new Error('boom'), { api_token: 'on-error' }),
      },
      'something happened',
    );
    const [line] = cap.find('something happened');
    const text = JSON.stringify(line);
    for (const s of ['top', 'deep', 'in-array', 'on-error', 'bound-secret']) {
      assert.ok(!text.includes(`"${s}"`), `${s} must not reach the line: ${text}`);
    }
    assert.equal(line.secret, CENSOR);
    assert.equal(line.token, CENSOR);
    assert.deepEqual(line.config, { mqtt: { secret: CENSOR, url: 'mqtt://h' } });
    assert.deepEqual(line.tokens, [{ token_id: 't1', token: CENSOR }]);
    const err = line.err as { message: string; stack: string; api_token: string };
    assert.equal(err.message, 'boom');
    assert.match(err.stack, /boom/);
    assert.equal(err.api_token, CENSOR);
    assert.equal(line.project_id, 'p1');
    assert.equal(line.module, 'mqtt-bridge');
  });
});
