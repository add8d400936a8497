import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { silentLogger } from '../../../core/log.js';
import type { ModuleTimers } from '../../../core/module.js';
import { AgentConfigSchema, resolveAgentConfig } from '../../../modules/agent/config.js';
import { echo, HostExec } from '../../../modules/agent/handlers.js';
import { capUtf8, LogBuffers, type LogChunk, splitUtf8 } from '../../../modules/agent/log-buffer.js';
import { deriveMqttPassword } from '../../../modules/shared/credentials.js';
import { backoffDelay } from '../../../modules/shared/mqtt-session.js';
import { redactUrl } from '../../../modules/shared/mqtt-session-socket.js';
import { until } from '../../helpers/wait.js';

const timers: ModuleTimers = {
  setTimeout: (fn, ms) => setTimeout(fn, ms),
  setInterval: (fn, ms) => setInterval(fn, ms),
  clear: (t) => clearTimeout(t),
};

describe('agent config', () => {
  test('defaults for everything but url, project_id and secret', () => {
    const c = AgentConfigSchema.parse({ url: 'mqtt://127.0.0.1:1883', project_id: 'plant-7', secret: 's3cret' });
    assert.equal(c.node_name, 'gmq-agent');
    assert.equal(c.heartbeat_interval_s, 5);
    assert.equal(c.clock_window_ms, 300_000);
    assert.deepEqual([c.reconnect_min_ms, c.reconnect_max_ms, c.register_retry_ms], [500, 30_000, 5000]);
    assert.equal(c.handlers.echo, true);
    assert.deepEqual(c.handlers.host_exec, {
      enabled: false,
      allow: [],
      timeout_ms: 30_000,
      max_output_bytes: 1_048_576,
      kill_grace_ms: 2000,
    });
    assert.deepEqual([c.log_flush_bytes, c.log_flush_ms], [4096, 1000]);
    assert.equal(c.queue.memory_max, 1000);
    assert.equal(c.queue.disk_max, 100_000);
    assert.equal(c.queue.ttl_ms, 86_400_000);
    assert.equal(c.queue.max_retries, 10);
    assert.equal(c.default_task_timeout_ms, 60_000);
    const r = resolveAgentConfig(c, { HUB_DATA_DIR: '/var/lib/hub' });
    assert.equal(r.username, 'plant-7');
    assert.equal(r.password, deriveMqttPassword('plant-7', 's3cret'));
    assert.equal(r.clientId, 'agent-plant-7-gmq-agent');
    assert.equal(r.queueDir, '/var/lib/hub/agent-queue');
  });

  test('rejects unknown keys, a bad project id, a missing secret and a bad url', () => {
    const base = { url: 'mqtt://127.0.0.1:1883', project_id: 'p1', secret: 'x' };
    assert.equal(AgentConfigSchema.safeParse({ ...base, colour: 'blue' }).success, false);
    assert.equal(AgentConfigSchema.safeParse({ ...base, handlers: { host_exec: { shell: true } } }).success, false);
    assert.equal(AgentConfigSchema.safeParse({ ...base, project_id: 'a/b' }).success, false);
    assert.equal(AgentConfigSchema.safeParse({ ...base, secret: '' }).success, false);
    assert.equal(AgentConfigSchema.safeParse({ ...base, url: 'http://x' }).success, false);
    // MQTT over WebSocket (seed 004): ws:// and wss:// are broker URLs too
    for (const url of ['ws://hub.example:8080/mqtt', 'wss://hub.example/mqtt', 'mqtts://hub.example:8883']) {
      assert.equal(AgentConfigSchema.safeParse({ ...base, url }).success, true, url);
    }
    assert.equal(AgentConfigSchema.safeParse({ ...base, reconnect_min_ms: 10, reconnect_max_ms: 5 }).success, false);
  });
});

describe('agent parts', () => {
  test('backoff is capped exponential with full jitter', () => {
    assert.equal(
      backoffDelay(0, 500, 30_000, () => 0.999_999),
      499,
    );
    assert.equal(
      backoffDelay(3, 500, 30_000, () => 0.5),
      2000,
    );
    assert.equal(
      backoffDelay(50, 500, 30_000, () => 0.999_999),
      29_999,
    );
    assert.equal(
      backoffDelay(5, 500, 30_000, () => 0),
      0,
    );
    assert.equal(redactUrl('mqtt://user:pw@host:1883'), 'mqtt://host:1883');
  });

  test('UTF-8 splitting and capping never cut a character', () => {
    const text = 'aé€😀'.repeat(100);
    for (const max of [1, 3, 4, 7, 64]) {
      const parts = splitUtf8(text, max);
      assert.equal(parts.join(''), text);
      for (const p of parts) assert.ok(Buffer.byteLength(p) <= Math.max(max, 4));
    }
    const c = capUtf8(text, 10);
    assert.equal(c.truncated, true);
    assert.ok(Buffer.byteLength(c.text) <= 10);
    assert.ok(text.startsWith(c.text));
    assert.deepEqual(capUtf8('short', 100), { text: 'short', truncated: false });
  });

  test('log buffers flush at the size threshold, after the delay, and on close; seq counts per command', async () => {
    const out: LogChunk[] = [];
    const logs = new LogBuffers({ flushBytes: 10, flushMs: 30, timers, emit: (c) => out.push(c) });
    logs.append('a', '12345');
    assert.equal(out.length, 0);
    logs.append('a', '67890');
    assert.deepEqual(out, [{ command_id: 'a', seq: 0, content: '1234567890' }]);
    logs.append('a', 'x');
    logs.append('b', 'y');
    await until(() => out.length === 3, 2000, 'timed flushes');
    assert.deepEqual(
      out.slice(1).sort((p, q) => p.command_id.localeCompare(q.command_id)),
      [
        { command_id: 'a', seq: 1, content: 'x' },
        { command_id: 'b', seq: 0, content: 'y' },
      ],
    );
    logs.append('a', 'z');
    assert.equal(logs.close('a'), 3);
    assert.deepEqual(out.at(-1), { command_id: 'a', seq: 2, content: 'z' });
    logs.close('b');
    assert.equal(logs.size, 0);
  });

  test('echo returns the payload as JSON text', () => {
    const r = echo({ command_id: 'c', command_type: 'echo', payload: { a: [1, 'two'] }, deadline: 0 });
    assert.deepEqual(r, { status: 'success', exit_code: 0, output: '{"a":[1,"two"]}', error: '' });
  });

  test('host_exec: no shell, secrets kept out of the child environment, output capped, bad payloads refused', async () => {
    process.env.AGENT_TEST_SECRET = 'very-secret-value';
    const abort = new AbortController();
    const emitted: string[] = [];
    const hx = new HostExec({
      cfg: { enabled: true, allow: [process.execPath], timeout_ms: 10_000, max_output_bytes: 64, kill_grace_ms: 100 },
      secretValues: ['very-secret-value'],
      emit: (_id, content) => emitted.push(content),
      timers,
      log: silentLogger(),
      signal: abort.signal,
    });
    const req = (payload: unknown) => ({
      command_id: 'c1',
      command_type: 'host_exec',
      payload,
      deadline: Date.now() + 10_000,
    });
    try {
      const env = await hx.run(
        req({ command: process.execPath, args: ['-e', 'process.stdout.write(String(process.env.AGENT_TEST_SECRET))'] }),
      );
      assert.equal(env.status, 'success');
      assert.equal(env.output, 'undefined');
      const big = await hx.run(
        req({ command: process.execPath, args: ['-e', 'process.stdout.write("x".repeat(1000))'] }),
      );
      assert.equal(big.status, 'success');
      assert.match(big.output ?? '', /^x{64}\n\[output truncated at 64 bytes\]$/);
      assert.equal(emitted.join('').length >= 64, true);
      const failed = await hx.run(req({ command: process.execPath, args: ['-e', 'process.exit(3)'] }));
      assert.deepEqual([failed.status, failed.exit_code, failed.error], ['failure', 3, 'exited with code 3']);
      assert.throws(() => hx.run(req({ command: '/bin/sh', args: ['-c', 'id'] })), { code: 'AGENT_ERR_NOT_ALLOWED' });
      const missing = new HostExec({
        cfg: {
          enabled: true,
          allow: ['/nonexistent/tool'],
          timeout_ms: 1000,
          max_output_bytes: 64,
          kill_grace_ms: 100,
        },
        secretValues: [],
        emit: () => undefined,
        timers,
        log: silentLogger(),
        signal: abort.signal,
      });
      const enoent = await missing.run(req({ command: '/nonexistent/tool' }));
      assert.equal(enoent.status, 'failure');
      assert.match(enoent.error ?? '', /spawn failed: .*ENOENT/);
      assert.throws(() => hx.run(req({ command: process.execPath, shell: true })), { code: 'AGENT_ERR_INVALID' });
      assert.throws(() => hx.run(req({ command: 42 })), { code: 'AGENT_ERR_INVALID' });
      // the module stopping kills what runs
      const running = hx.run(req({ command: process.execPath, args: ['-e', 'setInterval(() => {}, 1000)'] }));
      await until(() => hx.running === 1, 2000, 'child running');
      abort.abort();
      const killed = await running;
      assert.equal(killed.status, 'failure');
      assert.match(killed.error ?? '', /SIGKILL/);
    } finally {
      abort.abort();
      delete process.env.AGENT_TEST_SECRET;
    }
  });
});
