/**
 * Runs the hub: read config.yml (or $HUB_CONFIG), build the host with the built-in module
 * providers, start it, and wire the signals: SIGHUP reloads the config, SIGTERM and SIGINT stop
 * gracefully (a second one forces the exit). `npm start` (main.ts) and `gmq-hub start` (cli.ts)
 * both call this, so the two behave the same.
 */
import path from 'node:path';
import { errorCode } from '../core/errors.js';
import { Host } from '../core/host.js';
import { createRootLogger } from '../core/log.js';
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
export async function runHub(opts: RunHubOptions = {}): Promise<void> {
  const log = createRootLogger();
  const configFile = path.resolve(opts.configFile ?? process.env.HUB_CONFIG ?? './config.yml');
  let host: Host;
  try {
    host = new Host({ configFile, registry: builtinProviders(), log });
    await host.start();
  } catch (err) {
    // one clear line a person can act on, then the structured record
    const e = err as Error;
    process.stderr.write(`gmq-hub: ${errorCode(err) ? `${errorCode(err)}: ` : ''}${e.message}\n`);
    log.fatal({ err }, 'start failed');
    process.exit(1);
  }

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
