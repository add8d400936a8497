import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { HubError } from '../errors.js';

/**
 * An exclusive, cross-process lock on a PGlite data directory: `<data_dir>.lock` beside it (a
 * file inside would be in PostgreSQL's own directory), created with O_EXCL and holding the
 * owner's PID and host name. PGlite is a whole PostgreSQL inside one process with no lock of its
 * own: a second hub opening a live data_dir corrupts it and dies with `Aborted()`.
 *
 * A lock whose PID no longer runs on this host is stale (a hub killed with -9, a reboot) and is
 * taken over. A lock of another host name is never taken over: a data_dir on shared storage.
 *
 * @example
 *   const release = lockDataDir('/var/lib/gmq/pglite');
 *   try { ... } finally { release(); }
 */
export function lockDataDir(dataDir: string, env: NodeJS.ProcessEnv = process.env): () => void {
  const file = lockFileOf(dataDir);
  if (held.has(file)) {
    throw new HubError('DB_ERR_DATA_DIR_LOCKED', `data directory ${dataDir} is already in use in this process`, {
      data_dir: dataDir,
      lock_file: file,
      pid: process.pid,
    });
  }
  fs.mkdirSync(path.dirname(file), { recursive: true });
  const mine = `${process.pid} ${os.hostname()}\n`;
  // Two attempts: the second after removing a stale lock (another process may win that race;
  // then its lock is live and the second attempt refuses).
  for (let attempt = 0; attempt < 2; attempt++) {
    try {
      fs.writeFileSync(file, mine, { flag: 'wx' });
      held.add(file);
      let released = false;
      return () => {
        if (released) return;
        released = true;
        held.delete(file);
        // only our own lock: a stale-lock takeover by another process must not be undone
        try {
          if (fs.readFileSync(file, 'utf8') === mine) fs.rmSync(file, { force: true });
        } catch {
          // already gone
        }
      };
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
    }
    const owner = readOwner(file);
    if (owner && isLive(owner)) {
      const hint = env.HUB_DATA_DIR !== undefined ? 'set HUB_DATA_DIR to another directory' : 'use another data_dir';
      throw new HubError(
        'DB_ERR_DATA_DIR_LOCKED',
        `data directory ${dataDir} is in use by another gmq-hub (pid ${owner.pid}${owner.host === os.hostname() ? '' : ` on ${owner.host}`}): stop it, or ${hint}`,
        { data_dir: dataDir, lock_file: file, pid: owner.pid, host: owner.host },
      );
    }
    fs.rmSync(file, { force: true });
  }
  throw new HubError('DB_ERR_DATA_DIR_LOCKED', `data directory ${dataDir} is being locked by another process`, {
    data_dir: dataDir,
    lock_file: file,
  });
}

/** Lock files this process holds: its own PID in a lock it does not hold means a stale lock. */
const held = new Set<string>();

/** Where the lock of `dataDir` lives. */
export function lockFileOf(dataDir: string): string {
  return `${path.resolve(dataDir).replace(/[/\\]+$/, '')}.lock`;
}

function readOwner(file: string): { pid: number; host: string } | undefined {
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch {
    return undefined; // removed meanwhile: take it
  }
  const [pid, host = ''] = text.trim().split(/\s+/);
  const n = Number(pid);
  // an unreadable lock (a crash while writing it) is stale
  return Number.isInteger(n) && n > 0 ? { pid: n, host } : undefined;
}

function isLive(owner: { pid: number; host: string }): boolean {
  if (owner.host && owner.host !== os.hostname()) return true; // cannot tell: assume alive
  // our own PID on a lock we do not hold: a restart in a container where PIDs repeat
  if (owner.pid === process.pid) return false;
  try {
    process.kill(owner.pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM'; // alive, another user's
  }
}
