/**
 * The permission table, project patterns (the same meaning in memory and in SQL LIKE) and the
 * token gate's in-place swap: what a role grants, what a `projects` limit lets through, and what
 * an admitted principal becomes after a token edit.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { z } from 'zod';
import { errorCode } from '../../../../core/errors.js';
import {
  assertDeclared,
  grants,
  requireAction,
  requireProject,
  requireWholeHub,
  seesProject,
} from '../../../../modules/shared/interface-kit/permissions.js';
import {
  interfaceSettings,
  type TokenSettings,
  tokenEntries,
  tokenOnlyEdit,
} from '../../../../modules/shared/interface-kit/settings.js';
import { TokenGate } from '../../../../modules/shared/interface-kit/token-gate.js';
import { likeCondition, ProjectScope, toLike } from '../../../../modules/shared/project-scope.js';

const tokensSchema = z.object({ tokens: interfaceSettings.tokens, token: interfaceSettings.token }).strict();

describe('permissions: roles grant actions', () => {
  test('viewer reads; operator reads and operates; admin does everything; public needs nothing', () => {
    const table = {
      viewer: { public: true, read: true, operate: false, admin: false },
      operator: { public: true, read: true, operate: true, admin: false },
      admin: { public: true, read: true, operate: true, admin: true },
    } as const;
    for (const [role, row] of Object.entries(table)) {
      for (const [access, expected] of Object.entries(row)) {
        assert.equal(grants(role as 'viewer', access as 'read'), expected, `${role} ${access}`);
      }
    }
  });

  test('a refusal is AUTH_ERR_FORBIDDEN naming the token id and role, never the token', () => {
    const who = { token_id: 'tokens[1]', role: 'viewer' as const, projects: null };
    assert.throws(
      () => requireAction(who, 'operate', 'POST /api/exchange-hub/command/send'),
      (err: Error) => {
        assert.equal(errorCode(err), 'AUTH_ERR_FORBIDDEN');
        assert.match(err.message, /tokens\[1\] \(role viewer\).*operate/);
        return true;
      },
    );
    requireAction(who, 'read', 'GET /x'); // no throw
  });

  test('projects limit what a token sees; whole-hub operations refuse a limited token', () => {
    const limited = { token_id: 't', role: 'admin' as const, projects: new ProjectScope(['site-*', 'hq', 'r?']) };
    for (const ok of ['site-1', 'site-', 'hq', 'r1']) assert.equal(seesProject(limited, ok), true, ok);
    for (const no of ['hq2', 'xsite-1', 'r12', 'r', 'HQ']) assert.equal(seesProject(limited, no), false, no);
    assert.throws(() => requireProject(limited, 'other'), /may not access project other/);
    assert.throws(() => requireWholeHub(limited, 'restart a module'), /limited to projects/);
    const all = { token_id: 'a', role: 'admin' as const, projects: null };
    requireProject(all, 'anything');
    requireWholeHub(all, 'restart a module');
  });

  test('an operation without a declaration is refused at start, naming it', () => {
    const declared = new Map([['A', 'read']]);
    assert.throws(
      () => assertDeclared('test', ['A', 'B', 'C'], (m) => declared.get(m)),
      (err: Error) => errorCode(err) === 'AUTH_ERR_UNDECLARED' && /B, C/.test(err.message),
    );
    assert.throws(() => assertDeclared('test', ['A'], () => 'token'), /A/, 'not one of the actions');
    assertDeclared('test', ['A'], (m) => declared.get(m));
  });
});

describe('project patterns: one meaning in memory and in SQL LIKE', () => {
  test('globs become anchored LIKE patterns; LIKE metacharacters of the id are escaped', () => {
    assert.equal(toLike('site-*'), 'site-%');
    assert.equal(toLike('a?c'), 'a_c');
    assert.equal(toLike('50%_off\\x'), '50\\%\\_off\\\\x');
    assert.deepEqual(likeCondition('project_id', null), null);
    assert.deepEqual(likeCondition('project_id', []), { sql: 'FALSE', args: [] });
    assert.deepEqual(likeCondition('p', ['a', 'b*']), {
      sql: "(p LIKE ? ESCAPE '\\' OR p LIKE ? ESCAPE '\\')",
      args: ['a', 'b%'],
    });
  });

  test('regex metacharacters in an id are literal in memory too', () => {
    const s = new ProjectScope(['a.b', 'c+(d)', 'e[f]*']);
    assert.equal(s.allows('a.b'), true);
    assert.equal(s.allows('axb'), false);
    assert.equal(s.allows('c+(d)'), true);
    assert.equal(s.allows('e[f]-1'), true);
    assert.equal(s.allows('ef-1'), false);
  });
});

describe('token settings: roles and projects', () => {
  test('plain strings and `token` are admin on every project; entries keep their role and projects', () => {
    const cfg = tokensSchema.parse({
      tokens: ['plain', { token: 'v', role: 'viewer' }, { token: 'o', role: 'operator', projects: ['site-*'] }],
      token: 'env',
    });
    assert.deepEqual(tokenEntries(cfg), [
      { id: 'tokens[0]', token: 'plain', role: 'admin', projects: null },
      { id: 'tokens[1]', token: 'v', role: 'viewer', projects: null },
      { id: 'tokens[2]', token: 'o', role: 'operator', projects: ['site-*'] },
      { id: 'token', token: 'env', role: 'admin', projects: null },
    ]);
  });

  test('bad entries are refused at load, naming the key', () => {
    for (const bad of [
      { token: 'x', role: 'root' },
      { token: 'x' },
      { token: '', role: 'viewer' },
      { token: 'x', role: 'viewer', projects: [] },
      { token: 'x', role: 'viewer', projects: ['a/b'] },
      { token: 'x', role: 'viewer', extra: 1 },
    ]) {
      const r = tokensSchema.safeParse({ tokens: [bad] });
      assert.equal(r.success, false, JSON.stringify(bad));
    }
  });

  test('an edit of the tokens only is taken in place; anything else, or turning tokens on/off, is not', () => {
    const base: TokenSettings & { port: number } = { tokens: ['a'], token: '', port: 1 };
    assert.deepEqual(tokenOnlyEdit(base, { ...base, tokens: [{ token: 'a', role: 'viewer' as const }] }, true), [
      { id: 'tokens[0]', token: 'a', role: 'viewer', projects: null },
    ]);
    assert.equal(tokenOnlyEdit(base, { ...base, port: 2 }, true), null);
    assert.equal(tokenOnlyEdit(base, { ...base, tokens: [] }, true), null);
  });
});

describe('token gate: in-place swap', () => {
  test('recheck: same grant keeps the principal, a changed one gives the new, a removed token null', () => {
    const gate = new TokenGate(
      tokenEntries({ tokens: ['keep', { token: 'demote', role: 'operator' }, { token: 'drop', role: 'viewer' }] }),
    );
    const keep = gate.authenticate('keep')!;
    const demote = gate.authenticate('demote')!;
    const drop = gate.authenticate('drop')!;
    let changes = 0;
    gate.onChange(() => changes++);
    gate.replace(tokenEntries({ tokens: ['keep', { token: 'demote', role: 'viewer', projects: ['p*'] }] }));
    assert.equal(changes, 1);
    assert.equal(gate.recheck(keep), keep);
    const now = gate.recheck(demote)!;
    assert.equal(now.role, 'viewer');
    assert.deepEqual(now.projects?.patterns, ['p*']);
    assert.equal(gate.recheck(drop), null);
    assert.equal(gate.authenticate('drop'), null);
    assert.throws(() => gate.replace([]), /on or off/);
  });
});
