/**
 * README "Five minutes with a hub and an agent", run as written (issue 15, item 1): the hub from
 * the shipped config.yml with the port variable the README exports, the project provisioned with
 * the README's request, the agent from examples/agent/config.yml with the README's environment,
 * then the README's sync command. The only substitutions are free ports for the README's fixed
 * ones (so the test never touches the machine's 1883 or 8080) and temp directories for ./data.
 *
 * The second test points the same agent at a broker where no hub listens (a private Mosquitto,
 * never the machine's own) and requires it to say so: the "register sent" line naming that broker,
 * then the warning that no register_ack came, with what to check, and another register.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, describe, test } from 'node:test';
import { loadConfig } from '../../core/config.js';
import { serverUsable } from '../../core/services/postgres-server.js';
import { deriveMqttPassword } from '../../modules/shared/credentials.js';
import { mosquittoAvailable, startPrivateMosquitto } from '../helpers/mosquitto.js';
import { freePort, HostProcess, type LogLine, REPO_ROOT } from '../helpers/process.js';
import { periodBound, scaled, until } from '../helpers/wait.js';

const README = fs.readFileSync(path.join(REPO_ROOT, 'README.md'), 'utf8');
const AGENT_CONFIG = path.join(REPO_ROOT, 'examples/agent/config.yml');
const HUB_CONFIG = path.join(REPO_ROOT, 'config.yml');
/** A start with a fresh (template-copied) PGlite on a loaded machine. */
const START_MS = 60_000;
const LEVEL = { info: 30, warn: 40, error: 50 } as const;

/** The first ```sh block of the walkthrough section. */
function walkthroughBlock(): string {
  const at = README.indexOf('### Five minutes with a hub and an agent');
  assert.ok(at >= 0, 'README has the walkthrough section');
  const m = /```sh\n([\s\S]*?)```/.exec(README.slice(at));
  assert.ok(m, 'the walkthrough has a sh block');
  return m[1];
}

/** The block's commands, continuation lines joined and trailing comments dropped. */
function commands(block: string): string[] {
  return block
    .replace(/\\\n\s*/g, ' ')
    .split('\n')
    .map((l) => l.replace(/\s+#.*$/, '').trim())
    .filter((l) => l !== '' && !l.startsWith('#'));
}

/** `A=1 B=2 npm start` → { A: '1', B: '2' } (the assignments before the command word). */
function leadingAssignments(line: string): Record<string, string> {
  const env: Record<string, string> = {};
  for (const word of line.split(/\s+/)) {
    const m = /^([A-Z_][A-Z0-9_]*)=(.*)$/.exec(word);
    if (!m) break;
    env[m[1]] = m[2];
  }
  return env;
}

/** The process environment without anything that would point a hub or agent elsewhere than the README says. */
function cleanEnv(): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) {
    if (!k.startsWith('HUB_') && !k.startsWith('AGENT_') && k !== 'LOG_FORMAT') env[k] = v;
  }
  return { ...env, LOG_FORMAT: 'json' };
}

const steps = commands(walkthroughBlock());
const exported = steps.filter((l) => l.startsWith('export ')).map((l) => leadingAssignments(l.slice(7)));
const readmeEnv: Record<string, string> = Object.assign({}, ...exported);
const agentLine = steps.find((l) => l.includes('HUB_CONFIG=examples/agent/config.yml') && l.endsWith('npm start'));
const createLine = steps.find((l) => l.includes('/api/exchange-hub/projects') && l.includes('-XPOST'));
const syncLine = steps.find((l) => l.includes('/command/sync'));

describe('README walkthrough', () => {
  test('reads as this test runs it: the broker port exported for both terminals, then hub, project, agent, command', () => {
    assert.ok(
      readmeEnv.HUB_MQTT_PORT,
      `the walkthrough exports HUB_MQTT_PORT for both terminals: ${steps.join(' | ')}`,
    );
    assert.ok(steps.includes('npm start'), 'terminal 1 runs npm start');
    assert.ok(createLine, 'a project is provisioned with POST /projects');
    assert.ok(agentLine, 'terminal 2 runs the agent with HUB_CONFIG=examples/agent/config.yml npm start');
    assert.ok(syncLine, 'a sync command is sent');
  });

  describe('on free ports, as written', { skip: !agentLine || !createLine || !syncLine }, () => {
    const dirs: string[] = [];
    const procs: HostProcess[] = [];
    let hub: HostProcess;
    let base = '';
    let mqttPort = 0;

    after(async () => {
      for (const p of procs.reverse()) await p.stop();
      for (const d of dirs) fs.rmSync(d, { recursive: true, force: true });
    });

    test('the agent comes online and runs the sync command; each process logs under its own name', async () => {
      mqttPort = await freePort();
      const httpPort = await freePort();
      const hubData = fs.mkdtempSync(path.join(os.tmpdir(), 'gmq-walk-hub-'));
      const agentData = fs.mkdtempSync(path.join(os.tmpdir(), 'gmq-walk-agent-'));
      dirs.push(hubData, agentData);
      // the shipped default database: the embedded server in $HUB_DATA_DIR/postgres, which runs as
      // user postgres when the test runs as root and must reach the directory (mkdtemp's is 0700)
      fs.chmodSync(hubData, 0o755);

      // the README's exports, with a free port for its 1884
      const shared = { ...readmeEnv, HUB_MQTT_PORT: String(mqttPort) };
      hub = new HostProcess(HUB_CONFIG, {
        ...cleanEnv(),
        ...shared,
        HUB_HTTP_PORT: String(httpPort),
        HUB_GRPC_PORT: String(await freePort()),
        HUB_DATA_DIR: hubData,
      });
      procs.push(hub);
      await hub.started(START_MS);
      // the default database: the embedded server, or PGlite where this checkout cannot run it (README)
      const server = serverUsable(path.join(hubData, 'postgres'));
      await hub.waitFor(
        (l) =>
          l.msg ===
          (server.ok
            ? 'embedded PostgreSQL server started'
            : 'embedded PostgreSQL server cannot run here; using PGlite'),
        1_000,
        'the default database',
      );
      base = `http://127.0.0.1:${httpPort}`;
      const hint = await hub.waitFor((l) => l.msg.startsWith('agents connect to'), 5_000, 'the hub naming its broker');
      assert.equal(hint.mqtt_url, `mqtt://127.0.0.1:${mqttPort}`);
      assert.equal(hint.name, 'gmq-hub');

      // the README's project request
      const body = /-d '(\{[^']*\})'/.exec(createLine!)?.[1];
      assert.ok(body, `a JSON body in: ${createLine}`);
      const created = await fetch(`${base}/api/exchange-hub/projects`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body,
      });
      assert.equal(created.status, 201);
      const project = (await created.json()) as { project_id: string; secret: string };

      // the README's agent line: its assignments, the real secret for the README's placeholder
      const agentEnv: Record<string, string> = {
        ...leadingAssignments(agentLine!),
        AGENT_SECRET: project.secret,
        HUB_DATA_DIR: agentData,
      };
      assert.equal(
        agentEnv.AGENT_PROJECT_ID,
        project.project_id,
        'the agent runs as the project the README provisions',
      );
      const env: NodeJS.ProcessEnv = { ...cleanEnv(), ...shared, ...agentEnv };
      delete env.HUB_CONFIG;
      // where the example config sends the agent with that environment: it must be this hub's broker
      // (otherwise the agent would go to the machine's own 1883, which this test never touches)
      const agentCfg = loadConfig(AGENT_CONFIG, env);
      assert.equal(
        agentCfg.modules.agent.settings.url,
        `mqtt://127.0.0.1:${mqttPort}`,
        'the README environment points the example agent at the hub it started',
      );
      const agent = new HostProcess(AGENT_CONFIG, env);
      procs.push(agent);
      const sent = await agent.waitFor((l) => l.msg === 'register sent', START_MS, 'register sent');
      assert.equal(sent.level, LEVEL.info);
      assert.equal(sent.url, `mqtt://127.0.0.1:${mqttPort}`);
      assert.equal(sent.name, 'gmq-agent');
      await agent.waitFor((l) => l.msg === 'agent registered', 20_000, 'agent registered');
      await until(
        async () => {
          const r = (await (await fetch(`${base}/api/exchange-hub/projects/online`)).json()) as {
            items: Array<{ project_id: string }>;
          };
          return r.items.some((p) => p.project_id === project.project_id);
        },
        20_000,
        `${project.project_id} online`,
      );

      // the README's sync command
      const syncBody = /-d '(\{[^']*\})'/.exec(syncLine!)?.[1];
      assert.ok(syncBody, `a JSON body in: ${syncLine}`);
      const res = await fetch(`${base}/api/exchange-hub/command/sync`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: syncBody,
        signal: AbortSignal.timeout(scaled(30_000)),
      });
      const detail = (await res.json()) as { status: string; result?: { status: string; exit_code: number } };
      assert.equal(res.status, 200, JSON.stringify(detail));
      assert.equal(detail.status, 'completed');
      assert.equal(detail.result?.status, 'success');
      assert.equal(detail.result?.exit_code, 0);
      assert.ok(!agent.lines.some((l) => l.msg.startsWith('no register_ack')), 'no warning on the right broker');
      // the hub's trail of that command: accepted, then completed, at info, ids only (the sync
      // answer can reach the caller before the hub's stdout line is read: wait for it)
      const trailOf = () => hub.lines.filter((l) => l.msg === 'command accepted' || l.msg === 'command completed');
      await until(() => trailOf().length >= 2, 5_000, "the hub's log trail of the command");
      const trail = trailOf();
      assert.deepEqual(
        trail.map((l) => l.msg),
        ['command accepted', 'command completed'],
      );
      assert.ok(trail.every((l) => l.level === LEVEL.info && l.payload === undefined));
      assert.equal(typeof trail[1].duration_ms, 'number');
    });

    test("the README's agent with a secret the hub did not show: the hub's broker refuses the login, and the agent says what to check", async () => {
      assert.ok(mqttPort > 0, 'the walkthrough hub is up');
      const data = fs.mkdtempSync(path.join(os.tmpdir(), 'gmq-walk-wrong-secret-'));
      dirs.push(data);
      const agent = new HostProcess(AGENT_CONFIG, {
        ...cleanEnv(),
        ...readmeEnv,
        ...leadingAssignments(agentLine!),
        HUB_MQTT_PORT: String(mqttPort),
        AGENT_SECRET: 'not-the-secret-the-hub-showed',
        HUB_DATA_DIR: data,
      });
      procs.push(agent);
      const refused = await agent.waitFor((l) => l.msg === 'MQTT connection error', START_MS, 'the refused login');
      assert.equal(refused.level, LEVEL.warn);
      assert.equal(refused.url, `mqtt://127.0.0.1:${mqttPort}`);
      assert.match(String(refused.err), /not authori[sz]ed|bad user ?name or password/i);
      const check = refused.check as string[];
      assert.ok(Array.isArray(check), JSON.stringify(refused));
      assert.ok(
        check.some((c) => c.includes('AGENT_SECRET')),
        JSON.stringify(check),
      );
      assert.ok(
        check.some((c) => c.includes(`mqtt://127.0.0.1:${mqttPort}`)),
        JSON.stringify(check),
      );
      assert.ok(!agent.lines.some((l) => l.msg === 'agent connected to the broker'), agent.tail());
      await agent.stop();
    });

    test("a newcomer's mistakes are info lines with their code: no stack, no error, no module error", async () => {
      assert.ok(base, 'the walkthrough hub is up');
      const from = hub.lines.length;
      const post = (route: string, body: unknown) =>
        fetch(`${base}/api/exchange-hub${route}`, {
          method: 'POST',
          headers: { 'content-type': 'application/json' },
          body: JSON.stringify(body),
        });
      // a project nobody provisioned, one without an agent, and a body without a type
      const offline = `${leadingAssignments(agentLine!).AGENT_PROJECT_ID}-no-agent`;
      assert.equal((await post('/projects', { project_id: offline })).status, 201);
      const answers = [
        await post('/command/sync', { project_id: 'never-provisioned', command_type: 'echo', payload: {} }),
        await post('/command/sync', { project_id: offline, command_type: 'echo', payload: {} }),
        await post('/command/send', { project_id: offline }),
      ];
      const codes = await Promise.all(
        answers.map(async (r) => ((await r.json()) as { error: { code: string } }).error.code),
      );
      assert.deepEqual(codes, ['CMD_ERR_UNKNOWN_PROJECT', 'CMD_ERR_PROJECT_OFFLINE', 'CMD_ERR_INVALID']);
      const refusedLines = () => hub.lines.slice(from).filter((l) => l.msg === 'request refused');
      await until(() => refusedLines().length >= 3, 5_000, "the hub's lines for three refused requests");
      const lines = refusedLines();
      assert.deepEqual(
        lines.map((l) => l.code),
        codes,
      );
      for (const l of lines) {
        assert.equal(l.level, LEVEL.info, JSON.stringify(l));
        assert.equal(l.name, 'gmq-hub');
        assert.equal(l.err, undefined, 'no error object, no stack');
        assert.equal(l.payload, undefined, 'no request body');
      }
      const worse = hub.lines.slice(from).filter((l) => l.level >= LEVEL.warn);
      assert.deepEqual(worse, [], 'nothing above info for a caller mistake');
      // counted as refusals by code, and not as errors of any module's bus handlers
      const metrics = await (await fetch(`${base}/metrics`)).text();
      for (const code of codes) {
        assert.match(metrics, new RegExp(`^hub_http_refusals_total\\{code="${code}"\\} [1-9]`, 'm'), code);
      }
      const handlerErrors = [...metrics.matchAll(/^hub_bus_mailbox_errors_total\{[^}]*\} (\d+)/gm)];
      assert.ok(handlerErrors.length > 0, 'the mailbox error series are exported');
      assert.deepEqual(
        handlerErrors.filter((m) => m[1] !== '0').map((m) => m[0]),
        [],
        'no module counted a refusal as its error',
      );
    });
  });

  describe('an agent on a broker where no hub listens', { skip: !mosquittoAvailable() || !agentLine }, () => {
    test('says which broker it registered on, warns that nothing answered and what to check, and registers again', async () => {
      const projectId = leadingAssignments(agentLine!).AGENT_PROJECT_ID;
      const secret = 'a-secret-no-hub-knows';
      // the broker lets the agent in (as a real one of the wrong hub might): only the hub is missing
      const mosquitto = await startPrivateMosquitto({ [projectId]: deriveMqttPassword(projectId, secret) });
      const data = fs.mkdtempSync(path.join(os.tmpdir(), 'gmq-walk-lost-'));
      const port = new URL(mosquitto.tcpUrl).port;
      const agent = new HostProcess(AGENT_CONFIG, {
        ...cleanEnv(),
        ...leadingAssignments(agentLine!),
        HUB_MQTT_PORT: port,
        AGENT_SECRET: secret,
        HUB_DATA_DIR: data,
      });
      try {
        const url = `mqtt://127.0.0.1:${port}`;
        const first = await agent.waitFor(
          (l) => l.msg === 'register sent' && l.attempt === 1,
          START_MS,
          'the first register',
        );
        assert.equal(first.level, LEVEL.info);
        assert.equal(first.url, url);
        // register_retry_ms is the example's default (5 s): the warning comes after it
        const warned: LogLine = await agent.waitFor(
          (l) => l.msg.startsWith('no register_ack'),
          periodBound(5_000),
          'the unanswered-register warning',
        );
        assert.equal(warned.level, LEVEL.warn);
        assert.equal(warned.url, url);
        assert.ok(warned.msg.includes(url), warned.msg);
        assert.equal(warned.attempts, 1);
        const check = warned.check as string[];
        assert.ok(Array.isArray(check) && check.some((c) => c.includes(url)), JSON.stringify(check));
        assert.ok(
          check.some((c) => c.includes('secret')),
          'names the project id and secret',
        );
        // and keeps trying, each wait twice the one before (order and count, not durations)
        assert.equal(warned.next_retry_ms, 10_000);
        const second = await agent.waitFor(
          (l) => l.msg === 'register sent' && l.attempt === 2,
          5_000,
          'the second register',
        );
        assert.ok(agent.lines.indexOf(second) > agent.lines.indexOf(warned));
        assert.ok(!agent.lines.some((l) => l.level >= LEVEL.error), agent.tail());
      } finally {
        await agent.stop();
        await mosquitto.stop();
        fs.rmSync(data, { recursive: true, force: true });
      }
    });
  });

  describe('a hub that answers no', { skip: !mosquittoAvailable() || !agentLine }, () => {
    // The README's agent on the broker its hub uses (a Mosquitto the hub reaches with
    // HUB_EMBEDDED_BROKER=false, which lets the agents in: a broker does not check the secret the
    // hub signs with), as a project the hub never provisioned, and as a provisioned project with
    // the wrong secret. Each must say why it is not online and keep registering.
    const dirs: string[] = [];
    const procs: HostProcess[] = [];
    let mosquitto: Awaited<ReturnType<typeof startPrivateMosquitto>> | undefined;

    after(async () => {
      for (const p of procs.reverse()) await p.stop();
      await mosquitto?.stop();
      for (const d of dirs) fs.rmSync(d, { recursive: true, force: true });
    });

    test('an unknown project is told so, a wrong secret is named; both register again, neither blames the broker', async () => {
      const projectId = leadingAssignments(agentLine!).AGENT_PROJECT_ID;
      const stranger = `${projectId}-unprovisioned`;
      const wrongSecret = 'not-the-secret-the-hub-showed';
      const strangerSecret = 'a-secret-no-hub-knows';
      mosquitto = await startPrivateMosquitto({
        'gmq-hub': 'hub-password',
        [projectId]: deriveMqttPassword(projectId, wrongSecret),
        [stranger]: deriveMqttPassword(stranger, strangerSecret),
      });
      const url = mosquitto.tcpUrl;
      const httpPort = await freePort();
      const hubData = fs.mkdtempSync(path.join(os.tmpdir(), 'gmq-walk-no-hub-'));
      dirs.push(hubData);
      fs.chmodSync(hubData, 0o755); // the embedded server's user reaches it
      const hub = new HostProcess(HUB_CONFIG, {
        ...cleanEnv(),
        HUB_EMBEDDED_BROKER: 'false',
        HUB_MQTT_URL: url,
        HUB_MQTT_USERNAME: 'gmq-hub',
        HUB_MQTT_PASSWORD: 'hub-password',
        HUB_HTTP_PORT: String(httpPort),
        HUB_GRPC_PORT: String(await freePort()),
        HUB_DATA_DIR: hubData,
      });
      procs.push(hub);
      await hub.started(START_MS);
      const created = await fetch(`http://127.0.0.1:${httpPort}/api/exchange-hub/projects`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ project_id: projectId }),
      });
      assert.equal(created.status, 201);

      const agentWith = (id: string, secret: string): HostProcess => {
        const data = fs.mkdtempSync(path.join(os.tmpdir(), 'gmq-walk-refused-'));
        dirs.push(data);
        const agent = new HostProcess(AGENT_CONFIG, {
          ...cleanEnv(),
          ...leadingAssignments(agentLine!),
          HUB_MQTT_URL: url,
          AGENT_PROJECT_ID: id,
          AGENT_SECRET: secret,
          HUB_DATA_DIR: data,
        });
        procs.push(agent);
        return agent;
      };
      const unknown = agentWith(stranger, strangerSecret);
      const wrong = agentWith(projectId, wrongSecret);

      // not provisioned: the hub answers (unsigned: it has no secret for it) with its reason
      const refused = await unknown.waitFor(
        (l) => l.msg.startsWith('registration refused by the hub'),
        START_MS,
        "the hub's refusal",
      );
      assert.equal(refused.level, LEVEL.warn);
      assert.equal(refused.reason, 'unknown project');
      assert.equal(refused.url, url);
      assert.ok(refused.msg.includes('unknown project'), refused.msg);
      await unknown.waitFor(
        (l) => l.msg === 'register sent' && l.attempt === 2,
        periodBound(5_000),
        'a register after the refusal',
      );

      // the wrong secret: the hub's refusal is signed with the right one, which this agent cannot
      // verify; it says that, naming the secret, instead of reporting silence
      const unverified = await wrong.waitFor(
        (l) => l.msg.startsWith('a register_ack came'),
        START_MS,
        'the unverifiable answer named',
      );
      assert.equal(unverified.level, LEVEL.warn);
      assert.equal(unverified.url, url);
      assert.equal(unverified.code, 'PROTO_ERR_SIGNATURE');
      assert.ok(
        (unverified.check as string[]).some((c) => c.includes('AGENT_SECRET')),
        JSON.stringify(unverified),
      );
      await wrong.waitFor(
        (l) => l.msg === 'register sent' && l.attempt === 2,
        periodBound(5_000),
        'a register after the unverifiable answer',
      );

      for (const agent of [unknown, wrong]) {
        assert.ok(!agent.lines.some((l) => l.msg.startsWith('no register_ack')), agent.tail());
        assert.ok(!agent.lines.some((l) => l.msg === 'agent registered'), agent.tail());
        assert.ok(!agent.lines.some((l) => l.level >= LEVEL.error), agent.tail());
      }
      // the hub logged both refusals as warnings, not errors
      await hub.waitFor(
        (l) => l.msg === 'registration refused' && l.project_id === projectId,
        5_000,
        "the hub's line for the bad signature",
      );
      assert.ok(!hub.lines.some((l) => l.level >= LEVEL.error), hub.tail());
    });
  });
});
