/**
 * A private Mosquitto for one test file: its own config in a temp directory, a TCP listener and a
 * WebSocket listener (`protocol websockets`) on free loopback ports, password authentication.
 * Never the machine's Mosquitto (which other tests and helpers share); stopped by its PID.
 */
import { type ChildProcess, execFileSync, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import mqtt from 'mqtt';
import { freePort, listening } from './process.js';
import { scaled } from './wait.js';

export interface PrivateMosquitto {
  tcpUrl: string;
  /** `ws://127.0.0.1:PORT` (Mosquitto's WebSocket listener serves any path) */
  wsUrl: string;
  /** Adds (or changes) a login and makes Mosquitto re-read the password file (SIGHUP). */
  addUser(username: string, password: string): Promise<void>;
  log(): string;
  stop(): Promise<void>;
}

export function mosquittoAvailable(): boolean {
  try {
    execFileSync('mosquitto', ['-h'], { stdio: 'ignore' });
  } catch (err) {
    // `mosquitto -h` exits 3 after printing its usage: it is there
    if ((err as { code?: string }).code === 'ENOENT') return false;
  }
  try {
    execFileSync('mosquitto_passwd', ['-h'], { stdio: 'ignore' });
  } catch (err) {
    if ((err as { code?: string }).code === 'ENOENT') return false;
  }
  return true;
}

export async function startPrivateMosquitto(users: Record<string, string>): Promise<PrivateMosquitto> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'gmq-mosquitto-'));
  const passwd = path.join(dir, 'passwd');
  fs.writeFileSync(passwd, '', { mode: 0o600 });
  const setUser = (u: string, p: string) => execFileSync('mosquitto_passwd', ['-b', passwd, u, p], { stdio: 'ignore' });
  for (const [u, p] of Object.entries(users)) setUser(u, p);
  // A free port is only free when it was probed: another test (or the second probe here) can take
  // it before Mosquitto binds. Mosquitto then binds what it can and exits, and a bare TCP probe
  // can pass in between (a CI run lost 240 s to an agent refused by a broker that had just died).
  // So: two distinct ports, both accepting, still alive (and accepting) a moment later, and on any
  // failure new ports. (Mosquitto's own "listen socket" lines sit in its stdout buffer: no signal.)
  let lastFailure = '';
  for (let attempt = 1; attempt <= 5; attempt++) {
    const started = await startOn(dir, passwd);
    if ('proc' in started) return handle(started, dir, setUser);
    lastFailure = started.failure;
  }
  fs.rmSync(dir, { recursive: true, force: true });
  throw new Error(`private mosquitto did not start in 5 attempts; the last said:\n${lastFailure}`);
}

interface Started {
  proc: ChildProcess;
  out: string[];
  exited: Promise<void>;
  tcp: number;
  ws: number;
}

async function startOn(dir: string, passwd: string): Promise<Started | { failure: string }> {
  const tcp = await freePort();
  let ws = await freePort();
  while (ws === tcp) ws = await freePort();
  const conf = path.join(dir, 'mosquitto.conf');
  fs.writeFileSync(
    conf,
    [
      // run as whoever runs the tests: as root Mosquitto would switch to `mosquitto`, who cannot read this dir
      `user ${os.userInfo().username}`,
      'per_listener_settings false',
      'allow_anonymous false',
      `password_file ${passwd}`,
      'persistence false',
      'log_dest stdout',
      `listener ${tcp} 127.0.0.1`,
      `listener ${ws} 127.0.0.1`,
      'protocol websockets',
      '',
    ].join('\n'),
  );
  const out: string[] = [];
  const proc: ChildProcess = spawn('mosquitto', ['-c', conf], { stdio: ['ignore', 'pipe', 'pipe'] });
  proc.stdout?.on('data', (b: Buffer) => out.push(b.toString()));
  proc.stderr?.on('data', (b: Buffer) => out.push(b.toString()));
  const exited = new Promise<void>((r) => proc.once('exit', () => r()));
  const alive = () => proc.exitCode === null && proc.signalCode === null;
  const deadline = Date.now() + scaled(15_000);
  for (;;) {
    if (alive() && (await listening(tcp)) && (await listening(ws))) {
      // a bind failure on a later listener ends the process just after the earlier one opened
      await new Promise((r) => setTimeout(r, 300));
      if (alive() && (await listening(tcp))) return { proc, out, exited, tcp, ws };
    }
    if (!alive() || Date.now() > deadline) {
      proc.kill('SIGKILL');
      await exited;
      return { failure: out.join('') || `exit ${proc.exitCode ?? proc.signalCode}` };
    }
    await new Promise((r) => setTimeout(r, 50));
  }
}

function handle(
  { proc, out, exited, tcp, ws }: Started,
  dir: string,
  setUser: (u: string, p: string) => void,
): PrivateMosquitto {
  return {
    tcpUrl: `mqtt://127.0.0.1:${tcp}`,
    wsUrl: `ws://127.0.0.1:${ws}`,
    async addUser(u, p) {
      setUser(u, p);
      proc.kill('SIGHUP');
      // Mosquitto's "Reloading config" line sits in its stdout buffer, so the signal that the
      // reload happened is the login itself: it works once the password file was re-read.
      const deadline = Date.now() + scaled(10_000);
      while (!(await loginWorks(tcp, u, p))) {
        if (Date.now() > deadline) throw new Error(`private mosquitto: the login ${u} still fails after SIGHUP`);
        await new Promise((r) => setTimeout(r, 50));
      }
    },
    log: () => out.join(''),
    async stop() {
      if (proc.exitCode === null && proc.signalCode === null) {
        proc.kill('SIGTERM');
        const t = setTimeout(() => proc.kill('SIGKILL'), scaled(5_000));
        await exited;
        clearTimeout(t);
      }
      fs.rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** One MQTT CONNECT with these credentials: accepted or not (refused, closed, timed out). */
function loginWorks(port: number, username: string, password: string): Promise<boolean> {
  return new Promise((resolve) => {
    const c = mqtt.connect(`mqtt://127.0.0.1:${port}`, {
      username,
      password,
      clientId: `login-probe-${randomBytes(4).toString('hex')}`,
      clean: true,
      reconnectPeriod: 0,
      connectTimeout: scaled(2_000),
    });
    const done = (ok: boolean) => {
      c.removeAllListeners();
      c.on('error', () => undefined);
      c.end(true);
      resolve(ok);
    };
    c.once('connect', () => done(true));
    c.once('error', () => done(false));
    c.once('close', () => done(false));
  });
}
