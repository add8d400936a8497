/**
 * How the hub starts PGlite, shared by the hub's process (db.ts) and the child that creates a
 * fresh data directory (pglite-init-child.ts), so both run the same server settings.
 *
 * `shared_buffers`: PGlite's PostgreSQL defaults to 128 MB of buffers inside the WebAssembly
 * heap, which grows as pages are touched and never returns memory to the system. Measured on
 * this machine with 100 000 rows read back: 339 MB resident at 128 MB, 221 MB at 16 MB (bench
 * `memory` measures the hub); the hub keeps its hot rows (projects, presence) in its own
 * read models, so the buffers are a second copy.
 */
import { fork } from 'node:child_process';
import fs from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { PGlite } from '@electric-sql/pglite';

let loaded: typeof PGlite | undefined;

/**
 * PGlite, loaded on first use, through its CommonJS build, the one knex-pglite requires: a hub
 * whose databases are on a PostgreSQL server (the embedded server by default) never loads it,
 * and one that uses it loads one copy, not the ESM and CommonJS builds both (3–5 MB resident).
 */
export function pgliteClass(): typeof PGlite {
  loaded ??= (createRequire(import.meta.url)('@electric-sql/pglite') as { PGlite: typeof PGlite }).PGlite;
  return loaded;
}

/** The default `shared_buffers` of an embedded database (config.yml `databases.<name>.shared_buffers`). */
export const PGLITE_SHARED_BUFFERS = '32MB';

/** PGlite's own start parameters plus ours. */
export function pgliteStartParams(sharedBuffers = PGLITE_SHARED_BUFFERS): string[] {
  return [...pgliteClass().defaultStartParams, '-c', `shared_buffers=${sharedBuffers}`];
}

/**
 * Creates a fresh data directory (PGlite's initdb) in a short-lived child process, so the
 * hub's own process never holds the memory initdb grows the WebAssembly heap to (measured here:
 * 770 MB resident after an in-process init against 170 MB for the same directory opened
 * afterwards; a WebAssembly heap never shrinks). Returns false when the directory holds a
 * database already; throws (with the child's last words) when the child failed.
 */
export async function initDataDirApart(dataDir: string, sharedBuffers?: string): Promise<boolean> {
  if (fs.existsSync(path.join(dataDir, 'PG_VERSION'))) return false;
  fs.mkdirSync(dataDir, { recursive: true });
  const child = fork(
    fileURLToPath(new URL('./pglite-init-child.js', import.meta.url)),
    [dataDir, sharedBuffers ?? ''],
    {
      stdio: ['ignore', 'ignore', 'pipe', 'ipc'],
    },
  );
  let stderr = '';
  child.stderr?.on('data', (d: Buffer) => {
    stderr = (stderr + d.toString('utf8')).slice(-2000);
  });
  const code = await new Promise<number | null>((resolve) => {
    child.once('error', () => resolve(null));
    child.once('exit', (c) => resolve(c));
  });
  if (code !== 0)
    throw new Error(`creating the embedded database in ${dataDir} failed (exit ${code}): ${stderr.trim()}`);
  return true;
}
