/**
 * An independent agent in another language (test/conformance/agent.py: Python with Debian's
 * python3-paho-mqtt, written from the README and the seeds) against a real hub process: it
 * registers with the seed's shapes, heartbeats, acks and answers commands, streams a log chunk,
 * says goodbye, and a malformed register of its gets a refusal with the reason. Over TCP and over
 * MQTT over WebSocket (the web port's /mqtt).
 *
 * Without paho the test is skipped, unless GMQ_REQUIRE_PAHO=1 (CI installs it): then it fails.
 */
import assert from 'node:assert/strict';
import { type ChildProcess, spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { createInterface } from 'node:readline';
import { after, before, describe, test } from 'node:test';
import { Hub, type Json, type Provisioned, T } from '../e2e/harness.js';
import { REPO_ROOT } from '../helpers/process.js';
import { until } from '../helpers/wait.js';
import { WsClient } from '../modules/web/harness.js';

const AGENT = path.join(REPO_ROOT, 'test/conformance/agent.py');

/** Debian's python3 sees python3-paho-mqtt; a python3 earlier on PATH (pyenv) may not. */
function findPython(): { python: string | null; why: string } {
  // GMQ_CONFORMANCE_PYTHON picks another interpreter (and shows the GMQ_REQUIRE_PAHO failure with one without paho)
  const wanted = process.env.GMQ_CONFORMANCE_PYTHON;
  const candidates = wanted
    ? [wanted]
    : ['/usr/bin/python3', 'python3'].filter((p) => !p.startsWith('/') || fs.existsSync(p));
  for (const python of candidates) {
    const r = spawnSync(python, ['-c', 'import paho.mqtt.client'], { stdio: 'ignore' });
    if (r.status === 0) return { python, why: '' };
  }
  return { python: null, why: `python3-paho-mqtt not importable by ${candidates.join(' or ')}` };
}

const { python, why } = findPython();
const required = process.env.GMQ_REQUIRE_PAHO === '1';

class PyAgent {
  readonly events: Json[] = [];
  readonly stderr: string[] = [];
  readonly proc: ChildProcess;
  readonly exited: Promise<number | null>;

  constructor(url: string, p: Provisioned, mode: 'normal' | 'malformed') {
    this.proc = spawn(
      python!,
      [
        AGENT,
        '--url',
        url,
        '--project',
        p.project_id,
        '--secret',
        p.secret,
        '--username',
        p.mqtt_username,
        '--password',
        p.mqtt_password,
        '--mode',
        mode,
      ],
      { stdio: ['pipe', 'pipe', 'pipe'] },
    );
    createInterface({ input: this.proc.stdout! }).on('line', (l) => {
      try {
        this.events.push(JSON.parse(l));
      } catch {
        this.stderr.push(l);
      }
    });
    createInterface({ input: this.proc.stderr! }).on('line', (l) => this.stderr.push(l));
    this.exited = new Promise((r) => this.proc.once('exit', (code) => r(code)));
  }

  async event(pred: (e: Json) => boolean, what: string): Promise<Json> {
    await until(() => this.events.some(pred) || this.proc.exitCode !== null, T, what).catch((err) => {
      throw new Error(`${(err as Error).message}; agent said ${JSON.stringify(this.events)} ${this.stderr.join('\n')}`);
    });
    const e = this.events.find(pred);
    if (!e) throw new Error(`agent exited before ${what}: ${JSON.stringify(this.events)} ${this.stderr.join('\n')}`);
    return e;
  }

  /** SIGTERM: the agent says `disconnect` and leaves; resolves with its exit code. */
  async stop(): Promise<number | null> {
    if (this.proc.exitCode === null) this.proc.kill('SIGTERM');
    return this.exited;
  }
}

describe('conformance agent in Python (paho-mqtt) against a real hub', () => {
  test('python3-paho-mqtt is available (GMQ_REQUIRE_PAHO=1 makes its absence a failure)', (t) => {
    if (python) return;
    if (required) assert.fail(`GMQ_REQUIRE_PAHO=1 but ${why} (apt-get install python3-paho-mqtt)`);
    t.skip(why);
  });

  describe('the agent speaking the seed shapes', { skip: python ? undefined : why }, () => {
    let hub: Hub;
    const agents: PyAgent[] = [];

    before(async () => {
      hub = await Hub.create('embedded');
      await hub.start();
    });

    after(async () => {
      for (const a of agents) await a.stop().catch(() => undefined);
      await hub?.dispose();
    });

    for (const transport of ['tcp', 'websocket'] as const) {
      test(`over ${transport}: registers, heartbeats, acks and answers commands, streams a log chunk, leaves`, async () => {
        const p = await hub.provision(`py-${transport}`);
        const url = transport === 'tcp' ? hub.brokerUrl : `${hub.base.replace(/^http:/, 'ws:')}/mqtt`;
        const agent = new PyAgent(url, p, 'normal');
        agents.push(agent);
        await agent.event((e) => e.event === 'registered', 'registered');
        const online = await hub.waitState(p.project_id, 'online');
        assert.match(online.instance_id, /^py-conformance-.+-\d+$/);
        assert.equal(typeof online.registration.node_version, 'object', 'node_version kept as an object');
        assert.equal(online.registration.node_version.git_commit, 'abc123');

        let status: Json;
        await until(
          async () => {
            status = (await hub.api('GET', `/project/${p.project_id}/status`)).json;
            return status.metrics !== null && status.last_heartbeat_at !== null;
          },
          T,
          'the heartbeat over REST',
        );
        assert.equal(status.metrics.process_cpu_usage_percent, '2.50');

        const ws = await WsClient.open(hub.base);
        try {
          ws.send({ op: 'subscribe', projects: [p.project_id] });
          await ws.next((m) => m.op === 'subscribed', T);
          const sync = await hub.api('POST', '/command/sync', {
            project_id: p.project_id,
            command_type: 'echo',
            payload: { from: 'conformance' },
            wait_ms: T,
          });
          assert.equal(sync.status, 200, JSON.stringify(sync.json));
          assert.equal(sync.json.status, 'completed');
          assert.deepEqual(JSON.parse(sync.json.result.output), { from: 'conformance' });
          assert.equal(typeof sync.json.timings.execution_ms, 'number');
          const chunk = await ws.next(
            (m) => m.op === 'event' && m.type === 'command.log' && m.command_id === sync.json.command_id,
            T,
          );
          assert.match(chunk.data.content, /^echo from python: /);
        } finally {
          await ws.close();
        }

        const other = await hub.api('POST', '/command/send', {
          project_id: p.project_id,
          command_type: 'reboot',
          payload: {},
        });
        assert.equal(other.status, 202);
        const failed = await hub.waitCommand(other.json.command_id, (c) => c.status === 'failed');
        assert.equal(failed.result.exit_code, 127);
        assert.equal(
          agent.events.filter((e) => e.event === 'command' && e.command_id === sync_id(agent, 'echo')).length,
          1,
          'the echo ran once',
        );

        assert.equal(await agent.stop(), 0, agent.stderr.join('\n'));
        assert.ok(agent.events.some((e) => e.event === 'bye'));
        await hub.waitState(p.project_id, 'offline');
      });
    }

    test('a malformed register (start_time "yesterday") is refused with the field named', async () => {
      const p = await hub.provision('py-bad');
      const agent = new PyAgent(hub.brokerUrl, p, 'malformed');
      agents.push(agent);
      const refused = await agent.event((e) => e.event === 'refused', 'the refusal');
      assert.match(refused.reason, /^PROTO_ERR_SCHEMA: payload\.start_time: /);
      assert.equal(refused.signed, true, 'signed: the project is known');
      assert.equal(await agent.exited, 0, 'the agent got its answer');
    });
  });
});

/** The id of the first command of `type` the agent ran. */
function sync_id(agent: PyAgent, type: string): string | undefined {
  return agent.events.find((e) => e.event === 'command' && e.command_type === type)?.command_id;
}
