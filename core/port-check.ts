import net from 'node:net';
import path from 'node:path';
import type { HostConfig } from './config.js';
import { errorCode, HubError } from './errors.js';

/** A TCP port a module will listen on: its setting `port` (and `host`, when it has one). */
export interface PlannedPort {
  module: string;
  port: number;
  host: string;
}

/**
 * The ports the modules of a plan will listen on, read from the convention every listening
 * module follows: a setting named `port` (0 = any free port, not checked) and an optional `host`.
 * Without `host` the check binds the loopback address: a port taken there is taken for any
 * address the module may pick, so the check never refuses a port the module could have used.
 */
export function plannedPorts(modules: Iterable<{ name: string; settings: unknown }>): PlannedPort[] {
  const out: PlannedPort[] = [];
  for (const m of modules) {
    const s = m.settings as { port?: unknown; host?: unknown } | null | undefined;
    if (typeof s?.port !== 'number' || !Number.isInteger(s.port) || s.port <= 0) continue;
    out.push({ module: m.name, port: s.port, host: typeof s.host === 'string' ? s.host : '127.0.0.1' });
  }
  return out;
}

/**
 * Binds and releases each planned port, all at once, before any module starts: a taken port is
 * reported in milliseconds, not after the database (a fresh PGlite takes tens of seconds) and
 * every module before the listening one have started. Throws the first HOST_ERR_PORT_IN_USE.
 */
export async function checkPorts(ports: PlannedPort[], cfg: HostConfig): Promise<void> {
  const results = await Promise.all(ports.map((p) => tryBind(p)));
  const taken = ports.find((_, i) => results[i] === 'EADDRINUSE');
  if (taken) throw portInUse(cfg, taken.module, taken.port);
}

function tryBind(p: PlannedPort): Promise<string | null> {
  return new Promise((resolve) => {
    const srv = net.createServer();
    srv.once('error', (err: NodeJS.ErrnoException) => resolve(err.code ?? 'error'));
    // an address the machine does not have (EADDRNOTAVAIL) is the module's own error to report
    srv.listen({ port: p.port, host: p.host, exclusive: true }, () => srv.close(() => resolve(null)));
  });
}

/**
 * HOST_ERR_PORT_IN_USE for `modules.<module>.port`, with the hint this config file supports:
 * the variable the block names in `port_env`, else the one the file reads the port from
 * (`set HUB_HTTP_PORT to another port`), and the one that disables the module if the file has
 * one; or, when the file has a literal port, the key to change. A module's own error names the
 * variable of the shipped config, which may not be in this file at all.
 */
export function portInUse(cfg: HostConfig, module: string, port: number, cause?: unknown): HubError {
  const key = `modules.${module}.port`;
  const named = cfg.modules[module]?.settings.port_env;
  const portVar = typeof named === 'string' && named ? named : cfg.envVars[key]?.[0];
  const enableVar = cfg.envVars[`modules.${module}.enable`]?.[0];
  let hint = portVar ? `set ${portVar} to another port` : `change ${key} in ${displayPath(cfg.file)}`;
  if (enableVar) hint += ` or ${enableVar}=false to disable modules.${module}`;
  return new HubError(
    'HOST_ERR_PORT_IN_USE',
    `port ${port} is in use (${hint})`,
    { module, port, path: key, ...(portVar ? { env: portVar } : {}) },
    cause === undefined ? undefined : { cause },
  );
}

/** A module's start error about its own port, re-worded with this file's hint; other errors as they are. */
export function withPortHint(err: unknown, cfg: HostConfig, module: string, settings: unknown): unknown {
  if (errorCode(err) !== 'HOST_ERR_PORT_IN_USE') return err;
  const port = (settings as { port?: unknown } | null | undefined)?.port;
  const said = (err as HubError).details?.port;
  if (typeof port !== 'number' || (said !== undefined && said !== port)) return err;
  return portInUse(cfg, module, port, err);
}

function displayPath(file: string): string {
  const rel = path.relative(process.cwd(), file);
  return rel && !rel.startsWith('..') && !path.isAbsolute(rel) ? rel : file;
}
