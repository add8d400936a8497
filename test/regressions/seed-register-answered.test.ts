/**
 * Issue 10: an agent sending seed 002's registration verbatim (RFC 3339 start_time, node_version
 * object) was dropped with `PROTO_ERR_SCHEMA payload.start_time: expected integer, got string`
 * and nothing was sent back. On 7b3f64e both assertions below fail: the parse, and (for a
 * register the parser refuses) the project id and type the bridge now passes on so the status
 * module can answer with a reason.
 */
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import * as protocol from '../../modules/shared/protocol.js';
import { signMessage } from '../../modules/shared/signing.js';
import { REPO_ROOT } from '../helpers/process.js';

const register = JSON.parse(fs.readFileSync(path.join(REPO_ROOT, 'test/fixtures/seed/register.json'), 'utf8'));

function wire(payload: unknown): string {
  const base = {
    message_id: randomUUID(),
    type: 'command',
    project_id: 'plant-7',
    timestamp: Date.now(),
    version: '1.0',
    command_type: 'register',
    payload,
  };
  return JSON.stringify({ ...base, signature: signMessage(base, 'secret') });
}

test('the seed registration, verbatim, is accepted', () => {
  const r = protocol.parseUplink(protocol.TOPIC_COMMAND_UP, wire(register));
  assert.ok(r.ok, r.ok ? '' : r.reason);
});

test('a refused registration still names its project and type, so it can be answered', () => {
  const r = protocol.parseUplink(protocol.TOPIC_COMMAND_UP, wire({ ...register, start_time: 'yesterday' }));
  assert.equal(r.ok, false);
  const peek = (protocol as Record<string, unknown>).peekUplink as
    | ((t: string, raw: string) => { project_id?: string; type?: string })
    | undefined;
  assert.equal(typeof peek, 'function', 'protocol.peekUplink exists');
  assert.deepEqual(peek!(protocol.TOPIC_COMMAND_UP, wire({ ...register, start_time: 'yesterday' })), {
    project_id: 'plant-7',
    type: 'register',
  });
});
