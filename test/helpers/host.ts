import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { isMap, parseDocument } from 'yaml';
import { Host } from '../../core/host.js';
import { type Logger, silentLogger } from '../../core/log.js';
import type { ProviderRegistry } from '../../core/registry.js';
import { scaled } from './wait.js';

export interface TestHost {
  host: Host;
  dir: string;
  file: string;
  /** Writes the config the way editors do (temp file + rename), which the watcher must see. */
  writeConfig(text: string): void;
  stop(): Promise<void>;
}

/**
 * The host's default start timeout (15 s) is a bound a test waits with like any other: a
 * python or worker module on a loaded machine takes longer to start. Unless the config sets
 * `host.start_timeout_ms` itself, it gets the default scaled by GMQ_TEST_TIME_SCALE; `writeConfig`
 * does the same, so a reload sees an unchanged host block. YAML that does not parse, or whose
 * `host` is not a mapping, is written as given (tests of bad configs).
 */
export function scaleHostBounds(yaml: string): string {
  const doc = parseDocument(yaml);
  if (doc.errors.length > 0 || !isMap(doc.contents)) return yaml;
  const host = doc.get('host', true);
  if (host != null && !isMap(host)) return yaml;
  if (doc.hasIn(['host', 'start_timeout_ms'])) return yaml;
  doc.setIn(['host', 'start_timeout_ms'], scaled(15_000));
  return doc.toString();
}

/** Starts a real host from YAML text in a fresh temp directory. */
export async function startHost(
  yaml: string,
  registry: ProviderRegistry,
  opts: { env?: NodeJS.ProcessEnv; watch?: boolean; log?: Logger; files?: Record<string, string> } = {},
): Promise<TestHost> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'gmq-host-'));
  const file = path.join(dir, 'config.yml');
  for (const [name, text] of Object.entries(opts.files ?? {})) fs.writeFileSync(path.join(dir, name), text);
  fs.writeFileSync(file, scaleHostBounds(yaml));
  const host = new Host({
    configFile: file,
    registry,
    log: opts.log ?? silentLogger(),
    env: { ...process.env, ...opts.env },
    watch: opts.watch ?? false,
  });
  await host.start();
  return {
    host,
    dir,
    file,
    writeConfig(text: string) {
      const tmp = `${file}.tmp-${process.pid}`;
      fs.writeFileSync(tmp, scaleHostBounds(text));
      fs.renameSync(tmp, file);
    },
    async stop() {
      await host.stop();
      fs.rmSync(dir, { recursive: true, force: true });
    },
  };
}
