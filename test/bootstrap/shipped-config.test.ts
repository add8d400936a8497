/**
 * The config files the repository ships (config.yml, examples/agent/config.yml) load and pass
 * every enabled module's schema under the environments the README documents, so `npm start`
 * and the agent example cannot be broken by an edit that only a running hub would catch.
 */
import assert from 'node:assert/strict';
import path from 'node:path';
import { describe, test } from 'node:test';
import { type HostConfig, loadConfig, validateSettings } from '../../core/config.js';
import { builtinProviders } from '../../modules/index.js';
import { REPO_ROOT } from '../helpers/process.js';

const registry = builtinProviders();

/** Loads a shipped file and validates each enabled module's settings; returns them by module name. */
function load(
  rel: string,
  env: NodeJS.ProcessEnv,
): { cfg: HostConfig; settings: Record<string, Record<string, unknown>> } {
  const cfg = loadConfig(path.join(REPO_ROOT, rel), env);
  const settings: Record<string, Record<string, unknown>> = {};
  for (const block of Object.values(cfg.modules)) {
    if (!block.enable) continue;
    const provider = registry.resolve(block.provider, `modules.${block.name}.provider`);
    settings[block.name] = validateSettings(block, provider.schema) as Record<string, unknown>;
  }
  return { cfg, settings };
}

describe('shipped config.yml', () => {
  test('with no environment: embedded broker on 1883, PGlite under ./data, the hub modules on, the agent off', () => {
    const { cfg, settings } = load('config.yml', {});
    assert.deepEqual(Object.keys(settings).sort(), [
      'audit',
      'broker',
      'command',
      'grpc',
      'jobs',
      'mqtt-bridge',
      'status',
      'web',
    ]);
    assert.equal(settings.audit.retention_days, 365);
    assert.equal(settings.status.history_retention_days, 30);
    assert.equal(cfg.modules.agent.enable, false);
    assert.equal(settings.broker.port, 1883);
    assert.equal(settings['mqtt-bridge'].url, 'mqtt://127.0.0.1:1883');
    assert.equal(settings.web.port, 8080);
    assert.equal(settings.grpc.port, 50051);
    assert.equal(settings.status.heartbeat_timeout_ms, 30_000);
    assert.equal(cfg.databases.default.driver, 'embedded');
    // relative to the working directory, as HUB_DATA_DIR is (npm start runs in the repository)
    assert.equal(cfg.databases.default.data_dir, './data/pglite');
    assert.equal(cfg.databases.default.server_dir, './data/postgres');
  });

  test('the documented variables take effect; secrets made of digits stay strings, leading zeros kept', () => {
    const { cfg, settings } = load('config.yml', {
      HUB_MQTT_PORT: '1884',
      HUB_HTTP_PORT: '18080',
      HUB_GRPC_PORT: '15051',
      HUB_API_TOKEN: '0123456789',
      HUB_MQTT_USERNAME: '42',
      HUB_MQTT_PASSWORD: '007',
      HUB_HEARTBEAT_TIMEOUT_MS: '5000',
      HUB_DB_DRIVER: 'pg',
      HUB_DATABASE_URL: 'postgres://postgres@127.0.0.1:5432/test',
    });
    assert.equal(settings.broker.port, 1884);
    assert.equal(settings['mqtt-bridge'].url, 'mqtt://127.0.0.1:1884');
    assert.equal(settings['mqtt-bridge'].username, '42');
    assert.equal(settings['mqtt-bridge'].password, '007');
    assert.equal(settings.web.port, 18080);
    assert.equal(settings.web.token, '0123456789');
    assert.equal(settings.grpc.port, 15051);
    assert.equal(settings.grpc.token, '0123456789');
    assert.equal(settings.status.heartbeat_timeout_ms, 5000);
    assert.equal(cfg.databases.default.driver, 'pg');
    assert.equal(cfg.databases.default.url, 'postgres://postgres@127.0.0.1:5432/test');
  });

  test('HUB_EMBEDDED_BROKER=false and HUB_MQTT_URL point the bridge at another broker', () => {
    const { settings } = load('config.yml', { HUB_EMBEDDED_BROKER: 'false', HUB_MQTT_URL: 'mqtt://broker.lan:1883' });
    assert.equal(settings.broker, undefined);
    assert.equal(settings['mqtt-bridge'].url, 'mqtt://broker.lan:1883');
  });
});

describe('shipped examples/agent/config.yml', () => {
  test('runs the agent module alone with the project and secret from the environment', () => {
    const { settings } = load('examples/agent/config.yml', {
      AGENT_PROJECT_ID: 'plant-7',
      AGENT_SECRET: '1234567890',
      HUB_MQTT_PORT: '1884',
    });
    assert.deepEqual(Object.keys(settings), ['agent']);
    assert.equal(settings.agent.project_id, 'plant-7');
    assert.equal(settings.agent.secret, '1234567890');
    assert.equal(settings.agent.url, 'mqtt://127.0.0.1:1884');
  });

  test('without AGENT_SECRET the error names the key and the variable', () => {
    assert.throws(
      () => load('examples/agent/config.yml', { AGENT_PROJECT_ID: 'plant-7' }),
      (err: Error & { code?: string }) => {
        assert.equal(err.code, 'HOST_ERR_CONFIG_ENV');
        assert.match(err.message, /modules\.agent\.secret/);
        assert.match(err.message, /AGENT_SECRET/);
        return true;
      },
    );
  });
});
