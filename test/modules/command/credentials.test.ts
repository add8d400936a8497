/**
 * The command module's credentials cache (modules/command/credentials.ts) over a real bus, with
 * a status stand-in the test answers by hand: sends that miss at the same moment share one
 * request, and an answer asked for before the project changed is used by its send but never
 * kept (status answers several requests at once, so it can arrive after the change's event).
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { Bus, scopedBus } from '../../../core/bus.js';
import { silentLogger } from '../../../core/log.js';
import { CredentialsCache } from '../../../modules/command/credentials.js';
import { type ProjectCredentials, STATUS } from '../../../modules/status/contract/topics.js';
import { deferred, until } from '../../helpers/wait.js';

const TTL_MS = 60_000;

function creds(projectId: string, secret: string): ProjectCredentials {
  return { project_id: projectId, enabled: true, state: 'online', secrets: [secret] };
}

/** A bus whose `status` answers STATUS.credentials when the test says, several at once. */
function setup() {
  const bus = new Bus(silentLogger());
  const asked: { project_id: string; answer(c: ProjectCredentials): void }[] = [];
  bus.mailbox('status').subscribe(
    STATUS.credentials,
    (body) => {
      const d = deferred<ProjectCredentials>();
      asked.push({ project_id: (body as { project_id: string }).project_id, answer: d.resolve });
      return d.promise;
    },
    { concurrency: 64 },
  );
  const commandBus = scopedBus(bus, bus.mailbox('command'), () => {});
  const cache = new CredentialsCache(commandBus, { now: Date.now }, TTL_MS);
  return { asked, cache };
}

describe('command credentials cache', () => {
  test('sends that miss together share one request, and the answer is kept for the next ones', async () => {
    const { asked, cache } = setup();
    const sends = Array.from({ length: 50 }, () => cache.get('p1'));
    const other = cache.get('p2');
    await until(() => asked.length === 2, 5_000, 'both requests at status');
    // give any extra request time to reach status
    await new Promise((r) => setTimeout(r, 50));
    assert.deepEqual(asked.map((a) => a.project_id).sort(), ['p1', 'p2'], 'one request per project');
    asked[0].answer(creds(asked[0].project_id, `s-${asked[0].project_id}`));
    asked[1].answer(creds(asked[1].project_id, `s-${asked[1].project_id}`));
    const got = await Promise.all(sends);
    assert.ok(got.every((c) => c.secrets[0] === 's-p1'));
    assert.equal((await other).secrets[0], 's-p2');
    assert.equal((await cache.get('p1')).secrets[0], 's-p1');
    assert.equal(asked.length, 2, 'answered from memory afterwards');
  });

  test('an answer asked for before a forget serves its sends but is not kept; later sends ask anew', async () => {
    const { asked, cache } = setup();
    const early = cache.get('p1');
    await until(() => asked.length === 1, 5_000, 'the first request at status');
    // the project changes (a rotation's event) while status is still answering
    cache.forget('p1');
    const late = cache.get('p1');
    await until(() => asked.length === 2, 5_000, 'the second request at status');
    asked[1].answer(creds('p1', 'new'));
    asked[0].answer(creds('p1', 'old')); // the stale answer arrives last
    assert.equal((await early).secrets[0], 'old', 'its own send uses what it asked for');
    assert.equal((await late).secrets[0], 'new');
    assert.equal((await cache.get('p1')).secrets[0], 'new', 'the stale answer did not replace the new one');
    assert.equal(asked.length, 2);
  });

  test('a failed request fails the sends that shared it, and is not kept', async () => {
    const bus = new Bus(silentLogger());
    let calls = 0;
    bus.mailbox('status').subscribe(STATUS.credentials, () => {
      calls++;
      if (calls === 1) throw Object.assign(new Error('database unreachable'), { code: 'DB_ERR_UNAVAILABLE' });
      return creds('p1', 'back');
    });
    const cache = new CredentialsCache(
      scopedBus(bus, bus.mailbox('command'), () => {}),
      { now: Date.now },
      TTL_MS,
    );
    const failed = await Promise.allSettled([cache.get('p1'), cache.get('p1'), cache.get('p1')]);
    assert.deepEqual(
      failed.map((r) => r.status),
      ['rejected', 'rejected', 'rejected'],
    );
    assert.equal(calls, 1);
    assert.equal((await cache.get('p1')).secrets[0], 'back');
    assert.equal(calls, 2);
  });
});
