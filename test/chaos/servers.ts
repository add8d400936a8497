/**
 * Private real servers for the fault suite: a PostgreSQL cluster and a Mosquitto of its own,
 * on free ports in temp directories, so stopping or killing them never touches the machine's
 * shared services (127.0.0.1:5432, :1883).
 */
import { type ChildProcess, execFile, spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import pg from 'pg';
import { freePort, listening } from '../helpers/process.js';
import { scaled } from '../helpers/wait.js';

const run = promisify(execFile);

/** The newest PostgreSQL server binaries installed (Debian layout). */
function pgBinDir(): string {
  const root = '/usr/lib/postgresql';
  const versions = fs.existsSync(root)
    ? fs
        .readdirSync(root)
        .filter((v) => fs.existsSync(path.join(root, v, 'bin', 'initdb')))
        .sort((a, b) => Number(b) - Number(a))
    : [];
  if (versions.length === 0) throw new Error(`no PostgreSQL server found under ${root}`);
  return path.join(root, versions[0], 'bin');
}

/**
 * A PostgreSQL cluster of our own. PostgreSQL refuses to run as root, so when we are root the
 * cluster belongs to the `postgres` user and every pg_ctl runs through `runuser`.
 *
 * @example
 *   const pgs = await PrivatePostgres.create();
 *   await pgs.createDatabase('s1');           // postgres://postgres@127.0.0.1:<port>/s1
 *   await pgs.stop('immediate'); await pgs.start();
 *   await pgs.destroy();
 */
/** One query on a short-lived connection (the suite's audit; never through the hub). */
async function queryOnce<T>(settings: pg.ClientConfig, sql: string, params: unknown[]): Promise<T[]> {
  const client = new pg.Client({ ...settings, connectionTimeoutMillis: 5_000 });
  client.on('error', () => undefined);
  await client.connect();
  try {
    return (await client.query(sql, params)).rows as T[];
  } finally {
    await client.end().catch(() => undefined);
  }
}

/** Where the suite's audit reads the hub's tables: the private server, or the hub's embedded one. */
export interface Queryable {
  query<T = Record<string, unknown>>(db: string, sql: string, params?: unknown[]): Promise<T[]>;
}

/**
 * The hub's own embedded PostgreSQL server (driver embedded-postgres) read from outside: its port
 * from the cluster's postmaster.pid (it moves if the server is started on another one), its
 * password from `<server_dir>.password`. `db` is ignored: the hub uses database `postgres`.
 */
export class EmbeddedServerReader implements Queryable {
  constructor(readonly serverDir: string) {}

  /** The running server's PID, if one runs. */
  pid(): number | undefined {
    try {
      const pid = Number(fs.readFileSync(path.join(this.serverDir, 'postmaster.pid'), 'utf8').split('\n')[0]);
      process.kill(pid, 0);
      return pid;
    } catch {
      return undefined;
    }
  }

  async query<T = Record<string, unknown>>(_db: string, sql: string, params: unknown[] = []): Promise<T[]> {
    const port = Number(fs.readFileSync(path.join(this.serverDir, 'postmaster.pid'), 'utf8').split('\n')[3]);
    const password = fs.readFileSync(`${this.serverDir}.password`, 'utf8').trim();
    return queryOnce<T>({ host: '127.0.0.1', port, user: 'gmq', password, database: 'postgres' }, sql, params);
  }
}

export class PrivatePostgres implements Queryable {
  private running = false;

  private constructor(
    readonly dir: string,
    readonly port: number,
    private readonly bin: string,
  ) {}

  get dataDir(): string {
    return path.join(this.dir, 'data');
  }

  url(db = 'postgres'): string {
    return `postgres://postgres@127.0.0.1:${this.port}/${db}`;
  }

  static async create(): Promise<PrivatePostgres> {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'gmq-chaos-pg-'));
    fs.chmodSync(dir, 0o755);
    const self = new PrivatePostgres(dir, await freePort(), pgBinDir());
    if (process.getuid?.() === 0) await run('chown', ['-R', 'postgres:postgres', dir]);
    await self.as(path.join(self.bin, 'initdb'), [
      '-D',
      self.dataDir,
      '-U',
      'postgres',
      '-A',
      'trust',
      '--no-sync',
      '-E',
      'UTF8',
    ]);
    // A crash (immediate stop) is recovered from the WAL, so fsync can stay off: the machine
    // itself never crashes in these runs, and fsync on a shared disk would only slow them.
    fs.appendFileSync(
      path.join(self.dataDir, 'postgresql.conf'),
      [
        `port = ${self.port}`,
        "listen_addresses = '127.0.0.1'",
        `unix_socket_directories = '${dir}'`,
        'fsync = off',
        'max_connections = 200',
        'logging_collector = off',
        '',
      ].join('\n'),
    );
    await self.start();
    return self;
  }

  /** Runs a PostgreSQL binary as the cluster's owner. */
  private as(cmd: string, args: string[]): Promise<{ stdout: string; stderr: string }> {
    if (process.getuid?.() === 0) return run('runuser', ['-u', 'postgres', '--', cmd, ...args]);
    return run(cmd, args);
  }

  async start(): Promise<void> {
    await this.as(path.join(this.bin, 'pg_ctl'), [
      '-D',
      this.dataDir,
      '-l',
      path.join(this.dir, 'server.log'),
      '-w',
      '-t',
      '60',
      'start',
    ]);
    this.running = true;
  }

  /** `immediate`: no checkpoint, every backend killed (a crash, recovered at the next start). */
  async stop(mode: 'fast' | 'immediate' = 'fast'): Promise<void> {
    await this.as(path.join(this.bin, 'pg_ctl'), ['-D', this.dataDir, '-m', mode, '-w', '-t', '60', 'stop']);
    this.running = false;
  }

  async createDatabase(name: string): Promise<string> {
    await this.query('postgres', `CREATE DATABASE "${name}"`);
    return this.url(name);
  }

  /** One query on a short-lived connection (the suite's audit; never through the hub). */
  async query<T = Record<string, unknown>>(db: string, sql: string, params: unknown[] = []): Promise<T[]> {
    return queryOnce<T>({ connectionString: this.url(db) }, sql, params);
  }

  async destroy(): Promise<void> {
    if (this.running) await this.stop('immediate').catch(() => undefined);
    fs.rmSync(this.dir, { recursive: true, force: true });
  }
}

/**
 * A Mosquitto of our own with persistence on and every queue setting at its default
 * (max_queued_messages 1000, max_inflight_messages 20): what an operator gets out of the box.
 */
export class PrivateMosquitto {
  private proc?: ChildProcess;
  private exited?: Promise<void>;

  private constructor(
    readonly dir: string,
    readonly port: number,
    readonly file: string,
  ) {}

  get url(): string {
    return `mqtt://127.0.0.1:${this.port}`;
  }

  /** The running broker's pid (CPU accounting of the scale run), undefined when it is not running. */
  get pid(): number | undefined {
    return this.proc && this.proc.exitCode === null && this.proc.signalCode === null ? this.proc.pid : undefined;
  }

  static async create(extra: string[] = []): Promise<PrivateMosquitto> {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'gmq-chaos-mosquitto-'));
    const port = await freePort();
    const file = path.join(dir, 'mosquitto.conf');
    const lines = [
      `listener ${port} 127.0.0.1`,
      'allow_anonymous true',
      'persistence true',
      `persistence_location ${dir}/`,
      // written at every change of a session's state is too slow; the default (1800 s) would
      // make kill -9 lose everything: a real installation saves on a short interval too
      'autosave_interval 1',
      `log_dest file ${dir}/mosquitto.log`,
      'log_type error',
      'log_type warning',
      'log_type notice',
      // as root Mosquitto 2 would switch to the `mosquitto` user, who cannot write our temp dir
      ...(process.getuid?.() === 0 ? ['user root'] : []),
      ...extra,
      '',
    ];
    fs.writeFileSync(file, lines.join('\n'));
    const self = new PrivateMosquitto(dir, port, file);
    await self.start();
    return self;
  }

  async start(): Promise<void> {
    const proc = spawn('/usr/sbin/mosquitto', ['-c', this.file], { stdio: ['ignore', 'ignore', 'pipe'] });
    const stderr: string[] = [];
    proc.stderr?.on('data', (b: Buffer) => stderr.push(b.toString()));
    this.proc = proc;
    this.exited = new Promise((r) => proc.once('exit', () => r()));
    const bound = scaled(20_000);
    const deadline = Date.now() + bound;
    for (;;) {
      if (proc.exitCode !== null) throw new Error(`mosquitto exited at start: ${stderr.join('')}`);
      if (await listening(this.port)) return;
      if (Date.now() > deadline) throw new Error(`mosquitto not listening on ${this.port} after ${bound} ms`);
      await sleep(100);
    }
  }

  async kill9(): Promise<void> {
    this.proc?.kill('SIGKILL');
    await this.exited;
  }

  /** Lines of Mosquitto's own log that say it dropped messages for a client (queue overflow). */
  drops(): string[] {
    const log = path.join(this.dir, 'mosquitto.log');
    if (!fs.existsSync(log)) return [];
    return fs
      .readFileSync(log, 'utf8')
      .split('\n')
      .filter((l) => /dropped/i.test(l));
  }

  async destroy(): Promise<void> {
    if (this.proc && this.proc.exitCode === null && this.proc.signalCode === null) {
      this.proc.kill('SIGTERM');
      await this.exited;
    }
    fs.rmSync(this.dir, { recursive: true, force: true });
  }
}

export const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));
