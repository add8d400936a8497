/**
 * The operator CLI (`gmq-hub`, dist/bootstrap/cli.js) run as a child process against a real hub:
 * status, command, mqtt-bridge and web (with an API token) on PGlite and an aedes broker, and a
 * real agent module that joins with the secret `projects add` printed. Every wait is for a line
 * of output or an exit, with a bound.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import WebSocket from 'ws';
import { ProviderRegistry } from '../../core/registry.js';
import { provider as agentProvider } from '../../modules/agent/index.js';
import { provider as commandProvider } from '../../modules/command/index.js';
import { provider as bridgeProvider } from '../../modules/mqtt-bridge/index.js';
import { provider as statusProvider } from '../../modules/status/index.js';
import { WEB, type WebInfo } from '../../modules/web/contract/topics.js';
import { provider as webProvider } from '../../modules/web/index.js';
import { preparePgliteTemplate, tempPgliteConfig } from '../helpers/db.js';
import { startHost, type TestHost } from '../helpers/host.js';
import { startTestBroker, type TestBroker } from '../helpers/mqtt.js';
import { freePort, MAIN, writeTempConfig } from '../helpers/process.js';
import { withTimeout } from '../helpers/wait.js';
import { CliProcess, type CliResult, runCli, runScript, TcpProxy } from './cli-harness.js';

const TOKEN = 'cli-test-token';
const T = 20_000;
const UUID = /[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}/;

// biome-ignore lint/suspicious/noExplicitAny: JSON printed by the CLI, read field by field
type Json = any;

const oneLine = (r: CliResult) => {
  assert.equal(r.stderr.trimEnd().split('\n').length, 1, `one line on stderr, got:\n${r.stderr}`);
  return r.stderr.trimEnd();
};

/** Runs `fn` over `items`, two at a time (the machine has two cores; each run is a node process). */
async function eachLimited<T>(items: readonly T[], fn: (item: T) => Promise<void>, limit = 2): Promise<void> {
  let next = 0;
  const worker = async () => {
    while (next < items.length) await fn(items[next++]);
  };
  await Promise.all(Array.from({ length: limit }, worker));
}

describe('gmq-hub CLI against a real hub (PGlite, aedes, a real agent)', () => {
  let broker: TestBroker;
  let th: TestHost;
  let base: string;
  let cleanup: () => void;
  let queueDir: string;
  let hubYaml: string;
  let env: NodeJS.ProcessEnv;
  let plantSecret: string;
  const cli = (args: string[], extra: NodeJS.ProcessEnv = {}) => runCli(args, { ...env, ...extra });
  const json = async (args: string[]): Promise<Json> => {
    const r = await cli([...args, '--json']);
    assert.equal(r.code, 0, `gmq-hub ${args.join(' ')} --json: ${r.stderr}`);
    return JSON.parse(r.stdout);
  };

  before(async () => {
    await preparePgliteTemplate();
    const db = tempPgliteConfig();
    cleanup = db.cleanup;
    queueDir = fs.mkdtempSync(path.join(os.tmpdir(), 'gmq-cli-'));
    broker = await startTestBroker();
    hubYaml = [
      'databases:',
      `  default: { driver: pglite, data_dir: ${JSON.stringify(db.config.data_dir)} }`,
      'modules:',
      '  status: {}',
      '  command: {}',
      `  mqtt-bridge: { url: ${JSON.stringify(broker.url)}, username: hub, password: hub }`,
      // a fixed (free) port, so that a restarted web module comes back where the CLI looks
      `  web: { port: ${await freePort()}, host: 127.0.0.1, tokens: [${TOKEN}] }`,
    ].join('\n');
    const registry = new ProviderRegistry()
      .register(statusProvider)
      .register(commandProvider)
      .register(bridgeProvider)
      .register(webProvider)
      .register(agentProvider);
    th = await startHost(hubYaml, registry);
    base = (await th.host.bus.request<WebInfo>(WEB.info('web'), {})).url;
    env = { HUB_URL: base, HUB_API_TOKEN: TOKEN };
  });

  after(async () => {
    await th?.stop();
    await broker?.close();
    cleanup?.();
    fs.rmSync(queueDir, { recursive: true, force: true });
  });

  test('--help on the top level, every group and every command prints its usage and exits 0', async () => {
    const top = await cli(['--help']);
    assert.equal(top.code, 0);
    for (const word of ['start', 'projects add', 'send', 'status', 'watch', 'modules restart', 'Exit codes']) {
      assert.ok(top.stdout.includes(word), `top help names ${word}`);
    }
    for (const group of ['projects', 'modules']) {
      const r = await cli([group, '--help']);
      assert.equal(r.code, 0, r.stderr);
      assert.match(r.stdout, new RegExp(`^Usage: gmq-hub ${group} <subcommand>`));
    }
    const commands: Array<[string[], boolean]> = [
      [['start'], false],
      [['projects', 'add'], true],
      [['projects', 'list'], true],
      [['projects', 'rotate'], true],
      [['projects', 'disable'], true],
      [['projects', 'enable'], true],
      [['send'], true],
      [['status'], true],
      [['command'], true],
      [['commands'], true],
      [['watch'], false],
      [['modules', 'list'], true],
      [['modules', 'restart'], true],
    ];
    await eachLimited(commands, async ([words, hasJson]) => {
      const r = await cli([...words, '--help']);
      assert.equal(r.code, 0, `${words.join(' ')} --help: ${r.stderr}`);
      assert.match(r.stdout, new RegExp(`^Usage: gmq-hub ${words.join(' ')}`), words.join(' '));
      assert.match(r.stdout, /\nExamples:\n {2}gmq-hub /);
      assert.equal(r.stdout.includes('--json'), hasJson, `${words.join(' ')}: --json documented`);
    });
    // `help <words>` and `-h` before the words print the same text
    const sendHelp = await cli(['send', '--help']);
    assert.equal((await cli(['help', 'send'])).stdout, sendHelp.stdout);
    assert.equal((await cli(['-h', 'send'])).stdout, sendHelp.stdout);
    const bare = await cli(['modules', '--help', '--url', 'http://127.0.0.1:1']);
    assert.match(bare.stdout, /^Usage: gmq-hub modules <subcommand>/, 'help needs no hub');
  });

  test('usage errors: one message and the usage line on stderr, exit 2, nothing sent', async () => {
    const cases: Array<[string[], RegExp]> = [
      [[], /no command given/],
      [['frobnicate'], /unknown command "frobnicate"/],
      [['projects'], /projects: which one\? \(add, list, rotate, disable, enable\)/],
      [['projects', 'frob'], /unknown subcommand "frob"/],
      [['projects', 'add'], /missing <id>\nusage: gmq-hub projects add <id>/],
      [['projects', 'list', '--bogus'], /unknown option --bogus/],
      [['send', 'cli-plant'], /missing <type>/],
      [['send', 'cli-plant', 'echo', '{nope'], /json-payload: not valid JSON/],
      [['send', '--timeout-ms', 'soon', 'cli-plant', 'echo'], /--timeout-ms: expected a positive whole number/],
      [['send', '--timeout-ms'], /--timeout-ms needs a value/],
      [
        ['send', '--queue-until', '2001-01-01T00:00:00Z', 'cli-plant', 'echo'],
        /--queue-until: .* is not in the future/,
      ],
      [['send', '--queue-until', 'tomorrow', 'cli-plant', 'echo'], /--queue-until: expected an ISO time/],
      [['send', '--wait-ms', '5', 'cli-plant', 'echo'], /--wait-ms needs --sync/],
      [['send', '--sync', '--at', '+1h', 'cli-plant', 'echo'], /--at cannot be used with --sync/],
      [['cancel'], /missing <command-id>/],
      [['status', 'a', 'b'], /unexpected argument "b"/],
      [['projects', 'rotate', 'x', '--overlap-s', '-1'], /--overlap-s/],
      [['status', 'cli-plant', '--url', 'ftp://example'], /--url: "ftp:\/\/example" is not an http/],
      [['commands', '--status', 'done'], /--status: unknown status "done"/],
      [['commands', '--since', 'yesterday'], /--since: expected an ISO time/],
      [['commands', '--limit', '0'], /--limit: expected a positive whole number/],
      [['commands', '--offset', 'ten'], /--offset: expected a whole number, 0 or more/],
    ];
    await eachLimited(cases, async ([args, message]) => {
      const r = await cli(args);
      assert.equal(r.code, 2, `gmq-hub ${args.join(' ')}: exit 2, got ${r.code}: ${r.stderr}`);
      assert.match(r.stderr, message, `gmq-hub ${args.join(' ')}`);
      assert.match(r.stderr, /^gmq-hub: /);
      assert.equal(r.stdout, '', `gmq-hub ${args.join(' ')} prints nothing on stdout`);
    });
    const projects = await json(['projects', 'list', '--all']);
    assert.equal(projects.total, 0, 'no usage error reached the hub');
    // the hint to read the help comes once (issue 15, item 8)
    const unknown = await cli(['frobnicate']);
    assert.equal(unknown.stderr, 'gmq-hub: unknown command "frobnicate"\n(see: gmq-hub --help)\n');
  });

  test('projects add (secret shown once), list, rotate, disable and enable', async () => {
    const added = await cli(['projects', 'add', 'cli-plant', '--name', 'CLI plant']);
    assert.equal(added.code, 0, added.stderr);
    assert.match(added.stdout, /^project_id +cli-plant$/m);
    assert.match(added.stdout, /shown this once/);
    plantSecret = /^secret +(\S+)$/m.exec(added.stdout)?.[1] ?? '';
    assert.ok(plantSecret.length >= 32, added.stdout);

    const spare = await json(['projects', 'add', 'cli-spare']);
    assert.equal(spare.project_id, 'cli-spare');
    assert.equal(typeof spare.secret, 'string');

    const again = await cli(['projects', 'add', 'cli-plant']);
    assert.equal(again.code, 1);
    assert.match(oneLine(again), /^gmq-hub: STATUS_ERR_EXISTS: /);

    const table = await cli(['projects', 'list']);
    assert.equal(table.code, 0, table.stderr);
    assert.match(table.stdout, /^PROJECT +NAME +STATE +SINCE +LAST HEARTBEAT +ENABLED +AGENT$/m);
    assert.match(table.stdout, /^cli-plant +CLI plant +offline /m);
    assert.match(table.stdout, /^cli-spare +- +offline /m);
    const listed = await json(['projects', 'list']);
    assert.deepEqual(listed.items.map((p: Json) => p.project_id).sort(), ['cli-plant', 'cli-spare']);
    assert.equal(listed.total, 2);

    const rotated = await cli(['projects', 'rotate', 'cli-spare', '--overlap-s', '60']);
    assert.equal(rotated.code, 0, rotated.stderr);
    const newSecret = /^secret +(\S+)$/m.exec(rotated.stdout)?.[1];
    assert.ok(newSecret && newSecret !== spare.secret, rotated.stdout);
    const rotatedJson = await json(['projects', 'rotate', 'cli-spare']);
    assert.notEqual(rotatedJson.secret, newSecret);

    const disabled = await cli(['projects', 'disable', 'cli-spare']);
    assert.equal(disabled.code, 0, disabled.stderr);
    assert.match(disabled.stdout, /^enabled +no$/m);
    assert.deepEqual(
      (await json(['projects', 'list'])).items.map((p: Json) => p.project_id),
      ['cli-plant'],
    );
    const all = await cli(['projects', 'list', '--all']);
    assert.match(all.stdout, /^cli-spare .* no +-$/m);
    assert.equal((await json(['projects', 'enable', 'cli-spare'])).enabled, true);
  });

  test('watch prints live events; the agent comes online; send (async and --sync, answered by the agent); status', async () => {
    const watch = new CliProcess(['watch', '--project', 'cli-plant'], env);
    try {
      await watch.line('stderr', (l) => l.includes('watching project cli-plant'), T, 'watch to start');

      const before = await cli(['status', 'cli-plant']);
      assert.equal(before.code, 0, before.stderr);
      assert.match(before.stdout, /^state +offline /m);
      const offline = await cli(['send', 'cli-plant', 'echo']);
      assert.equal(offline.code, 1);
      assert.match(oneLine(offline), /^gmq-hub: CMD_ERR_PROJECT_OFFLINE: .*--queue-until/);

      // the agent joins with the secret `projects add` printed: a config edit, applied live
      const agent = { url: broker.url, project_id: 'cli-plant', secret: plantSecret, queue: { dir: queueDir } };
      th.writeConfig(`${hubYaml}\n  agent: ${JSON.stringify(agent)}\n`);
      assert.deepEqual((await th.host.reload()).started, ['agent']);
      await watch.until(
        () => watch.json().find((e) => e.type === 'project.status' && (e.data as Json).state === 'online'),
        T,
        'the project online on watch',
      );
      const status = await cli(['status', 'cli-plant']);
      assert.match(status.stdout, /^state +online since /m);
      assert.match(status.stdout, /^agent version +\S+/m);
      assert.equal((await json(['status', 'cli-plant'])).state, 'online');

      // async: the id at once; the agent's result shows on watch
      const sent = await json(['send', 'cli-plant', 'echo', '{"n":1}']);
      assert.match(sent.command_id, UUID);
      assert.equal(sent.status, 'pending');
      await watch.until(
        () => watch.json().find((e) => e.type === 'command.result' && e.command_id === sent.command_id),
        T,
        'the async command result on watch',
      );
      const human = await cli(['send', 'cli-plant', 'echo']);
      assert.equal(human.code, 0, human.stderr);
      assert.match(human.stdout, new RegExp(`^command_id +${UUID.source}$`, 'm'));
      assert.match(human.stdout, /^status +pending$/m);

      // --at: stored as scheduled, shown with its start, cancelled before it
      const scheduled = await cli(['send', '--at', '+1h', 'cli-plant', 'echo']);
      assert.equal(scheduled.code, 0, scheduled.stderr);
      assert.match(scheduled.stdout, /^status +scheduled$/m);
      assert.match(scheduled.stdout, /^scheduled for +\S+/m);
      const scheduledId = /^command_id +(\S+)$/m.exec(scheduled.stdout)?.[1] ?? '';
      const listed = await json(['commands', '--status', 'scheduled']);
      assert.deepEqual(
        listed.items.map((c: Json) => c.command_id),
        [scheduledId],
      );
      const cancelled = await json(['cancel', scheduledId]);
      assert.equal(cancelled.status, 'cancelled');
      const notAgain = await cli(['cancel', scheduledId]);
      assert.equal(notAgain.code, 1);
      assert.match(oneLine(notAgain), /^gmq-hub: CMD_ERR_NOT_CANCELLABLE: /);
      const badAt = await cli(['send', '--at', 'soon', 'cli-plant', 'echo']);
      assert.equal(badAt.code, 1);
      assert.match(oneLine(badAt), /^gmq-hub: CMD_ERR_INVALID: schedule_at: /);

      // --sync: the agent's own result
      const sync = await cli(['send', '--sync', '--timeout-ms', '15000', 'cli-plant', 'echo', '{"hello":"cli"}']);
      assert.equal(sync.code, 0, sync.stderr);
      assert.match(sync.stdout, /^status +completed$/m);
      assert.match(sync.stdout, /^result +success \(exit 0\)$/m);
      assert.match(sync.stdout, /^output +\{"hello":"cli"\}$/m);
      assert.match(sync.stdout, /^timings +queue \d+ ms · delivery \d+ ms · execution \d+ ms · total \d+ ms$/m);
      const syncJson = await json(['send', '--sync', 'cli-plant', 'echo', '[1,2,3]']);
      assert.equal(syncJson.status, 'completed');
      assert.deepEqual(JSON.parse(syncJson.result.output), [1, 2, 3]);

      const detail = await json(['command', sent.command_id]);
      assert.equal(detail.status, 'completed');
      assert.deepEqual(JSON.parse(detail.result.output), { n: 1 });

      // Ctrl-C: exit 0; stdout is one event per line, ids increasing, only this project
      await watch.until(
        () => watch.json().find((e) => e.type === 'command.result' && e.command_id === syncJson.command_id),
        T,
        'the sync command result on watch',
      );
      const exit = await watch.stop('SIGINT');
      assert.deepEqual(exit, { code: 0, signal: null });
      const events = watch.json();
      const ids = events.map((e) => e.id as number);
      assert.deepEqual(
        ids,
        [...ids].sort((a, b) => a - b),
      );
      assert.equal(new Set(ids).size, ids.length, 'no event printed twice');
      for (const e of events) {
        assert.equal(e.project_id, 'cli-plant');
        assert.equal(e.op, undefined);
        assert.ok(['command.state', 'command.log', 'command.result', 'project.status'].includes(e.type as string));
      }
      const states = events
        .filter((e) => e.type === 'command.state' && e.command_id === syncJson.command_id)
        .map((e) => (e.data as Json).status);
      assert.equal(states[0], 'pending');
      assert.equal(states.at(-1), 'completed');
    } finally {
      await watch.stop('SIGKILL');
    }
  });

  test('send --sync exits 1 when the command fails or the wait runs out, naming the command', async () => {
    const failed = await cli(['send', '--sync', 'cli-plant', 'no_such_handler']);
    assert.equal(failed.code, 1, failed.stdout);
    assert.match(failed.stdout, /^status +failed$/m);
    assert.match(oneLine(failed), new RegExp(`^gmq-hub: command ${UUID.source} failed: .*no handler`));

    // queued for an offline project: nobody answers within the wait
    const waited = await cli(['send', '--sync', '--wait-ms', '300', '--queue-until', '+1m', 'cli-spare', 'echo']);
    assert.equal(waited.code, 1, waited.stdout);
    const line = oneLine(waited);
    assert.match(line, new RegExp(`^gmq-hub: CMD_ERR_TIMEOUT: .*command (${UUID.source}) is pending and goes on`));
    const id = UUID.exec(line)?.[0] ?? '';
    const followed = await json(['command', id]);
    assert.equal(followed.offline_policy, 'queue');
  });

  test('send --idempotency-key: a re-run gets the first run’s command; another command with the key is refused', async () => {
    const args = ['send', '--idempotency-key', 'cli-key-1', '--queue-until', '+1m', 'cli-spare', 'echo', '{"n":1}'];
    const first = await json(args);
    const again = await cli(args);
    assert.equal(again.code, 0, again.stderr);
    assert.match(again.stdout, new RegExp(`^command_id +${first.command_id}$`, 'm'));
    assert.match(
      oneLine(again),
      new RegExp(`^gmq-hub: the idempotency key names command ${first.command_id}, sent before`),
    );
    const other = await cli(['send', '--idempotency-key', 'cli-key-1', '--queue-until', '+1m', 'cli-spare', 'echo']);
    assert.equal(other.code, 1);
    assert.match(oneLine(other), /^gmq-hub: CMD_ERR_IDEMPOTENCY_MISMATCH: /);
  });

  test('commands lists newest first, filtered by project, status, type and time, up to --limit', async () => {
    // its own queued command: the earlier tests' queue for a minute, which a slow run outlives
    const held = await json(['send', '--queue-until', '+1h', 'cli-spare', 'echo', '{"held":true}']);
    const all = await json(['commands', '--limit', '500']);
    assert.ok(all.items.length >= 3, `commands so far: ${all.items.length}`);
    assert.equal(all.total, all.items.length);
    const created = all.items.map((c: Json) => Date.parse(c.created_at));
    assert.deepEqual(
      created,
      [...created].sort((a, b) => b - a),
      'newest first',
    );

    const queued = await json(['commands', '--project', 'cli-spare', '--status', 'pending,sent']);
    assert.ok(
      queued.items.some((c: Json) => c.command_id === held.command_id),
      JSON.stringify(queued.items),
    );
    assert.ok(queued.items.every((c: Json) => c.project_id === 'cli-spare' && ['pending', 'sent'].includes(c.status)));
    const failed = await json(['commands', '--status', 'failed', '--type', 'no_such_handler']);
    assert.ok(failed.items.length >= 1);
    assert.ok(failed.items.every((c: Json) => c.status === 'failed' && c.command_type === 'no_such_handler'));

    // time filters: the last hour has them all, an instant before any has none
    assert.equal((await json(['commands', '--since', '1h', '--limit', '500'])).total, all.total);
    assert.equal((await json(['commands', '--since=-1h', '--limit', '500'])).total, all.total);
    const none = await cli(['commands', '--until', '2001-01-01T00:00:00Z']);
    assert.equal(none.code, 0, none.stderr);
    assert.equal(none.stdout, '');
    assert.match(none.stderr, /^gmq-hub: no commands match$/m);

    // a table for people; --limit cuts it and says so
    const one = await cli(['commands', '--limit', '1']);
    assert.equal(one.code, 0, one.stderr);
    const [header, row, ...rest] = one.stdout.trimEnd().split('\n');
    assert.match(header, /^CREATED +COMMAND ID +PROJECT +TYPE +STATUS +TOTAL +ERROR$/);
    assert.ok(row.includes(all.items[0].command_id), row);
    assert.deepEqual(rest, []);
    assert.match(one.stderr, new RegExp(`1 of ${all.total} shown \\(--offset 1 for the next\\)`));

    // paging: --offset skips the newest, in the table and in --json
    const page2 = await json(['commands', '--limit', '2', '--offset', '1']);
    assert.deepEqual(
      page2.items.map((c: Json) => c.command_id),
      all.items.slice(1, 3).map((c: Json) => c.command_id),
    );
    assert.equal(page2.total, all.total);
    assert.equal(page2.offset, 1);
    const second = await cli(['commands', '--limit', '1', '--offset', '1']);
    assert.equal(second.code, 0, second.stderr);
    assert.ok(second.stdout.split('\n')[1].includes(all.items[1].command_id), second.stdout);
    assert.match(second.stderr, new RegExp(`2–2 of ${all.total} shown \\(--offset 2 for the next\\)`));
    const past = await cli(['commands', '--offset', String(all.total)]);
    assert.equal(past.code, 0, past.stderr);
    assert.equal(past.stdout, '');
    assert.match(past.stderr, new RegExp(`^gmq-hub: ${all.total} match, none after --offset ${all.total}$`, 'm'));

    // the hub's refusal is exit 1 with its code, as for every command
    const bad = await cli(['commands', '--project', 'no/such']);
    assert.equal(bad.code, 1, bad.stderr);
    assert.match(oneLine(bad), /^gmq-hub: [A-Z]+_ERR_INVALID: /);
  });

  test('watch resumes from the last event id after a lost connection: nothing missed, nothing twice', async () => {
    // a reference client straight on the hub sees every event
    const reference: Json[] = [];
    const ref = new WebSocket(`${base.replace(/^http/, 'ws')}/api/exchange-hub/ws`, {
      headers: { authorization: `Bearer ${TOKEN}` },
    });
    const subscribed = new Promise<void>((resolve, reject) => {
      ref.on('error', reject);
      ref.on('message', (data) => {
        const m = JSON.parse(String(data));
        if (m.op === 'hello') ref.send(JSON.stringify({ op: 'subscribe', all: true }));
        if (m.op === 'subscribed') resolve();
        if (m.op === 'event') reference.push(m);
      });
    });
    await withTimeout(subscribed, T, 'the reference subscription');

    const proxy = await new TcpProxy(Number(new URL(base).port)).listen();
    const watch = new CliProcess(['watch', '--url', proxy.url], env);
    try {
      await watch.line('stderr', (l) => l.includes('watching all events'), T, 'watch to start');
      const printed = (id: string) => () =>
        watch.json().find((e) => e.type === 'command.result' && e.command_id === id);

      const first = await json(['send', '--sync', 'cli-plant', 'echo', '"before"']);
      await watch.until(printed(first.command_id), T, 'the first result');

      proxy.down();
      await watch.line('stderr', (l) => l.includes('connection lost'), T, 'the CLI to see the cut');
      // a whole command's life while the CLI is away
      const missed = await json(['send', '--sync', 'cli-plant', 'echo', '"while away"']);
      proxy.up();
      const back = await watch.line('stderr', (l) => l.includes('reconnected;'), T, 'the CLI to reconnect');
      assert.match(back, /reconnected; [1-9]\d* missed event\(s\) replayed/);
      await watch.until(printed(missed.command_id), T, 'the missed result, replayed');

      const last = await json(['send', '--sync', 'cli-plant', 'echo', '"after"']);
      await watch.until(printed(last.command_id), T, 'a live result after the reconnect');
      await withTimeout(
        (async () => {
          while (!reference.some((e) => e.type === 'command.result' && e.command_id === last.command_id)) {
            await new Promise((r) => ref.once('message', r));
          }
        })(),
        T,
        'the reference to see the last result',
      );
      assert.deepEqual(await watch.stop('SIGINT'), { code: 0, signal: null });

      const ids = watch.json().map((e) => e.id as number);
      const lastId = ids.at(-1)!;
      const expected = reference.map((e) => e.id as number).filter((id) => id >= ids[0] && id <= lastId);
      assert.deepEqual(ids, expected, 'exactly the hub’s events, in order, none missed or repeated');
      const whileAway = watch.json().filter((e) => e.command_id === missed.command_id);
      assert.deepEqual(
        whileAway.filter((e) => e.type === 'command.state').map((e) => (e.data as Json).status)[0],
        'pending',
      );
    } finally {
      await watch.stop('SIGKILL');
      await proxy.close();
      ref.close();
    }
  });

  test('modules lists state, restarts and mailbox counters; modules restart restarts one', async () => {
    const table = await cli(['modules']);
    assert.equal(table.code, 0, table.stderr);
    assert.match(
      table.stdout,
      /^MODULE +TYPE +STATE +RESTARTS +FAILURES +QUEUED +HANDLED +DROPPED +ERRORS +LAST ERROR$/m,
    );
    for (const name of ['status', 'command', 'mqtt-bridge', 'web', 'agent']) {
      assert.match(table.stdout, new RegExp(`^${name} +inner +running +0 +0 +\\d+ +\\d+ +\\d+ +\\d+ +-$`, 'm'), name);
    }
    const list = await cli(['modules', 'list']);
    assert.equal(list.stdout.split('\n')[0], table.stdout.split('\n')[0], '`modules` is `modules list`');
    const before = await json(['modules']);
    const handled = before.items.find((m: Json) => m.name === 'command').mailbox.handled;
    assert.ok(handled > 0, 'the command module handled the sends');

    const restarted = await cli(['modules', 'restart', 'status']);
    assert.equal(restarted.code, 0, restarted.stderr);
    assert.match(restarted.stdout, /^status +inner +running +1 +0 /m);
    const after = await json(['modules']);
    assert.equal(after.items.find((m: Json) => m.name === 'status').restarts, 1);

    const unknown = await cli(['modules', 'restart', 'nope']);
    assert.equal(unknown.code, 1);
    assert.match(oneLine(unknown), /^gmq-hub: HOST_ERR_UNKNOWN_MODULE: /);
  });

  test('watch outlives a restart of the web module: a warning that events may be missing, then live again', async () => {
    const watch = new CliProcess(['watch', '--project', 'cli-plant'], env);
    try {
      await watch.line('stderr', (l) => l.includes('watching project cli-plant'), T, 'watch to start');
      const restart = await cli(['modules', 'restart', 'web']);
      assert.equal(restart.code, 0, restart.stderr);
      assert.match(restart.stdout, /^web: restarting/);
      await watch.line('stderr', (l) => l.includes('connection lost'), T, 'the CLI to lose the connection');
      const warned = await watch.line('stderr', (l) => l.includes('reconnected, but'), T, 'the resync warning');
      assert.match(warned, /event stream restarted \(a new epoch\): events may be missing/);
      const after = await json(['send', '--sync', 'cli-plant', 'echo', '"after the restart"']);
      await watch.until(
        () => watch.json().find((e) => e.type === 'command.result' && e.command_id === after.command_id),
        T,
        'a live result after the restart',
      );
      assert.deepEqual(await watch.stop('SIGINT'), { code: 0, signal: null });
    } finally {
      await watch.stop('SIGKILL');
    }
  });

  test('API errors: one line with the stable code on stderr, exit 1 (unknown project, bad token)', async () => {
    const unknownProject = await cli(['send', 'no-such-project', 'echo']);
    assert.equal(unknownProject.code, 1);
    assert.match(oneLine(unknownProject), /^gmq-hub: CMD_ERR_UNKNOWN_PROJECT: /);
    const unknownStatus = await cli(['status', 'no-such-project']);
    assert.equal(unknownStatus.code, 1);
    assert.match(oneLine(unknownStatus), /^gmq-hub: STATUS_ERR_NOT_FOUND: /);
    const badId = await cli(['command', 'not-a-uuid']);
    assert.equal(badId.code, 1);
    assert.match(oneLine(badId), /^gmq-hub: CMD_ERR_INVALID: command_id/);

    for (const [what, args, extra] of [
      ['wrong token in the environment', ['projects', 'list'], { HUB_API_TOKEN: 'wrong' }],
      ['wrong --token', ['projects', 'list', '--token', 'wrong'], {}],
      ['no token', ['modules'], { HUB_API_TOKEN: '' }],
    ] as const) {
      const r = await cli([...args], extra);
      assert.equal(r.code, 1, what);
      assert.match(oneLine(r), /^gmq-hub: AUTH_ERR_TOKEN: .*\(set --token or HUB_API_TOKEN\)$/, what);
      assert.equal(r.stdout, '', what);
    }
    const watch = new CliProcess(['watch'], { ...env, HUB_API_TOKEN: 'wrong' });
    assert.deepEqual(await withTimeout(watch.exited, T, 'watch to give up'), { code: 1, signal: null });
    assert.equal(watch.stderr.length, 1, watch.tail());
    assert.match(watch.stderr[0], /^gmq-hub: AUTH_ERR_TOKEN: /);
  });

  test('an unreachable hub: one line naming the URL, exit 1', async () => {
    const port = await freePort(); // bound then released: nothing listens there
    const url = `http://127.0.0.1:${port}`;
    const r = await cli(['status', 'cli-plant', '--url', url]);
    assert.equal(r.code, 1);
    assert.equal(
      oneLine(r),
      `gmq-hub: cannot reach the hub at ${url}: connect ECONNREFUSED 127.0.0.1:${port} (is it running? set --url or HUB_URL)`,
    );
    const byEnv = await cli(['modules'], { HUB_URL: url });
    assert.match(oneLine(byEnv), new RegExp(`cannot reach the hub at ${url}`));
    const byPort = await cli(['modules'], { HUB_URL: '', HUB_HTTP_PORT: String(port) });
    assert.match(
      oneLine(byPort),
      new RegExp(`cannot reach the hub at ${url}`),
      'the default URL follows HUB_HTTP_PORT',
    );

    const watch = new CliProcess(['watch', '--url', url], env);
    assert.deepEqual(await withTimeout(watch.exited, T, 'watch to give up'), { code: 1, signal: null });
    assert.equal(watch.stderr.length, 1, watch.tail());
    assert.match(watch.stderr[0], new RegExp(`^gmq-hub: cannot reach the hub at ${url}: .*ECONNREFUSED`));
  });
});

describe('gmq-hub start', () => {
  test('runs the hub as `npm start` does: serves, and SIGTERM stops it with exit 0', async () => {
    const cfg = writeTempConfig('cli-start', 'modules:\n  web: { port: 0, database: null }\n');
    const hub = new CliProcess(['start'], { HUB_CONFIG: cfg.file, LOG_LEVEL: 'info' }, { cwd: cfg.dir });
    try {
      const listening = await hub.until(
        () => hub.stdout.map((l) => JSON.parse(l)).find((l) => l.msg === 'web listening'),
        T,
        'web listening',
      );
      await hub.line('stdout', (l) => l.includes('"host started"'), T, 'host started');
      const modules = await runCli(['modules', '--json'], { HUB_URL: listening.url });
      assert.equal(modules.code, 0, modules.stderr);
      assert.deepEqual(
        JSON.parse(modules.stdout).items.map((m: Json) => [m.name, m.state]),
        [['web', 'running']],
      );
      assert.deepEqual(await hub.stop('SIGTERM'), { code: 0, signal: null });
      assert.ok(hub.stdout.some((l) => l.includes('"host stopped"')));
    } finally {
      await hub.stop('SIGKILL');
      cfg.cleanup();
    }
  });

  test('a start that fails is one line and exit 1, the same from `gmq-hub start` and `npm start`', async () => {
    const holder = net.createServer();
    await new Promise<void>((r) => holder.listen(0, '127.0.0.1', () => r()));
    const port = (holder.address() as net.AddressInfo).port;
    const cfg = writeTempConfig('cli-start-taken', `modules:\n  web: { port: ${port}, database: null }\n`);
    try {
      const envs = { HUB_CONFIG: cfg.file, LOG_LEVEL: 'silent' };
      const viaCli = await runCli(['start'], envs);
      const viaMain = await runScript(MAIN, [], envs);
      for (const r of [viaCli, viaMain]) {
        assert.equal(r.code, 1);
        // a literal port in the file: the hint names the key to change (a variable the file uses is named instead)
        assert.equal(
          oneLine(r),
          `gmq-hub: HOST_ERR_PORT_IN_USE: port ${port} is in use (change modules.web.port in ${cfg.file})`,
        );
      }
      const viaFlag = await runCli(['start', '--config', cfg.file], { LOG_LEVEL: 'silent' });
      assert.equal(oneLine(viaFlag), oneLine(viaCli), '--config is HUB_CONFIG');
      // the structured record of an operator's mistake: code and reason, no stack
      const logged = await runScript(MAIN, [], { HUB_CONFIG: cfg.file, LOG_LEVEL: 'info' });
      const fatal = logged.stdout
        .split('\n')
        .filter((l) => l.startsWith('{'))
        .map((l) => JSON.parse(l) as Record<string, unknown>)
        .find((r) => r.level === 60);
      assert.ok(fatal, logged.stdout);
      assert.equal(fatal.msg, 'start refused');
      assert.equal(fatal.code, 'HOST_ERR_PORT_IN_USE');
      assert.ok(!logged.stdout.includes('"stack"'), 'no stack for a taken port');
    } finally {
      await new Promise<void>((r) => holder.close(() => r()));
      cfg.cleanup();
    }
  });

  test('a logging variable it cannot take is one line and exit 1, before any config is read', async () => {
    for (const [name, value, line] of [
      [
        'LOG_FLUSH_MS',
        'soon',
        /^gmq-hub: HOST_ERR_CONFIG_ENV: LOG_FLUSH_MS must be a whole number of ms from 0 to 10000, not "soon"$/,
      ],
      ['LOG_LEVEL', 'loud', /^gmq-hub: .*loud/],
    ] as const) {
      const r = await runScript(MAIN, [], { HUB_CONFIG: '/nonexistent/config.yml', [name]: value });
      assert.equal(r.code, 1, `${name}=${value}`);
      assert.match(oneLine(r), line);
      assert.ok(!r.stderr.includes('    at '), `${name}: no stack: ${r.stderr}`);
    }
  });
});
