/**
 * Runs the hub: read config.yml (or $HUB_CONFIG), build the host with the built-in module
 * providers, start it, and wire the signals: SIGHUP reloads the config, SIGTERM and SIGINT stop
 * gracefully (a second one forces the exit). `npm start` (main.ts) and `gmq-hub start` (cli.ts)
 * both call this, so the two behave the same.
 */
import path from 'node:path';
import type { HostConfig } from '../core/config.js';
import { loadConfig } from '../core/config.js';
import { errorCode } from '../core/errors.js';
import { Host } from '../core/host.js';
import { createRootLogger, type Logger, processName } from '../core/log.js';
import { builtinProviders } from '../modules/index.js';

export interface RunHubOptions {
  /** The config file; default $HUB_CONFIG, else ./config.yml. */
  configFile?: string;
}

/**
 * Starts the hub and owns the process from then on: it exits 1 with one clear line on stderr
 * when the start fails, and exits 0 (or 1) after a signal-driven stop.
 *
 * @example
 *   await runHub(); // as `npm start`
 */
/** Start refusals whose fix is in the operator's hands, logged without a stack. */
const OPERATOR_FIXES = new Set([
  'HOST_ERR_CONFIG_READ',
  'HOST_ERR_CONFIG_YAML',
  'HOST_ERR_CONFIG_INVALID',
  'HOST_ERR_CONFIG_ENV',
  'HOST_ERR_PORT_IN_USE',
  'DB_ERR_DATA_DIR_LOCKED',
]);

/** The one line on stderr a person can act on: `gmq-hub: CODE: message`. */
function writeRefusal(err: unknown): void {
  const code = errorCode(err);
  process.stderr.write(`gmq-hub: ${code ? `${code}: ` : ''}${(err as Error).message}\n`);
}

export async function runHub(opts: RunHubOptions = {}): Promise<void> {
  const configFile = path.resolve(opts.configFile ?? process.env.HUB_CONFIG ?? './config.yml');
  let log: Logger;
  try {
    log = createRootLogger();
  } catch (err) {
    // a logging variable it cannot take (LOG_LEVEL, LOG_FLUSH_MS): no logger to say it with
    writeRefusal(err);
    process.exit(1);
  }
  let host: Host;
  try {
    // read first, so the logger is named for what this process is (a hub or an agent)
    const config = loadConfig(configFile);
    log = createRootLogger({ name: processName(config) });
    host = new Host({ configFile, config, registry: builtinProviders(), log });
    await host.start();
  } catch (err) {
    // one clear line a person can act on, then the structured record
    const e = err as Error;
    const code = errorCode(err);
    writeRefusal(err);
    // the operator's to fix (a config value, a taken port, a second hub on the data directory):
    // the record says what and where, without a stack that would read like a crash of the hub
    if (code && OPERATOR_FIXES.has(code)) log.fatal({ code, reason: e.message }, 'start refused');
    else log.fatal({ err }, 'start failed');
    process.exit(1);
  }
  logAgentHint(host.currentConfig, log);

  let stopping = false;
  const stop = (signal: string) => {
    if (stopping) {
      log.warn({ signal }, 'second signal: exiting now');
      process.exit(1);
    }
    stopping = true;
    log.info({ signal }, 'stopping');
    const force = setTimeout(() => {
      log.error('graceful stop took too long; exiting');
      process.exit(1);
    }, host.currentConfig.host.shutdown_timeout_ms);
    force.unref();
    host.stop().then(
      () => {
        process.removeAllListeners('SIGHUP');
        process.exit(0);
      },
      (err) => {
        log.error({ err }, 'stop failed');
        process.exit(1);
      },
    );
  };
  process.on('SIGTERM', () => stop('SIGTERM'));
  process.on('SIGINT', () => stop('SIGINT'));
  process.on('SIGHUP', () => {
    log.info('SIGHUP: reloading config');
    void host.reload();
  });
  process.on('uncaughtException', (err) => {
    log.fatal({ err }, 'uncaught exception');
    stop('uncaughtException');
  });
  process.on('unhandledRejection', (err) => {
    log.error({ err }, 'unhandled rejection');
  });
}

/**
 * One line telling the operator how an agent reaches this hub's broker: the agent's config
 * (examples/agent/config.yml) reads HUB_MQTT_URL, so the line names it with the URL the hub's own
 * bridge uses. An agent started without it goes to 1883, which on a machine with its own
 * Mosquitto is not this hub (issue 15, item 1).
 */
function logAgentHint(config: HostConfig, log: Logger): void {
  const bridge = Object.values(config.modules).find((m) => m.provider === 'mqtt-bridge' && m.enable);
  const url = bridge?.settings.url;
  if (typeof url !== 'string') return;
  let shown: string;
  try {
    const u = new URL(url);
    u.username = '';
    u.password = '';
    shown = u.toString().replace(/\/$/, '');
  } catch {
    return;
  }
  log.info(
    {
      mqtt_url: shown,
      agent_command: `HUB_MQTT_URL=${shown} AGENT_PROJECT_ID=<project> AGENT_SECRET=<secret> HUB_DATA_DIR=./data/agent HUB_CONFIG=examples/agent/config.yml npm start`,
    },
    `agents connect to ${shown}`,
  );
}
