/**
 * Scheduled sends through real processes on both backends (issue 14 item 2): a hub process, an
 * agent process, REST and the WebSocket feed. A command sent with schedule_at is `scheduled`
 * (listed by GET /commands?status=scheduled, announced on the feed), reaches the agent only at
 * its time and completes with its timeout counted from then; one cancelled before its time never
 * reaches the agent; one accepted before a hub restart whose time passes while the hub is down
 * runs once after it; refusals are 400 CMD_ERR_INVALID (field schedule_at), counted on /metrics,
 * storing nothing.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import WebSocket from 'ws';
import { scaled, until } from '../helpers/wait.js';
import { type Agent, API, BACKEND_TITLE, BACKENDS, Hub, type Json, type Provisioned } from './harness.js';

const inMs = (ms: number) => new Date(Date.now() + ms).toISOString();
/** Far enough ahead that the checks right after a send come before the start on a busy machine. */
const AHEAD_MS = scaled(3_000);

/** Every event of the hub's WebSocket feed, per command. */
class Feed {
  readonly byCommand = new Map<string, Json[]>();
  private constructor(readonly ws: WebSocket) {}

  static async open(hub: Hub): Promise<Feed> {
    const ws = new WebSocket(`${hub.base.replace('http', 'ws')}${API}/ws`);
    await new Promise((resolve, reject) => {
      ws.once('open', resolve);
      ws.once('error', reject);
    });
    const f = new Feed(ws);
    const subscribed = new Promise<void>((resolve) => {
      ws.on('message', (raw) => {
        const m = JSON.parse(raw.toString()) as Json;
        if (m.op === 'subscribed') resolve();
        if (m.op !== 'event' || !m.command_id) return;
        const list = f.byCommand.get(m.command_id) ?? [];
        list.push(m);
        f.byCommand.set(m.command_id, list);
      });
    });
    ws.send(JSON.stringify({ op: 'subscribe', all: true }));
    await subscribed;
    return f;
  }

  states(id: string): string[] {
    return (this.byCommand.get(id) ?? []).filter((e) => e.type === 'command.state').map((e) => e.data.status);
  }
}

for (const backend of BACKENDS) {
  describe(`scheduled sends (${BACKEND_TITLE[backend]})`, () => {
    let hub: Hub;
    let project: Provisioned;
    let agent: Agent;
    let feed: Feed;

    before(async () => {
      hub = await Hub.create(backend);
      await hub.start();
      project = await hub.provision('sched');
      agent = hub.newAgent(project);
      await agent.start();
      await hub.waitState(project.project_id, 'online');
      feed = await Feed.open(hub);
    });

    after(async () => {
      feed?.ws.close();
      await agent?.dispose();
      await hub?.dispose();
    });

    const pid = () => project.project_id;
    /** The agent's 'command accepted' lines for one command (a duplicate delivery logs another message). */
    const received = (id: string) => agent.logs('command accepted', id);

    test('scheduled, listed and announced; the agent gets it at its time; timeout from the start', async () => {
      const at = inMs(AHEAD_MS);
      const sent = await hub.api('POST', '/command/send', {
        project_id: pid(),
        command_type: 'echo',
        payload: { text: 'later' },
        schedule_at: at,
        // shorter than the wait for the start: counted from the acceptance it would have run out
        timeout_ms: 2_000,
      });
      assert.equal(sent.status, 202, JSON.stringify(sent.json));
      assert.equal(sent.json.status, 'scheduled');
      assert.equal(sent.json.schedule_at, at);
      const id: string = sent.json.command_id;
      const listed = await hub.api('GET', `/commands?status=scheduled&project_id=${pid()}`);
      assert.equal(listed.status, 200);
      assert.deepEqual(
        listed.json.items.map((c: Json) => c.command_id),
        [id],
      );

      const done = await hub.waitCommand(id, (c) => c.status === 'completed', 30_000);
      assert.equal(JSON.parse(done.result.output).text, 'later');
      assert.ok(Date.parse(done.sent_at) >= Date.parse(at), `sent ${done.sent_at} before ${at}`);
      assert.ok(Date.parse(done.timeout_at) >= Date.parse(at) + 2_000, `timeout_at ${done.timeout_at}`);
      const got = received(id);
      assert.equal(got.length, 1, 'the agent received it once');
      assert.ok(Date.parse(String(got[0].time)) >= Date.parse(at), `the agent got it at ${got[0].time}, before ${at}`);
      await until(() => feed.states(id).includes('completed'), 10_000, 'the feed saw it complete');
      const states = feed.states(id);
      assert.equal(states[0], 'scheduled', states.join(' '));
      assert.ok(states.indexOf('pending') > 0 || states.indexOf('sent') > 0, states.join(' '));
    });

    test('cancelled before its time: the agent never gets it', async () => {
      const sent = await hub.api('POST', '/command/send', {
        project_id: pid(),
        command_type: 'echo',
        payload: { text: 'never' },
        schedule_at: inMs(AHEAD_MS),
      });
      assert.equal(sent.status, 202);
      const id: string = sent.json.command_id;
      const cancelled = await hub.api('POST', `/command/${id}/cancel`, {});
      assert.equal(cancelled.status, 200, JSON.stringify(cancelled.json));
      assert.equal(cancelled.json.status, 'cancelled');
      // a later one on the same project ran: the first one's time has passed on the scheduler
      const later = await hub.api('POST', '/command/send', {
        project_id: pid(),
        command_type: 'echo',
        payload: { text: 'after' },
        schedule_at: inMs(AHEAD_MS + 500),
      });
      await hub.waitCommand(later.json.command_id, (c) => c.status === 'completed', 30_000);
      assert.equal(received(id).length, 0, 'a cancelled scheduled command never reaches the agent');
      const d = (await hub.api('GET', `/command/${id}`)).json;
      assert.equal(d.status, 'cancelled');
      assert.equal(d.sent_at, null);
      assert.deepEqual(feed.states(id), ['scheduled', 'cancelled']);
    });

    test('a hub restart between acceptance and start: it runs once after the restart', async () => {
      const at = inMs(AHEAD_MS);
      const sent = await hub.api('POST', '/command/send', {
        project_id: pid(),
        command_type: 'echo',
        payload: { text: 'across a restart' },
        schedule_at: at,
        // On the embedded broker the agent is disconnected by the restart and the project is
        // offline until it registers again; offline_policy applies at the time, so `queue` lets
        // the command wait for that (with `fail` it would fail, as a send made then would).
        offline_policy: 'queue',
        queue_ttl_ms: scaled(60_000),
      });
      assert.equal(sent.status, 202);
      const id: string = sent.json.command_id;
      assert.equal((await hub.stop()).code, 0);
      // the hub is down when the time comes
      await until(() => Date.now() > Date.parse(at), AHEAD_MS * 2, 'the scheduled time passed');
      await hub.start();
      feed.ws.close();
      feed = await Feed.open(hub);
      await hub.waitBack(pid());
      const done = await hub.waitCommand(id, (c) => c.status === 'completed', 30_000);
      assert.equal(JSON.parse(done.result.output).text, 'across a restart');
      assert.equal(received(id).length, 1, 'run once');
    });

    test('refusals: 400 CMD_ERR_INVALID on schedule_at, counted, nothing stored', async () => {
      const series = 'hub_http_refusals_total{code="CMD_ERR_INVALID"}';
      const before = await hub.metric(series);
      const listBefore = (await hub.api('GET', `/commands?project_id=${pid()}&limit=1`)).json.total;
      const cases: Array<[string, string, Record<string, unknown>]> = [
        ['sync', '/command/sync', { schedule_at: inMs(60_000) }],
        ['no zone', '/command/send', { schedule_at: '2030-01-01T10:00:00' }],
        ['words', '/command/send', { schedule_at: 'next tuesday' }],
        ['too far ahead', '/command/send', { schedule_at: inMs(31 * 24 * 3600 * 1000) }],
      ];
      for (const [what, url, extra] of cases) {
        const r = await hub.api('POST', url, { project_id: pid(), command_type: 'echo', ...extra });
        assert.equal(r.status, 400, `${what}: ${JSON.stringify(r.json)}`);
        assert.equal(r.json.error.code, 'CMD_ERR_INVALID', what);
        assert.equal(r.json.error.field, 'schedule_at', `${what}: ${JSON.stringify(r.json)}`);
      }
      assert.equal((await hub.metric(series)) - before, cases.length);
      assert.equal((await hub.api('GET', `/commands?project_id=${pid()}&limit=1`)).json.total, listBefore);
    });

    test('a time already past starts at once', async () => {
      const r = await hub.api('POST', '/command/send', {
        project_id: pid(),
        command_type: 'echo',
        payload: { text: 'now' },
        schedule_at: '2001-01-01T00:00:00+02:00',
      });
      assert.equal(r.status, 202, JSON.stringify(r.json));
      assert.notEqual(r.json.status, 'scheduled');
      await hub.waitCommand(r.json.command_id, (c) => c.status === 'completed');
    });
  });
}
