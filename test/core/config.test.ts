// biome-ignore-all lint/suspicious/noTemplateCurlyInString: the YAML under test is full of literal ${VAR} expressions
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import { z } from 'zod';
import {
  deepFreeze,
  type HostConfig,
  loadConfig,
  moduleOrder,
  parseConfig,
  redactConfig,
  validateSettings,
} from '../../core/config.js';

const parse = (yaml: string, env: NodeJS.ProcessEnv = {}): HostConfig => parseConfig(yaml, 'config.yml', env);

/** Asserts that parsing throws a HubError with this code whose message contains every fragment. */
function rejects(yaml: string, code: string, ...fragments: string[]): void {
  assert.throws(
    () => parse(yaml),
    (err: Error & { code?: string }) => {
      assert.equal(err.code, code, err.message);
      for (const f of fragments) assert.ok(err.message.includes(f), `"${err.message}" should contain "${f}"`);
      return true;
    },
  );
}

test('env: a whole-value expression is re-typed as a YAML scalar', () => {
  const cfg = parse(
    ['modules:', '  broker:', '    enable: ${EMB:-true}', '    port: ${PORT:-1883}', '    ratio: ${R:-0.5}'].join('\n'),
  );
  assert.equal(cfg.modules.broker.enable, true);
  assert.deepEqual(cfg.modules.broker.settings, { port: 1883, ratio: 0.5 });

  const off = parse('modules:\n  broker:\n    enable: ${EMB:-true}\n    port: ${PORT}\n', {
    EMB: 'false',
    PORT: '2883',
  });
  assert.equal(off.modules.broker.enable, false);
  assert.equal(off.modules.broker.settings.port, 2883);
});

test('env: quoted whole-value expressions stay strings', () => {
  const cfg = parse('modules:\n  web:\n    token: "${TOKEN}"\n', { TOKEN: '007' });
  assert.equal(cfg.modules.web.settings.token, '007');
});

test('env: inline expressions, defaults, empty defaults and $${ escapes', () => {
  const yaml = [
    'modules:',
    '  bridge:',
    '    url: mqtt://127.0.0.1:${HUB_MQTT_PORT:-1883}',
    '    set: mqtt://${HOST}:${HUB_MQTT_PORT:-1883}/x',
    '    empty: ${NOT_SET:-}',
    '    empty_inline: a${NOT_SET:-}b',
    '    escaped: $${HOME} costs $5 {ok}',
    '    nested: ${URL:-mqtt://h:${HUB_MQTT_PORT:-1883}}',
    '    set_but_empty: ${BLANK:-fallback}',
  ].join('\n');
  const s = parse(yaml, { HOST: 'broker.local', BLANK: '' }).modules.bridge.settings;
  assert.equal(s.url, 'mqtt://127.0.0.1:1883');
  assert.equal(s.set, 'mqtt://broker.local:1883/x');
  assert.equal(s.empty, '');
  assert.equal(s.empty_inline, 'ab');
  assert.equal(s.escaped, '${HOME} costs $5 {ok}');
  assert.equal(s.nested, 'mqtt://h:1883');
  assert.equal(s.set_but_empty, 'fallback');
  assert.equal(parse(yaml, { HOST: 'h', HUB_MQTT_PORT: '9' }).modules.bridge.settings.nested, 'mqtt://h:9');
});

test('env: an unset variable without default names the key and the variable', () => {
  rejects(
    'modules:\n  web:\n    token: ${HUB_API_TOKEN}\n',
    'HOST_ERR_CONFIG_ENV',
    'config.yml',
    'modules.web.token: environment variable HUB_API_TOKEN is not set',
  );
  rejects('modules:\n  web:\n    list: [a, "x${NOPE}"]\n', 'HOST_ERR_CONFIG_ENV', 'modules.web.list.1', 'NOPE');
  rejects('modules:\n  web:\n    bad: "${not valid}"\n', 'HOST_ERR_CONFIG_ENV', 'modules.web.bad', 'bad substitution');
});

test('env: keys are not substituted', () => {
  const cfg = parse('modules:\n  m:\n    ${KEY}: 1\n', { KEY: 'x' });
  assert.deepEqual(cfg.modules.m.settings, { '${KEY}': 1 });
});

test('defaults for host, module host keys and an empty module block', () => {
  const cfg = parse('modules:\n  status:\n');
  assert.deepEqual(cfg.host, {
    shutdown_timeout_ms: 10000,
    drain_timeout_ms: 5000,
    reload_debounce_ms: 200,
    start_timeout_ms: 60000,
    heap_growing_percent: 50,
    heap_headroom_mb: 0,
  });
  assert.deepEqual(cfg.databases, {});
  const m = cfg.modules.status;
  assert.equal(m.name, 'status');
  assert.equal(m.type, 'inner');
  assert.equal(m.provider, 'status');
  assert.equal(m.enable, true);
  assert.deepEqual(m.depends_on, []);
  assert.equal(m.start_timeout_ms, 60000);
  assert.equal(m.stop_timeout_ms, 5000);
  assert.deepEqual(m.mailbox, { capacity: 10000, overflow: 'block', block_timeout_ms: 1000 });
  assert.deepEqual(m.restart, { initial_ms: 1000, max_ms: 30000 });
  assert.deepEqual(m.args, []);
  assert.deepEqual(m.env, {});
  assert.deepEqual(m.settings, {});
  assert.deepEqual(parse('').modules, {}, 'an empty file is a host with no modules');
});

test('host.start_timeout_ms is the per-module default; settings hold only non-host keys', () => {
  const cfg = parse(
    'host:\n  start_timeout_ms: 3000\nmodules:\n  a:\n    provider: status\n    mailbox: {capacity: 5}\n    heartbeat_timeout_ms: 1\n  b:\n    start_timeout_ms: 7\n',
  );
  assert.equal(cfg.modules.a.start_timeout_ms, 3000);
  assert.equal(cfg.modules.a.provider, 'status');
  assert.deepEqual(cfg.modules.a.mailbox, { capacity: 5, overflow: 'block', block_timeout_ms: 1000 });
  assert.deepEqual(cfg.modules.a.settings, { heartbeat_timeout_ms: 1 });
  assert.equal(cfg.modules.b.start_timeout_ms, 7);
});

test('worker path and exe cwd resolve against the config directory', () => {
  const cfg = parseConfig(
    'modules:\n  w:\n    type: worker\n    path: ./w.mjs\n  e:\n    type: exe\n    command: python3\n    args: [-u, 8080]\n    env: {PORT: 1}\n    cwd: sub\n',
    '/srv/hub/config.yml',
    {},
  );
  assert.equal(cfg.file, '/srv/hub/config.yml');
  assert.equal(cfg.dir, '/srv/hub');
  assert.equal(cfg.modules.w.path, '/srv/hub/w.mjs');
  assert.equal(cfg.modules.e.cwd, '/srv/hub/sub');
  assert.deepEqual(cfg.modules.e.args, ['-u', '8080']);
  assert.deepEqual(cfg.modules.e.env, { PORT: '1' });
});

test('databases: pglite default driver; pg requires a url', () => {
  const cfg = parse(
    'databases:\n  default:\n    data_dir: memory://\n  main:\n    driver: pg\n    url: postgres://x/y\n',
  );
  assert.deepEqual(cfg.databases.default, { driver: 'pglite', data_dir: 'memory://' });
  assert.equal(cfg.databases.main.url, 'postgres://x/y');
  rejects(
    'databases:\n  main:\n    driver: pg\n',
    'HOST_ERR_CONFIG_INVALID',
    'databases.main.url: required when driver is pg',
  );
  rejects(
    'databases:\n  main:\n    driver: pg\n    url: x\n    pool: {min: 1, max: 2, idle: 3}\n',
    'HOST_ERR_CONFIG_INVALID',
    'databases.main.pool.idle: unknown key',
  );
  // a pool that sets only min leaves max to the driver's default (db.ts), so nothing is filled in here
  assert.deepEqual(parse('databases:\n  default:\n    pool: {min: 2}\n').databases.default.pool, { min: 2 });
  rejects(
    'databases:\n  main:\n    driver: pg\n    url: x\n    pool: {min: 3, max: 2}\n',
    'HOST_ERR_CONFIG_INVALID',
    'databases.main.pool.min: must not exceed pool.max',
  );
  assert.equal(parse('databases:\n  default:\n    shared_buffers: 16MB\n').databases.default.shared_buffers, '16MB');
  rejects(
    'databases:\n  default:\n    shared_buffers: lots\n',
    'HOST_ERR_CONFIG_INVALID',
    'databases.default.shared_buffers: a size such as 32MB (kB, MB or GB)',
  );
  assert.equal(
    parse('databases:\n  default:\n    prepared_statements: false\n').databases.default.prepared_statements,
    false,
  );
  rejects(
    'databases:\n  default:\n    prepared_statements: "no"\n',
    'HOST_ERR_CONFIG_INVALID',
    'databases.default.prepared_statements: expected boolean, received string',
  );
});

test('rejections name the file, the dotted key and the reason', () => {
  rejects(
    'host:\n  shutdown_timeout: 1\n',
    'HOST_ERR_CONFIG_INVALID',
    'config.yml: host.shutdown_timeout: unknown key',
  );
  rejects('modulez: {}\n', 'HOST_ERR_CONFIG_INVALID', 'config.yml: modulez: unknown key');
  rejects(
    'modules:\n  broker:\n    mailbox: {overflow: fast}\n',
    'HOST_ERR_CONFIG_INVALID',
    'config.yml: modules.broker.mailbox.overflow: expected one of block|drop-oldest|reject',
  );
  rejects(
    'modules:\n  b:\n    restart: {initial: 1}\n',
    'HOST_ERR_CONFIG_INVALID',
    'modules.b.restart.initial: unknown key',
  );
  rejects(
    'modules:\n  b:\n    type: dll\n',
    'HOST_ERR_CONFIG_INVALID',
    'modules.b.type: expected one of inner|worker|exe',
  );
  rejects(
    'modules:\n  b:\n    stop_timeout_ms: fast\n',
    'HOST_ERR_CONFIG_INVALID',
    'modules.b.stop_timeout_ms: expected number',
  );
  rejects(
    'modules:\n  My_Module: {}\n',
    'HOST_ERR_CONFIG_INVALID',
    'config.yml: modules.My_Module: module name must match',
  );
  rejects(
    'modules:\n  w:\n    type: worker\n',
    'HOST_ERR_CONFIG_INVALID',
    'modules.w.path: required when type is worker',
  );
  rejects('modules:\n  e:\n    type: exe\n', 'HOST_ERR_CONFIG_INVALID', 'modules.e.command: required when type is exe');
  rejects(
    'modules:\n  i:\n    command: ls\n',
    'HOST_ERR_CONFIG_INVALID',
    'modules.i.command: only allowed when type is exe',
  );
  rejects('modules:\n  s: 5\n', 'HOST_ERR_CONFIG_INVALID', 'modules.s: expected a mapping');
});

test('depends_on: unknown module, cycle and disabled dependency', () => {
  rejects(
    'modules:\n  web:\n    depends_on: [db]\n',
    'HOST_ERR_CONFIG_INVALID',
    'config.yml: modules.web.depends_on: unknown module "db"',
  );
  rejects(
    'modules:\n  a: {depends_on: [b]}\n  b: {depends_on: [c]}\n  c: {depends_on: [a]}\n',
    'HOST_ERR_CONFIG_INVALID',
    'dependency cycle a -> b -> c -> a',
  );
  rejects('modules:\n  a: {depends_on: [a]}\n', 'HOST_ERR_CONFIG_INVALID', 'dependency cycle a -> a');
  rejects(
    'modules:\n  broker: {enable: false}\n  bridge: {depends_on: [broker]}\n',
    'HOST_ERR_DEPENDENCY',
    '"bridge" depends on "broker"',
  );
});

test('YAML syntax errors carry the line number', () => {
  assert.throws(
    () => parse('host:\n  shutdown_timeout_ms: 1\nmodules:\n  a: b: c\n'),
    (err: Error & { code?: string; details?: { line?: number } }) => {
      assert.equal(err.code, 'HOST_ERR_CONFIG_YAML');
      assert.match(err.message, /^config\.yml: line 4, column \d+: /);
      assert.equal(err.details?.line, 4);
      return true;
    },
  );
});

test('fingerprint: key order does not matter, a changed setting does', () => {
  const a = parse('modules:\n  m:\n    x: 1\n    y: {p: 1, q: 2}\n    enable: true\n').modules.m;
  const b = parse('modules:\n  m:\n    y: {q: 2, p: 1}\n    x: 1\n').modules.m;
  const c = parse('modules:\n  m:\n    x: 2\n    y: {p: 1, q: 2}\n').modules.m;
  const d = parse('host: {start_timeout_ms: 1}\nmodules:\n  m:\n    x: 1\n    y: {p: 1, q: 2}\n').modules.m;
  assert.equal(a.fingerprint, b.fingerprint);
  assert.notEqual(a.fingerprint, c.fingerprint);
  assert.notEqual(a.fingerprint, d.fingerprint, 'an inherited default is part of the block');
});

test('validateSettings: error path is modules.<name>.<key>; result is frozen', () => {
  const schema = z.strictObject({
    heartbeat_timeout_ms: z.number().int().positive().default(30000),
    retention: z.strictObject({ days: z.number().default(7) }).prefault({}),
  });
  const block = parse('modules:\n  status:\n    heartbeat_timeout_ms: soon\n    retention: {days: x}\n').modules.status;
  assert.throws(
    () => validateSettings(block, schema),
    (err: Error & { code?: string; details?: { issues?: string[] } }) => {
      assert.equal(err.code, 'HOST_ERR_CONFIG_INVALID');
      assert.match(err.message, /^modules\.status\.heartbeat_timeout_ms: expected number/);
      assert.equal(err.details?.issues?.length, 2);
      assert.match(err.details?.issues?.[1] ?? '', /^modules\.status\.retention\.days: /);
      return true;
    },
  );
  const ok = validateSettings(parse('modules:\n  status:\n').modules.status, schema);
  assert.deepEqual(ok, { heartbeat_timeout_ms: 30000, retention: { days: 7 } });
  assert.ok(Object.isFrozen(ok.retention));
});

test('the whole result is deep-frozen', () => {
  const cfg = parse('databases:\n  default: {driver: pglite}\nmodules:\n  m:\n    deep: {list: [{a: 1}]}\n', {});
  const s = cfg.modules.m.settings as { deep: { list: { a: number }[] } };
  assert.throws(() => {
    s.deep.list[0].a = 2;
  }, TypeError);
  assert.throws(() => {
    (cfg.modules.m as { enable: boolean }).enable = false;
  }, TypeError);
  assert.throws(() => {
    (cfg.host as { drain_timeout_ms: number }).drain_timeout_ms = 0;
  }, TypeError);
  assert.throws(() => {
    (cfg.databases as Record<string, unknown>).other = {};
  }, TypeError);
  assert.throws(() => (cfg.envPaths as Set<string>).add('x'), TypeError);
  assert.ok(Object.isFrozen(cfg.raw));
  assert.ok(Object.isFrozen(deepFreeze({ a: [{ b: 1 }] }).a[0]));
});

test('redactConfig replaces every environment-derived value', () => {
  const cfg = parse(
    'modules:\n  web:\n    token: ${HUB_API_TOKEN}\n    port: ${PORT:-8080}\n    url: http://x:${HOST_PORT}\n    plain: visible\n    list: ["${HUB_API_TOKEN}", b]\n',
    { HUB_API_TOKEN: 's3cret', HOST_PORT: '1' },
  );
  assert.deepEqual([...cfg.envPaths].sort(), ['modules.web.list.0', 'modules.web.token', 'modules.web.url']);
  const red = redactConfig(cfg);
  assert.deepEqual(red, {
    modules: { web: { token: '[env]', port: 8080, url: '[env]', plain: 'visible', list: ['[env]', 'b'] } },
  });
  assert.ok(!JSON.stringify(red).includes('s3cret'));
  assert.equal((cfg.modules.web.settings as { token: string }).token, 's3cret', 'the config itself is untouched');
});

test('moduleOrder: dependencies first, file order otherwise, disabled left out', () => {
  const cfg = parse(
    [
      'modules:',
      '  web: {depends_on: [status, db]}',
      '  status: {depends_on: [db]}',
      '  grpc: {}',
      '  db: {}',
      '  off: {enable: false}',
      '  command: {depends_on: [web]}',
    ].join('\n'),
  );
  assert.deepEqual(moduleOrder(cfg.modules), ['grpc', 'db', 'status', 'web', 'command']);
});

test('loadConfig reads the file; a missing file is HOST_ERR_CONFIG_READ', () => {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'gmq-config-'));
  try {
    const file = path.join(dir, 'config.yml');
    writeFileSync(file, 'modules:\n  status:\n    port: ${P:-1}\n');
    const cfg = loadConfig(file, {});
    assert.equal(cfg.file, file);
    assert.equal(cfg.modules.status.settings.port, 1);
    assert.throws(
      () => loadConfig(path.join(dir, 'missing.yml'), {}),
      (err: Error & { code?: string }) => err.code === 'HOST_ERR_CONFIG_READ' && err.message.includes('missing.yml'),
    );
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
