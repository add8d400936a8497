import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { after, before, describe, test } from 'node:test';
import { HOST_TOPICS } from '../../../core/host-topics.js';
import { WEB, type WebInfo } from '../../../modules/web/contract/topics.js';
import { scaled, until } from '../../helpers/wait.js';
import { startWeb, WAIT_MS, type WebHarness } from './harness.js';

const API = '/api/exchange-hub';

describe('REST against fake domain modules', () => {
  let w: WebHarness;
  before(async () => {
    w = await startWeb({ web: { body_limit_bytes: 4096 } });
    w.domain.addProject('plant-1', 'online');
    w.domain.addProject('plant-off', 'offline');
  });
  after(() => w.stop());

  describe('command/send', () => {
    test('202 with the command view; the bus request carries exactly the caller’s fields', async () => {
      const r = await w.call('POST', `${API}/command/send`, {
        project_id: 'plant-1',
        command_type: 'noop',
        payload: { a: 1 },
        timeout_ms: 5000,
        operator_id: 'alice',
      });
      assert.equal(r.status, 202);
      assert.equal(r.json.project_id, 'plant-1');
      assert.equal(r.json.status, 'pending');
      assert.match(r.json.command_id, /^[0-9a-f-]{36}$/);
      assert.deepEqual(w.domain.sends.at(-1), {
        project_id: 'plant-1',
        command_type: 'noop',
        payload: { a: 1 },
        timeout_ms: 5000,
        operator_id: 'alice',
      });
    });

    test('unknown fields are refused: no mass assignment of status, signature or command_id', async () => {
      const before = w.domain.sends.length;
      for (const field of ['status', 'signature', 'command_id', 'is_sync']) {
        const r = await w.call('POST', `${API}/command/send`, {
          project_id: 'plant-1',
          command_type: 'noop',
          [field]: field === 'is_sync' ? true : 'x',
        });
        assert.equal(r.status, 400, field);
        assert.equal(r.json.error.code, 'CMD_ERR_INVALID');
        assert.equal(r.json.error.field, field);
        assert.match(r.json.error.message, new RegExp(`^${field}: unknown field`));
      }
      assert.equal(w.domain.sends.length, before, 'nothing reached the command module');
    });

    test('bad project ids are refused before anything: / + # NUL, too long, empty, $-prefixed', async () => {
      const before = w.domain.sends.length;
      for (const id of ['a/b', 'a+b', 'a#b', 'a\u0000b', 'x'.repeat(129), 'é'.repeat(65), '', '$SYS', 42]) {
        const r = await w.call('POST', `${API}/command/send`, { project_id: id, command_type: 'noop' });
        assert.equal(r.status, 400, JSON.stringify(id));
        assert.equal(r.json.error.field, 'project_id');
        assert.equal(r.json.error.code, 'CMD_ERR_INVALID');
      }
      assert.equal(w.domain.sends.length, before);
    });

    test('400 names the field: missing command_type, bad timeout, bad policy', async () => {
      const cases: Array<[Record<string, unknown>, string]> = [
        [{ project_id: 'plant-1' }, 'command_type'],
        [{ project_id: 'plant-1', command_type: 'BAD TYPE' }, 'command_type'],
        [{ project_id: 'plant-1', command_type: 'x', timeout_ms: -1 }, 'timeout_ms'],
        [{ project_id: 'plant-1', command_type: 'x', timeout_ms: 1.5 }, 'timeout_ms'],
        [{ project_id: 'plant-1', command_type: 'x', offline_policy: 'later' }, 'offline_policy'],
        [{ project_id: 'plant-1', command_type: 'x', operator_id: 7 }, 'operator_id'],
      ];
      for (const [body, field] of cases) {
        const r = await w.call('POST', `${API}/command/send`, body);
        assert.equal(r.status, 400, JSON.stringify(body));
        assert.equal(r.json.error.field, field);
      }
    });

    test('malformed JSON, a non-object body and a non-JSON content type', async () => {
      let r = await w.call('POST', `${API}/command/send`, '{"project_id": ');
      assert.equal(r.status, 400);
      assert.equal(r.json.error.code, 'WEB_ERR_INVALID');
      assert.equal(r.json.error.field, '(body)');
      r = await w.call('POST', `${API}/command/send`, '[1,2]');
      assert.equal(r.status, 400);
      assert.equal(r.json.error.field, '(body)');
      r = await w.call('POST', `${API}/command/send`, '{"__proto__": {"x": 1}}');
      assert.equal(r.status, 400);
      r = await w.call('POST', `${API}/command/send`, 'project_id=plant-1', {
        headers: { 'content-type': 'text/plain' },
      });
      assert.equal(r.status, 415);
      assert.equal(r.json.error.code, 'WEB_ERR_MEDIA_TYPE');
    });

    test('413 for a body over body_limit_bytes', async () => {
      const r = await w.call('POST', `${API}/command/send`, {
        project_id: 'plant-1',
        command_type: 'noop',
        payload: 'x'.repeat(5000),
      });
      assert.equal(r.status, 413);
      assert.equal(r.json.error.code, 'WEB_ERR_BODY_TOO_LARGE');
    });

    test('404 unknown project, 409 offline project (queue policy passes)', async () => {
      let r = await w.call('POST', `${API}/command/send`, { project_id: 'nobody', command_type: 'noop' });
      assert.equal(r.status, 404);
      assert.equal(r.json.error.code, 'CMD_ERR_UNKNOWN_PROJECT');
      r = await w.call('POST', `${API}/command/send`, { project_id: 'plant-off', command_type: 'noop' });
      assert.equal(r.status, 409);
      assert.equal(r.json.error.code, 'CMD_ERR_PROJECT_OFFLINE');
      r = await w.call('POST', `${API}/command/send`, {
        project_id: 'plant-off',
        command_type: 'noop',
        offline_policy: 'queue',
        queue_ttl_ms: 60_000,
      });
      assert.equal(r.status, 202);
    });
  });

  describe('command/sync', () => {
    test('200 with the result once the command module reports it', async () => {
      const r = await w.call('POST', `${API}/command/sync`, {
        project_id: 'plant-1',
        command_type: 'echo',
        payload: { hello: 'world' },
        wait_ms: 5000,
      });
      assert.equal(r.status, 200);
      assert.equal(r.json.status, 'completed');
      assert.equal(r.json.result.output, '{"hello":"world"}');
      assert.equal(r.json.is_sync, true);
      assert.ok(r.json.timings);
      // the waiter chose the id before the send
      assert.equal(w.domain.sends.at(-1)?.command_id, r.json.command_id);
    });

    test('504 when the wait runs out, with the command id and its current state', async () => {
      const r = await w.call('POST', `${API}/command/sync`, {
        project_id: 'plant-1',
        command_type: 'hang',
        wait_ms: 300,
      });
      assert.equal(r.status, 504);
      assert.equal(r.json.error.code, 'CMD_ERR_TIMEOUT');
      assert.match(r.json.command_id, /^[0-9a-f-]{36}$/);
      assert.equal(r.json.command.command_id, r.json.command_id);
      assert.equal(r.json.command.status, 'sent');
      assert.match(r.json.error.message, new RegExp(r.json.command_id));
      // and it can be followed by id; a late result lands on the record
      w.domain.complete(r.json.command_id, 'late');
      const g = await w.call('GET', `${API}/command/${r.json.command_id}`);
      assert.equal(g.status, 200);
      assert.equal(g.json.result.output, 'late');
    });

    test('a caller that goes away ends its wait', async () => {
      const ac = new AbortController();
      const gone = fetch(`${w.base}${API}/command/sync`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ project_id: 'plant-1', command_type: 'hang', wait_ms: 60_000 }),
        signal: ac.signal,
      }).catch((err: Error) => err);
      const waiting = async () => /hub_sync_waiting 1/.test((await w.call('GET', '/metrics')).text);
      await until(waiting, WAIT_MS, 'the sync call to wait');
      ac.abort();
      assert.equal(((await gone) as Error).name, 'AbortError');
      await until(
        async () => /hub_sync_waiting 0/.test((await w.call('GET', '/metrics')).text),
        WAIT_MS,
        'the wait to end',
      );
    });

    test('wait_ms over sync_wait_ms_max is refused; errors of the send come through', async () => {
      let r = await w.call('POST', `${API}/command/sync`, {
        project_id: 'plant-1',
        command_type: 'x',
        wait_ms: 300_001,
      });
      assert.equal(r.status, 400);
      assert.equal(r.json.error.field, 'wait_ms');
      r = await w.call('POST', `${API}/command/sync`, { project_id: 'plant-off', command_type: 'echo' });
      assert.equal(r.status, 409);
      assert.equal(r.json.error.code, 'CMD_ERR_PROJECT_OFFLINE');
    });

    test('a result after the command module restarted still wakes the waiter', async () => {
      const pending = w.call('POST', `${API}/command/sync`, {
        project_id: 'plant-1',
        command_type: 'later',
        wait_ms: 10_000,
      });
      // wait until the send reached the fake command module, then restart it, then finish the command
      const deadline = Date.now() + scaled(5000);
      while (!w.domain.sends.some((s) => s.command_type === 'later') && Date.now() < deadline) {
        await new Promise((r) => setTimeout(r, 5));
      }
      const id = w.domain.sends.find((s) => s.command_type === 'later')!.command_id!;
      await w.h.host.restartModule('fake');
      w.domain.complete(id, 'after restart');
      const r = await pending;
      assert.equal(r.status, 200);
      assert.equal(r.json.result.output, 'after restart');
    });
  });

  describe('reads and lifecycle calls', () => {
    test('GET command/:id: detail, 400 for a non-UUID, 404 for an unknown one', async () => {
      const sent = await w.call('POST', `${API}/command/send`, { project_id: 'plant-1', command_type: 'noop' });
      let r = await w.call('GET', `${API}/command/${sent.json.command_id}`);
      assert.equal(r.status, 200);
      assert.equal(r.json.command_id, sent.json.command_id);
      assert.ok('timings' in r.json && 'result' in r.json);
      r = await w.call('GET', `${API}/command/not-a-uuid`);
      assert.equal(r.status, 400);
      assert.equal(r.json.error.field, 'command_id');
      r = await w.call('GET', `${API}/command/${randomUUID()}`);
      assert.equal(r.status, 404);
      assert.equal(r.json.error.code, 'CMD_ERR_NOT_FOUND');
    });

    test('cancel: 200 while pending, 409 once delivered', async () => {
      const sent = await w.call('POST', `${API}/command/send`, { project_id: 'plant-1', command_type: 'noop' });
      let r = await w.call('POST', `${API}/command/${sent.json.command_id}/cancel`);
      assert.equal(r.status, 200);
      assert.equal(r.json.status, 'cancelled');
      r = await w.call('POST', `${API}/command/${sent.json.command_id}/cancel`, {});
      assert.equal(r.status, 409);
      assert.equal(r.json.error.code, 'CMD_ERR_NOT_CANCELLABLE');
    });

    test('GET commands with filters; a bad status list is a 400 naming status', async () => {
      let r = await w.call('GET', `${API}/commands?project_id=plant-1&status=completed,failed&limit=10`);
      assert.equal(r.status, 200);
      assert.ok(r.json.items.length > 0);
      assert.ok(r.json.items.every((c: { status: string }) => ['completed', 'failed'].includes(c.status)));
      r = await w.call('GET', `${API}/commands?status=done`);
      assert.equal(r.status, 400);
      assert.equal(r.json.error.field, 'status');
      r = await w.call('GET', `${API}/commands?limit=0`);
      assert.equal(r.status, 400);
      assert.equal(r.json.error.field, 'limit');
      r = await w.call('GET', `${API}/commands?colour=blue`);
      assert.equal(r.status, 400);
      assert.equal(r.json.error.field, 'colour');
    });

    test('dead commands: list and replay', async () => {
      const sent = await w.call('POST', `${API}/command/send`, { project_id: 'plant-1', command_type: 'noop' });
      w.domain.dead.add(sent.json.command_id);
      let r = await w.call('GET', `${API}/commands/dead`);
      assert.equal(r.status, 200);
      assert.deepEqual(
        r.json.items.map((c: { command_id: string }) => c.command_id),
        [sent.json.command_id],
      );
      r = await w.call('POST', `${API}/commands/dead/${sent.json.command_id}/replay`);
      assert.equal(r.status, 200);
      r = await w.call('POST', `${API}/commands/dead/${sent.json.command_id}/replay`);
      assert.equal(r.status, 404);
    });

    test('project status, online list, 400 for bad ids in the path, 404 for unknown', async () => {
      let r = await w.call('GET', `${API}/project/plant-1/status`);
      assert.equal(r.status, 200);
      assert.equal(r.json.state, 'online');
      r = await w.call('GET', `${API}/projects/online`);
      assert.deepEqual(
        r.json.items.map((p: { project_id: string }) => p.project_id),
        ['plant-1'],
      );
      for (const bad of ['a%2Fb', 'a%2Bb', 'a%23b', 'a%00b', 'x'.repeat(129)]) {
        r = await w.call('GET', `${API}/project/${bad}/status`);
        assert.equal(r.status, 400, bad);
        assert.equal(r.json.error.field, 'project_id');
        assert.equal(r.json.error.code, 'STATUS_ERR_INVALID');
      }
      r = await w.call('GET', `${API}/project/ghost/status`);
      assert.equal(r.status, 404);
      assert.equal(r.json.error.code, 'STATUS_ERR_NOT_FOUND');
    });

    test('provisioning: 201 with the secret once, 409 on a taken id, list, disable, enable, rotate', async () => {
      let r = await w.call('POST', `${API}/projects`, { project_id: 'site-9', name: 'Site 9' });
      assert.equal(r.status, 201);
      assert.equal(r.json.project_id, 'site-9');
      assert.equal(r.json.secret.length, 64);
      r = await w.call('POST', `${API}/projects`, { project_id: 'site-9' });
      assert.equal(r.status, 409);
      assert.equal(r.json.error.code, 'STATUS_ERR_EXISTS');
      r = await w.call('POST', `${API}/projects`, { project_id: 'a/b' });
      assert.equal(r.status, 400);
      assert.equal(r.json.error.field, 'project_id');
      r = await w.call('POST', `${API}/projects`);
      assert.equal(r.status, 201, 'no body: a random id');
      r = await w.call('GET', `${API}/projects?limit=2&offset=0`);
      assert.equal(r.status, 200);
      assert.equal(r.json.items.length, 2);
      assert.ok(r.json.total >= 4);
      r = await w.call('POST', `${API}/projects/site-9/disable`);
      assert.equal(r.json.enabled, false);
      r = await w.call('GET', `${API}/projects?include_disabled=false&limit=1000`);
      assert.ok(!r.json.items.some((p: { project_id: string }) => p.project_id === 'site-9'));
      r = await w.call('POST', `${API}/projects/site-9/enable`, {});
      assert.equal(r.json.enabled, true);
      r = await w.call('POST', `${API}/projects/site-9/rotate`, { overlap_s: 60 });
      assert.equal(r.status, 200);
      assert.equal(r.json.secret, 'r'.repeat(64));
      r = await w.call('POST', `${API}/projects/site-9/rotate`, { overlap_s: -1 });
      assert.equal(r.status, 400);
      assert.equal(r.json.error.field, 'overlap_s');
      r = await w.call('POST', `${API}/projects/ghost/disable`);
      assert.equal(r.status, 404);
    });

    test('modules: list and restart; unknown module is 404', async () => {
      let r = await w.call('GET', `${API}/modules`);
      assert.equal(r.status, 200);
      const names = r.json.items.map((m: { name: string }) => m.name);
      assert.ok(names.includes('web') && names.includes('fake'));
      const before = r.json.items.find((m: { name: string }) => m.name === 'fake').restarts;
      r = await w.call('POST', `${API}/modules/fake/restart`);
      assert.equal(r.status, 200);
      assert.equal(r.json.name, 'fake');
      assert.equal(r.json.state, 'running');
      assert.equal(r.json.restarts, before + 1);
      r = await w.call('POST', `${API}/modules/nope/restart`);
      assert.equal(r.status, 404);
      assert.equal(r.json.error.code, 'HOST_ERR_UNKNOWN_MODULE');
      r = await w.call('POST', `${API}/modules/BAD!/restart`);
      assert.equal(r.status, 400);
    });

    test('restarting the web module through its own API answers 202 first, then restarts', async () => {
      const r = await w.call('POST', `${API}/modules/web/restart`);
      assert.equal(r.status, 202);
      assert.deepEqual(r.json, { name: 'web', state: 'restarting' });
      let info = w.info;
      await until(
        async () => {
          info = await w.h.host.bus.request<WebInfo>(WEB.info('web'), {}).catch(() => info);
          return info.url !== w.info.url;
        },
        WAIT_MS,
        'the web module to come back on a new port',
      );
      // the rest of this suite talks to the new instance
      w.base = info.url;
      w.info = info;
      const again = await w.call('GET', '/healthz');
      assert.equal(again.status, 200);
    });

    test('unknown routes are JSON 404s; healthz is open', async () => {
      let r = await w.call('GET', `${API}/nope`);
      assert.equal(r.status, 404);
      assert.equal(r.json.error.code, 'WEB_ERR_NOT_FOUND');
      r = await w.call('DELETE', `${API}/commands`);
      assert.equal(r.status, 404);
      r = await w.call('GET', '/healthz');
      assert.deepEqual(r.json, { ok: true });
    });
  });
});

describe('errors from missing modules', () => {
  test('503 when no module answers the topic', async () => {
    const w = await startWeb({ fake: { answer_command: false, answer_status: false } });
    try {
      let r = await w.call('POST', `${API}/command/send`, { project_id: 'p', command_type: 'noop' });
      assert.equal(r.status, 503);
      assert.equal(r.json.error.code, 'BUS_ERR_NO_RESPONDER');
      r = await w.call('GET', `${API}/projects/online`);
      assert.equal(r.status, 503);
    } finally {
      await w.stop();
    }
  });

  test('an error without a hub code is a 500 that says nothing of its internals', async () => {
    const w = await startWeb({ fake: { answer_status: false } });
    try {
      w.h.host.bus.mailbox('thrower').subscribe('status/online/list', () => {
        throw Object.assign(new Error('relation "project" does not exist at /srv/secret/path'), { code: '42P01' });
      });
      const r = await w.call('GET', `${API}/projects/online`);
      assert.equal(r.status, 500);
      assert.deepEqual(r.json, { error: { code: 'WEB_ERR_INTERNAL', message: 'internal error' } });
    } finally {
      await w.stop();
    }
  });
});

describe('stopping', () => {
  test('after host/stopping new requests get 503 HOST_ERR_STOPPING and sync waits end with the command id', async () => {
    const w = await startWeb();
    try {
      w.domain.addProject('p1', 'online');
      const waiting = w.call('POST', `${API}/command/sync`, {
        project_id: 'p1',
        command_type: 'hang',
        wait_ms: 60_000,
      });
      const deadline = Date.now() + scaled(5000);
      while (!w.domain.sends.length && Date.now() < deadline) await new Promise((r) => setTimeout(r, 5));
      await w.h.host.bus.publish(HOST_TOPICS.stopping, {});
      const r = await waiting;
      assert.equal(r.status, 503);
      assert.equal(r.json.error.code, 'HOST_ERR_STOPPING');
      assert.equal(r.json.command_id, w.domain.sends[0].command_id);
      const again = await w.call('GET', '/healthz');
      assert.equal(again.status, 503);
      assert.equal(again.json.error.code, 'HOST_ERR_STOPPING');
    } finally {
      await w.stop();
    }
  });
});
