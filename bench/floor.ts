/**
 * Starts the hand-coded floor (bench/floor-child.ts) in its own process, as startHub does the
 * hub, and talks to it over IPC. The suites compare the hub with it in the same run, on the same
 * broker and PostgreSQL server (the floor always on PostgreSQL, in a schema of its own).
 *
 * @example
 *   const db = await pgDatabase();
 *   const floor = await startFloor(mosq.url, { url: PG_URL, schema: db.config.schema! });
 *   const agents = await connectFloorAgents(mosq.url, ['bench-000000']);
 *   // POST `${floor.url}/sync` { project_id, command_type, payload } → 200 { command_id, status, result }
 */
import { type ChildProcess, fork } from 'node:child_process';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));

export interface FloorStats {
  inserted: number;
  insert_batches: number;
  updated: number;
  update_batches: number;
  sync_timeouts: number;
  bad_replies: number;
  /** Signed command_acks checked (BENCH_FLOOR=signed; 0 on the unsigned floor, whose agents send none). */
  acks: number;
}

export interface FloorProcess {
  pid: number;
  /** `http://127.0.0.1:PORT` of its POST /sync and POST /send */
  url: string;
  /** `"schema".floor_command`, to count its rows */
  table: string;
  stats(): Promise<FloorStats>;
  stop(): Promise<void>;
}

export async function startFloor(
  mqttUrl: string,
  pg: { url: string; schema: string },
  opts: { execArgv?: string[]; env?: NodeJS.ProcessEnv } = {},
): Promise<FloorProcess> {
  const child: ChildProcess = fork(path.join(here, 'floor-child.js'), [mqttUrl, pg.url, pg.schema], {
    stdio: 'inherit',
    ...(opts.execArgv ? { execArgv: opts.execArgv } : {}),
    ...(opts.env ? { env: { ...process.env, ...opts.env } } : {}),
  });
  const waiting: Array<(s: FloorStats) => void> = [];
  const exited = new Promise<void>((r) => child.once('exit', () => r()));
  const url = await new Promise<string>((resolve, reject) => {
    const t = setTimeout(() => reject(new Error('floor not ready within 30 s')), 30_000);
    void exited.then(() => reject(new Error(`floor exited during start (code ${child.exitCode})`)));
    child.on('message', (m: { op: string; url?: string; error?: string } & Partial<FloorStats>) => {
      if (m.op === 'ready') {
        clearTimeout(t);
        resolve(m.url!);
      } else if (m.op === 'start-failed') {
        clearTimeout(t);
        reject(new Error(`floor did not start: ${m.error}`));
      } else if (m.op === 'stats') {
        const { op: _, ...stats } = m;
        waiting.shift()?.(stats as FloorStats);
      }
    });
  }).catch((err) => {
    child.kill('SIGKILL');
    throw err;
  });
  return {
    pid: child.pid!,
    url,
    table: `"${pg.schema}".floor_command`,
    stats: () =>
      new Promise((r) => {
        waiting.push(r);
        child.send({ op: 'stats' });
      }),
    async stop() {
      if (child.exitCode !== null || child.signalCode !== null) return;
      child.send({ op: 'stop' });
      const t = setTimeout(() => child.kill('SIGKILL'), 5_000);
      await exited;
      clearTimeout(t);
    },
  };
}
