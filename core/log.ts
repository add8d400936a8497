import pino, { type Logger } from 'pino';

export type { Logger };

/**
 * The root logger: pino JSON on stdout. Secrets never reach it: config values that came from
 * the environment are redacted by key name (token, secret, password, url with credentials).
 */
export function createRootLogger(
  opts: { level?: string; name?: string; destination?: pino.DestinationStream } = {},
): Logger {
  const options: pino.LoggerOptions = {
    level: opts.level ?? process.env.LOG_LEVEL ?? 'info',
    name: opts.name ?? 'gmq-hub',
    base: { pid: process.pid },
    redact: {
      paths: ['*.secret', '*.password', '*.token', '*.api_token', 'secret', 'password', 'token', 'config.*.secret'],
      censor: '[redacted]',
    },
    timestamp: pino.stdTimeFunctions.isoTime,
  };
  return opts.destination ? pino(options, opts.destination) : pino(options);
}

/** A logger that writes nothing, for tests and benchmarks that do not want output. */
export function silentLogger(): Logger {
  return pino({ level: 'silent' });
}
