import { createRequire } from 'node:module';
import pino, { type Logger } from 'pino';
import type PinoPretty from 'pino-pretty';
import { isoOfMs } from './iso-time.js';
import { logDestination, logFlushMs } from './log-destination.js';
import { CENSOR, redactSecrets, SECRET_KEYS } from './log-redact.js';

export type { Logger };

/**
 * `pretty` (one coloured line per record) when stdout is a terminal, `json` otherwise (a pipe, a
 * file, a log collector, a test) and always under `NODE_ENV=production` (a production process on
 * a terminal, `docker run -t`, still feeds a collector). `LOG_FORMAT=json|pretty` overrides. A
 * person at a terminal reads lines; everything else parses JSON, so the default follows who is
 * reading.
 */
export function logFormat(
  env: NodeJS.ProcessEnv = process.env,
  tty = process.stdout.isTTY === true,
): 'json' | 'pretty' {
  const f = env.LOG_FORMAT?.trim().toLowerCase();
  if (f === 'json' || f === 'pretty') return f;
  if (env.NODE_ENV?.trim().toLowerCase() === 'production') return 'json';
  return tty ? 'pretty' : 'json';
}

/**
 * The root logger: pino JSON on stdout (pretty lines on a terminal: `logFormat`). Secrets never
 * reach it: a logged object's secret, password, token and api_token values are written as
 * `[redacted]` (log-redact.ts: the object's own keys and two levels down); pino's `redact`
 * keeps only the top-level names, which costs nothing on a line without them and also covers
 * a child logger's bindings.
 */
export function createRootLogger(
  opts: { level?: string; name?: string; destination?: pino.DestinationStream } = {},
): Logger {
  const options: pino.LoggerOptions = {
    level: opts.level ?? process.env.LOG_LEVEL ?? 'info',
    name: opts.name ?? 'gmq-hub',
    base: { pid: process.pid },
    redact: { paths: [...SECRET_KEYS], censor: CENSOR },
    formatters: { log: redactSecrets },
    // pino's isoTime (`new Date(Date.now()).toISOString()`), the same text without a Date a line
    timestamp: () => `,"time":"${isoOfMs(Date.now())}"`,
  };
  if (opts.destination) return pino(options, opts.destination);
  if (logFormat() === 'pretty') {
    // in this thread, synchronously: no transport worker, and nothing lost on process.exit()
    // loaded only here: a process logging JSON (production, a pipe) never loads pino-pretty
    const pretty = createRequire(import.meta.url)('pino-pretty') as typeof PinoPretty;
    return pino(
      options,
      pretty({
        colorize: process.stdout.isTTY === true,
        sync: true,
        singleLine: true,
        translateTime: 'SYS:HH:MM:ss.l',
      }),
    );
  }
  // stdout without re-measuring its buffer per line: a regular file a turn at a time, a pipe or a
  // socket asynchronously, in batches when LOG_FLUSH_MS asks; what is held is written at exit
  return pino(options, logDestination({ flushMs: logFlushMs() }));
}

/**
 * The name a process logs under: `gmq-agent` when the agent module is the only enabled module of
 * the hub's own kind (a field agent, examples/agent/config.yml), `gmq-hub` otherwise, so a log
 * collector (or a person with two terminals) tells the two apart.
 */
export function processName(config: {
  modules: Readonly<Record<string, { provider: string; enable: boolean }>>;
}): string {
  const enabled = Object.values(config.modules).filter((m) => m.enable);
  const agent = enabled.some((m) => m.provider === 'agent');
  const hubSide = enabled.some((m) => HUB_PROVIDERS.has(m.provider));
  return agent && !hubSide ? 'gmq-agent' : 'gmq-hub';
}

const HUB_PROVIDERS = new Set(['broker', 'mqtt-bridge', 'status', 'command', 'web', 'grpc']);

/** A logger that writes nothing, for tests and benchmarks that do not want output. */
export function silentLogger(): Logger {
  return pino({ level: 'silent' });
}
