import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { tokenEntries } from '../../../../modules/shared/interface-kit/settings.js';
import { bearerToken, TokenGate } from '../../../../modules/shared/interface-kit/token-gate.js';

describe('interface kit: token gate', () => {
  test('with tokens: the matching token is the principal (named by its place, never its text); others are refused', () => {
    const gate = new TokenGate(tokenEntries({ tokens: ['alpha', 'a-much-longer-token'], token: 'gamma' }));
    assert.equal(gate.enabled, true);
    assert.deepEqual(gate.admit('alpha'), { token_id: 'tokens[0]', role: 'admin', projects: null });
    assert.deepEqual(gate.admit('a-much-longer-token'), { token_id: 'tokens[1]', role: 'admin', projects: null });
    assert.deepEqual(gate.admit('gamma'), { token_id: 'token', role: 'admin', projects: null });
    for (const wrong of ['alph', 'alpha ', 'ALPHA', 'x'.repeat(5000), '', null, undefined]) {
      assert.equal(gate.admit(wrong), null, String(wrong));
    }
  });

  test('a public operation is admitted without a token, or with a wrong one', () => {
    const gate = new TokenGate(tokenEntries({ tokens: ['alpha'] }));
    assert.deepEqual(gate.admit(null, 'public'), { token_id: 'public', role: 'admin', projects: null });
    assert.deepEqual(gate.admit('wrong', 'public'), { token_id: 'public', role: 'admin', projects: null });
    assert.equal(gate.admit(null, 'read'), null);
  });

  test('without tokens every caller is admitted as loopback (the server then listens on loopback only)', () => {
    const gate = new TokenGate([]);
    assert.equal(gate.enabled, false);
    assert.deepEqual(gate.admit(null), { token_id: 'loopback', role: 'admin', projects: null });
    assert.deepEqual(gate.admit('anything'), { token_id: 'loopback', role: 'admin', projects: null });
  });

  test('bearerToken reads `Bearer <token>` (any case, surrounding blanks dropped) and nothing else', () => {
    assert.equal(bearerToken('Bearer abc'), 'abc');
    assert.equal(bearerToken('bearer   abc  '), 'abc');
    assert.equal(bearerToken('  BEARER abc'), 'abc');
    assert.equal(bearerToken('Bearer a b'), 'a b');
    for (const no of ['Basic YWJj', 'Bearer', 'Bearer   ', 'abc', '', undefined, null, 42, ['Bearer abc']]) {
      assert.equal(bearerToken(no), null, String(no));
    }
  });
});

describe('interface kit: tokens from the settings', () => {
  test('`tokens` plus a non-empty, trimmed `token`, each once; `token: ""` (HUB_API_TOKEN unset) is none', () => {
    assert.deepEqual(tokenEntries({ tokens: [] }), []);
    assert.deepEqual(tokenEntries({ tokens: [], token: '' }), []);
    assert.deepEqual(tokenEntries({ tokens: [], token: '   ' }), []);
    assert.deepEqual(tokenEntries({ tokens: ['a'], token: ' b ' }), [
      { id: 'tokens[0]', token: 'a', role: 'admin', projects: null },
      { id: 'token', token: 'b', role: 'admin', projects: null },
    ]);
    assert.deepEqual(tokenEntries({ tokens: ['a', 'a'], token: 'a' }), [
      { id: 'tokens[0]', token: 'a', role: 'admin', projects: null },
    ]);
  });
});
