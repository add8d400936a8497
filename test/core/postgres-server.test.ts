/**
 * The embedded PostgreSQL server (core/services/postgres-server.ts): the shipped config's
 * default database. Real server processes from the npm package, in throwaway directories; every
 * server a test starts is stopped by the pool or by its PID.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, describe, test } from 'node:test';
import pg from 'pg';
import { silentLogger } from '../../core/log.js';
import { DbPool, EMBEDDED_POOL_MAX } from '../../core/services/db.js';
import { initDataDirApart } from '../../core/services/pglite.js';
import {
  SERVER_SHARED_BUFFERS,
  SERVER_STATISTICS_TARGET,
  serverBinaries,
  serverUsable,
} from '../../core/services/postgres-server.js';
import { freePort, HostProcess, REPO_ROOT } from '../helpers/process.js';
import { until } from '../helpers/wait.js';

const isRoot = process.getuid?.() === 0;

const dirs: string[] = [];
/** A directory the server's user can reach (mkdtemp makes 0700 directories, which it cannot when the hub is root). */
function reachableDir(prefix: string): string {
  const d = fs.mkdtempSync(path.join(os.tmpdir(), prefix));
  fs.chmodSync(d, 0o755);
  dirs.push(d);
  return d;
}

// Where this checkout cannot run the server (no binaries for the platform; as root, an
// installation the server's user cannot reach) the suite says why instead of failing: that is
// the case `embedded` falls back to PGlite for, tested below with directories made unreachable.
const binaries = serverBinaries();
const probe = 'missing' in binaries ? undefined : serverUsable(path.join(reachableDir('gmq-eps-probe-'), 'pg'));
const skip =
  'missing' in binaries
    ? `no server binaries here: ${binaries.missing}`
    : probe && !probe.ok
      ? `the server cannot run from this checkout: ${probe.why}`
      : false;
after(() => {
  for (const d of dirs) fs.rmSync(d, { recursive: true, force: true });
});

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

/** A process's group (Linux /proc/<pid>/stat, the fifth field). */
function processGroupOf(pid: number): number {
  const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
  return Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[2]);
}

/** The processes whose parent is `pid` (Linux /proc/<pid>/stat, the fourth field). */
function childrenOf(pid: number): number[] {
  const out: number[] = [];
  for (const name of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    try {
      const stat = fs.readFileSync(`/proc/${name}/stat`, 'utf8');
      if (Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]) === pid) out.push(Number(name));
    } catch {
      // ended meanwhile
    }
  }
  return out;
}

/** What a process calls itself (PostgreSQL's helpers set theirs: `postgres: checkpointer`). */
function commandOf(pid: number): string {
  try {
    return fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8').replaceAll('\0', ' ').trim();
  } catch {
    return '';
  }
}

/** The running server's PID from its postmaster.pid, if one runs on `dir`. */
function serverPid(dir: string): number | undefined {
  try {
    const pid = Number(fs.readFileSync(path.join(dir, 'postmaster.pid'), 'utf8').split('\n')[0]);
    return alive(pid) ? pid : undefined;
  } catch {
    return undefined;
  }
}

describe('embedded PostgreSQL server', { skip }, () => {
  test('`embedded` runs a server in server_dir: data survives a restart, the password stays private, stop ends it', async () => {
    const base = reachableDir('gmq-eps-');
    const cfg = { driver: 'embedded' as const, data_dir: path.join(base, 'pglite'), server_dir: path.join(base, 'pg') };
    const first = new DbPool({ default: cfg }, silentLogger());
    first.lockDataDirs();
    await first.prepareDataDirs();
    assert.equal(first.driverOf('default'), 'embedded-postgres');
    await first.get().raw('CREATE TABLE kept (id int PRIMARY KEY)');
    await first.get()('kept').insert({ id: 7 });
    const pid = serverPid(cfg.server_dir);
    assert.ok(pid, 'a server runs on the cluster');
    await first.close();
    assert.equal(alive(pid), false, 'closing the pool stopped the server');
    assert.equal(fs.existsSync(`${cfg.server_dir}.lock`), false, 'the directory lock is released');
    assert.equal(fs.existsSync(cfg.data_dir), false, 'no PGlite database was made');
    assert.equal(fs.statSync(`${cfg.server_dir}.password`).mode & 0o777, 0o600);

    const second = new DbPool({ default: cfg }, silentLogger());
    try {
      assert.deepEqual(await second.get()('kept').select('id'), [{ id: 7 }], 'the row written before the restart');
    } finally {
      await second.close();
    }
  });

  test('the server refuses a connection without the generated password', async () => {
    const base = reachableDir('gmq-eps-auth-');
    const pool = new DbPool(
      { default: { driver: 'embedded-postgres', server_dir: path.join(base, 'pg') } },
      silentLogger(),
    );
    try {
      await pool.prepareDataDirs();
      const pid = serverPid(path.join(base, 'pg'))!;
      const port = Number(fs.readFileSync(path.join(base, 'pg', 'postmaster.pid'), 'utf8').split('\n')[3]);
      assert.ok(pid && port > 0);
      const intruder = new pg.Client({ host: '127.0.0.1', port, user: 'gmq', password: 'guess', database: 'postgres' });
      await assert.rejects(intruder.connect(), /password authentication failed/);
      await intruder.end().catch(() => undefined);
    } finally {
      await pool.close();
    }
  });

  test('the server runs lean: no replication launcher or I/O workers, 8 MB of buffers, ANALYZE samples of 3 000 rows, at most 3 sessions from the hub', async () => {
    const base = reachableDir('gmq-eps-lean-');
    const serverDir = path.join(base, 'pg');
    const pool = new DbPool({ default: { driver: 'embedded-postgres', server_dir: serverDir } }, silentLogger());
    try {
      await pool.prepareDataDirs();
      const rows = (await pool.get().raw('SHOW shared_buffers')).rows as Array<{ shared_buffers: string }>;
      assert.deepEqual(rows, [{ shared_buffers: SERVER_SHARED_BUFFERS }]);
      assert.equal(SERVER_SHARED_BUFFERS, '8MB');
      // what an autovacuum worker's ANALYZE holds in memory: 300 rows a unit of the target
      const target = (await pool.get().raw('SHOW default_statistics_target')).rows as Array<Record<string, string>>;
      assert.deepEqual(target, [{ default_statistics_target: String(SERVER_STATISTICS_TARGET) }]);
      assert.equal(SERVER_STATISTICS_TARGET, 10);

      // the server's own processes, by what they call themselves
      const server = serverPid(serverDir)!;
      const helpers = childrenOf(server).map((pid) => commandOf(pid));
      assert.ok(
        helpers.some((c) => c.includes('checkpointer')),
        `the server's helpers are read: ${helpers.join(' | ')}`,
      );
      const unwanted = helpers.filter((c) => /logical replication launcher|io worker/.test(c));
      assert.deepEqual(unwanted, [], 'no process the hub has no use for');

      // twice as many concurrent statements as the pool holds: they share EMBEDDED_POOL_MAX sessions
      assert.equal(EMBEDDED_POOL_MAX, 3);
      await assertSessions(pool, EMBEDDED_POOL_MAX * 2, EMBEDDED_POOL_MAX);
    } finally {
      await pool.close();
    }
    // a `pool` that sets only `min` keeps the embedded default size, or min when that is larger
    for (const [min, size] of [
      [1, EMBEDDED_POOL_MAX],
      [6, 6],
    ] as const) {
      const sized = new DbPool(
        { default: { driver: 'embedded-postgres', server_dir: serverDir, pool: { min } } },
        silentLogger(),
      );
      try {
        await assertSessions(sized, size * 2, size);
      } finally {
        await sized.close();
      }
    }
  });

  test('a server left running by a hub killed with -9 is stopped and the next start goes on with its data', async () => {
    const base = reachableDir('gmq-eps-kill-');
    const serverDir = path.join(base, 'pg');
    // a hub stand-in: opens the pool, writes a row, says so, and is killed with -9
    const script = path.join(base, 'holder.mjs');
    const dbModule = path.join(REPO_ROOT, 'dist/core/services/db.js');
    const logModule = path.join(REPO_ROOT, 'dist/core/log.js');
    fs.writeFileSync(
      script,
      `import { DbPool } from ${JSON.stringify(dbModule)};
import { silentLogger } from ${JSON.stringify(logModule)};
const pool = new DbPool({ default: { driver: 'embedded-postgres', server_dir: ${JSON.stringify(serverDir)} } }, silentLogger());
pool.lockDataDirs();
await pool.prepareDataDirs();
await pool.get().raw('CREATE TABLE survived (id int)');
await pool.get()('survived').insert({ id: 1 });
process.stdout.write('ready\\n');
setInterval(() => {}, 1000);
`,
    );
    const holder = spawn(process.execPath, [script], { stdio: ['ignore', 'pipe', 'inherit'] });
    await new Promise<void>((resolve, reject) => {
      holder.stdout.on('data', (d: Buffer) => d.toString().includes('ready') && resolve());
      holder.once('exit', (code) => reject(new Error(`the holder exited (${code}) before it was ready`)));
    });
    const orphan = serverPid(serverDir)!;
    assert.ok(orphan, 'the holder runs a server');
    holder.kill('SIGKILL');
    await new Promise((r) => holder.once('exit', r));
    assert.ok(alive(orphan), 'kill -9 leaves the server running');

    const pool = new DbPool({ default: { driver: 'embedded-postgres', server_dir: serverDir } }, silentLogger());
    try {
      pool.lockDataDirs(); // the holder's lock is stale: its PID is gone
      await pool.prepareDataDirs();
      assert.equal(alive(orphan), false, 'the orphan was stopped');
      assert.deepEqual(await pool.get()('survived').select('id'), [{ id: 1 }]);
    } finally {
      await pool.close();
      if (alive(orphan)) process.kill(orphan, 'SIGKILL');
    }
  });

  test('a server killed under a running pool is started again and queries go on', async () => {
    const base = reachableDir('gmq-eps-crash-');
    const serverDir = path.join(base, 'pg');
    const pool = new DbPool({ default: { driver: 'embedded-postgres', server_dir: serverDir } }, silentLogger());
    try {
      await pool.prepareDataDirs();
      await pool.get().raw('CREATE TABLE t (id int)');
      const first = serverPid(serverDir)!;
      process.kill(first, 'SIGKILL');
      // its backends notice the postmaster's death and end; then a new server can start
      await until(
        () => {
          const now = serverPid(serverDir);
          return now !== undefined && now !== first;
        },
        60_000,
        'a new server process',
      );
      await until(
        async () => {
          try {
            await pool.get()('t').insert({ id: 2 });
            return true;
          } catch {
            return false;
          }
        },
        60_000,
        'writes succeed again after the server was killed',
      );
      assert.deepEqual(await pool.get()('t').select('id'), [{ id: 2 }]);
    } finally {
      await pool.close();
    }
  });

  test('`embedded` keeps an existing PGlite database', async () => {
    const base = reachableDir('gmq-eps-keep-');
    const dataDir = path.join(base, 'pglite');
    await initDataDirApart(dataDir);
    const pool = new DbPool(
      { default: { driver: 'embedded', data_dir: dataDir, server_dir: path.join(base, 'pg') } },
      silentLogger(),
    );
    try {
      assert.equal(pool.driverOf('default'), 'pglite');
      await pool.prepareDataDirs();
      assert.equal(fs.existsSync(path.join(base, 'pg')), false, 'no server cluster was made');
    } finally {
      await pool.close();
    }
  });

  test('as root, a server_dir the server user cannot reach: `embedded` uses PGlite, `embedded-postgres` refuses and says why', {
    skip: isRoot ? false : 'only root runs the server as another user',
  }, async () => {
    const hidden = fs.mkdtempSync(path.join(os.tmpdir(), 'gmq-eps-hidden-')); // 0700, root's
    dirs.push(hidden);
    const auto = new DbPool(
      { default: { driver: 'embedded', data_dir: path.join(hidden, 'pglite'), server_dir: path.join(hidden, 'pg') } },
      silentLogger(),
    );
    assert.equal(auto.driverOf('default'), 'pglite');
    await auto.close();
    const named = new DbPool(
      { default: { driver: 'embedded-postgres', server_dir: path.join(hidden, 'pg') } },
      silentLogger(),
    );
    try {
      await assert.rejects(named.prepareDataDirs(), (err: Error & { code?: string }) => {
        assert.equal(err.code, 'DB_ERR_SERVER');
        assert.match(err.message, /cannot reach .*gmq-eps-hidden-/);
        return true;
      });
    } finally {
      await named.close();
    }
  });

  test('Ctrl-C in the terminal (SIGINT to the whole process group) leaves the server to the hub, which stops it after draining', async () => {
    const data = reachableDir('gmq-eps-ctrlc-');
    const env: NodeJS.ProcessEnv = { ...process.env, LOG_FORMAT: 'json', LOG_LEVEL: 'info' };
    for (const k of Object.keys(env)) if (k.startsWith('HUB_')) delete env[k];
    Object.assign(env, {
      HUB_CONFIG: path.join(REPO_ROOT, 'config.yml'),
      HUB_DATA_DIR: data,
      HUB_HTTP_PORT: String(await freePort()),
      HUB_MQTT_PORT: String(await freePort()),
      HUB_GRPC_PORT: String(await freePort()),
    });
    // the hub leads a process group of its own, as a shell makes a foreground job
    const hub = spawn(process.execPath, [path.join(REPO_ROOT, 'dist/bootstrap/main.js')], {
      cwd: data,
      env,
      detached: true,
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    const lines: Array<{ msg?: string; level?: number }> = [];
    let out = '';
    hub.stdout.on('data', (d: Buffer) => {
      out += d.toString();
      for (let i = out.indexOf('\n'); i >= 0; i = out.indexOf('\n')) {
        try {
          lines.push(JSON.parse(out.slice(0, i)));
        } catch {
          // not a log line
        }
        out = out.slice(i + 1);
      }
    });
    const exited = new Promise<number | null>((r) => hub.once('exit', (code) => r(code)));
    try {
      await until(() => lines.some((l) => l.msg === 'host started'), 60_000, 'the hub started');
      const server = serverPid(path.join(data, 'postgres'));
      assert.ok(server, 'the embedded server runs');
      // what keeps the terminal's signal from the server: it is not in the hub's process group
      // (a race otherwise: an idle hub may stop it first, a draining one not)
      assert.notEqual(
        processGroupOf(server),
        processGroupOf(hub.pid!),
        "the server is outside the hub's process group",
      );
      process.kill(-hub.pid!, 'SIGINT');
      assert.equal(await exited, 0);
      const said = lines.map((l) => l.msg);
      assert.ok(said.includes('embedded PostgreSQL server stopped'), 'the hub stopped its server');
      assert.ok(
        !said.some((m) => m?.startsWith('embedded PostgreSQL server exited')),
        'the server did not end under the hub',
      );
      assert.equal(alive(server), false);
    } finally {
      if (hub.exitCode === null) hub.kill('SIGKILL');
      const left = serverPid(path.join(data, 'postgres'));
      if (left) process.kill(left, 'SIGKILL');
    }
  });

  test('as root, server binaries the server user cannot reach (an installation under /root): not usable, and why', {
    skip: isRoot ? false : 'only root runs the server as another user',
  }, () => {
    const hidden = fs.mkdtempSync(path.join(os.tmpdir(), 'gmq-eps-install-')); // 0700, root's
    dirs.push(hidden);
    const bin = path.join(hidden, 'native', 'bin');
    fs.mkdirSync(bin, { recursive: true });
    const reachable = reachableDir('gmq-eps-data-');
    const fake = { initdb: path.join(bin, 'initdb'), postgres: path.join(bin, 'postgres') };
    const verdict = serverUsable(path.join(reachable, 'pg'), 'postgres', fake);
    assert.equal(verdict.ok, false);
    assert.match((verdict as { why: string }).why, /cannot reach the server binaries in .*gmq-eps-install-/);
    // the same layout made reachable is usable: the check is about reach, nothing else
    fs.chmodSync(hidden, 0o755);
    assert.equal(serverUsable(path.join(reachable, 'pg'), 'postgres', fake).ok, true);
  });

  test('the shipped config.yml runs its hub on the embedded server; kill -9 and start again keeps a project', async () => {
    const data = reachableDir('gmq-eps-hub-');
    const ports = { http: await freePort(), mqtt: await freePort(), grpc: await freePort() };
    const env: NodeJS.ProcessEnv = { LOG_FORMAT: 'json', HUB_DATA_DIR: data };
    for (const k of Object.keys(process.env)) if (k.startsWith('HUB_')) env[k] = undefined;
    Object.assign(env, {
      HUB_DATA_DIR: data,
      HUB_HTTP_PORT: String(ports.http),
      HUB_MQTT_PORT: String(ports.mqtt),
      HUB_GRPC_PORT: String(ports.grpc),
    });
    const base = `http://127.0.0.1:${ports.http}`;
    const hub = new HostProcess(path.join(REPO_ROOT, 'config.yml'), env);
    let orphan: number | undefined;
    try {
      await hub.started(60_000);
      const started = await hub.waitFor((l) => l.msg === 'embedded PostgreSQL server started', 1_000, 'the server');
      orphan = started.server_pid as number;
      const created = await fetch(`${base}/api/exchange-hub/projects`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ project_id: 'eps-kept' }),
      });
      assert.equal(created.status, 201);
      await hub.kill9();
      assert.ok(alive(orphan), 'the server outlives a hub killed with -9');
    } finally {
      await hub.stop();
    }
    const again = new HostProcess(path.join(REPO_ROOT, 'config.yml'), env);
    try {
      await again.started(60_000);
      await again.waitFor(
        (l) => l.msg.startsWith('stopping an embedded PostgreSQL server left running'),
        1_000,
        'the orphan found',
      );
      assert.equal(alive(orphan), false, 'the orphan was stopped');
      const got = await fetch(`${base}/api/exchange-hub/project/eps-kept/status`);
      assert.equal(got.status, 200, 'the project created before the kill');
      assert.equal(fs.existsSync(path.join(data, 'pglite')), false, 'no PGlite database');
    } finally {
      const server = serverPid(path.join(data, 'postgres'));
      assert.equal((await again.stop()).code, 0);
      if (server) assert.equal(alive(server), false, "the hub's stop stopped its server");
      if (orphan && alive(orphan)) process.kill(orphan, 'SIGKILL');
    }
  });
});

/** Runs `concurrent` statements at once on `pool` and requires them to have used `sessions` backends. */
async function assertSessions(pool: DbPool, concurrent: number, sessions: number): Promise<void> {
  const pids = await Promise.all(
    Array.from({ length: concurrent }, async () => {
      const r = await pool.get().raw('SELECT pg_backend_pid() AS pid, pg_sleep(0.2)');
      return (r.rows as Array<{ pid: number }>)[0]!.pid;
    }),
  );
  assert.equal(new Set(pids).size, sessions, `sessions used: ${[...new Set(pids)].join(', ')}`);
}
