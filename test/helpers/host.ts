import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Host } from '../../core/host.js';
import { type Logger, silentLogger } from '../../core/log.js';
import type { ProviderRegistry } from '../../core/registry.js';

export interface TestHost {
  host: Host;
  dir: string;
  file: string;
  /** Writes the config the way editors do (temp file + rename), which the watcher must see. */
  writeConfig(text: string): void;
  stop(): Promise<void>;
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
  fs.writeFileSync(file, yaml);
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
      fs.writeFileSync(tmp, text);
      fs.renameSync(tmp, file);
    },
    async stop() {
      await host.stop();
      fs.rmSync(dir, { recursive: true, force: true });
    },
  };
}
