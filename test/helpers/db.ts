import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { PGlite } from '@electric-sql/pglite';
import pg from 'pg';
import type { DbConfig } from '../../core/services/db.js';

/** The local test server; trust auth, so no password in the default. */
export const TEST_DATABASE_URL = process.env.TEST_DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/test';

/**
 * A fresh random schema (`t_<hex>`) on the test server, so test files running at once on the
 * same database never see each other's tables. `drop()` removes it with everything in it.
 *
 * @example
 *   const { config, drop } = await withPgSchema();
 *   const pool = new DbPool({ default: config }, silentLogger());
 *   try { ... } finally { await pool.close(); await drop(); }
 */
export async function withPgSchema(): Promise<{ config: DbConfig; drop(): Promise<void> }> {
  const schema = `t_${randomBytes(6).toString('hex')}`;
  await adminQuery(`CREATE SCHEMA "${schema}"`);
  return {
    config: { driver: 'pg', url: TEST_DATABASE_URL, schema },
    drop: () => adminQuery(`DROP SCHEMA IF EXISTS "${schema}" CASCADE`),
  };
}

async function adminQuery(sql: string): Promise<void> {
  const client = new pg.Client({ connectionString: TEST_DATABASE_URL, connectionTimeoutMillis: 5_000 });
  await client.connect();
  try {
    await client.query(sql);
  } finally {
    await client.end();
  }
}

let template: string | undefined;

/**
 * A PGlite config in a fresh temporary data dir; `cleanup()` deletes it (close the pool first).
 * PGlite's initdb costs seconds per directory; after `await preparePgliteTemplate()` the
 * directory starts as a copy of one initialised (and closed) cluster instead, which opens in
 * a few hundred milliseconds.
 */
export function tempPgliteConfig(): { config: DbConfig; cleanup(): void } {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'gmq-db-'));
  if (template) fs.cpSync(template, dir, { recursive: true });
  return {
    config: { driver: 'pglite', data_dir: dir },
    cleanup: () => fs.rmSync(dir, { recursive: true, force: true }),
  };
}

/**
 * Like `preparePgliteTemplate()`, but the initialised cluster is kept in the temp directory for
 * every test process of this machine (keyed by the PGlite version), so only the first run pays
 * for initdb, which takes seconds, and tens of seconds when several processes do it at once on a
 * loaded machine. Built in a private directory and renamed into place: a reader never sees half
 * of it, and of two processes building it at once, one keeps its copy.
 */
export async function prepareSharedPgliteTemplate(): Promise<void> {
  if (template) return;
  const shared = path.join(os.tmpdir(), `gmq-pglite-template-${pgliteVersion()}`);
  if (!fs.existsSync(path.join(shared, 'PG_VERSION'))) {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'gmq-db-template-'));
    const db = new PGlite(dir);
    await db.waitReady;
    await db.close();
    try {
      fs.renameSync(dir, shared);
    } catch {
      fs.rmSync(dir, { recursive: true, force: true }); // another process was first
    }
  }
  template = shared;
}

/** Initialises one PGlite cluster per process for `tempPgliteConfig()` to copy. Idempotent. */
export async function preparePgliteTemplate(): Promise<void> {
  if (template) return;
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'gmq-db-template-'));
  const db = new PGlite(dir);
  await db.waitReady;
  await db.close();
  template = dir;
  // Best effort: the template is small, and a crashed run leaves only a temp dir behind.
  process.once('exit', () => fs.rmSync(dir, { recursive: true, force: true }));
}

/** The installed PGlite's version (its package.json is not in the package's exports: walk up from its entry). */
function pgliteVersion(): string {
  let dir = path.dirname(fileURLToPath(import.meta.resolve('@electric-sql/pglite')));
  for (let i = 0; i < 5; i++, dir = path.dirname(dir)) {
    try {
      const pkg = JSON.parse(fs.readFileSync(path.join(dir, 'package.json'), 'utf8')) as {
        name?: string;
        version?: string;
      };
      if (pkg.name === '@electric-sql/pglite' && pkg.version) return pkg.version;
    } catch {
      // not here
    }
  }
  return 'unknown';
}
