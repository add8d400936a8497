/**
 * A private Mosquitto for one test file: its own config in a temp directory, a TCP listener and a
 * WebSocket listener (`protocol websockets`) on free loopback ports, password authentication.
 * Never the machine's Mosquitto (which other tests and helpers share); stopped by its PID.
 */
import { type ChildProcess, execFileSync, spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { freePort, listening } from './process.js';

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
  const tcp = await freePort();
  const ws = await freePort();
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
  const deadline = Date.now() + 15_000;
  while (!((await listening(tcp)) && (await listening(ws)))) {
    if (proc.exitCode !== null || Date.now() > deadline) {
      proc.kill('SIGKILL');
      throw new Error(`private mosquitto did not start:\n${out.join('')}`);
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  return {
    tcpUrl: `mqtt://127.0.0.1:${tcp}`,
    wsUrl: `ws://127.0.0.1:${ws}`,
    async addUser(u, p) {
      setUser(u, p);
      const mark = out.length;
      proc.kill('SIGHUP');
      // Mosquitto logs the reload; give it a moment either way
      const until = Date.now() + 5_000;
      while (Date.now() < until && !out.slice(mark).join('').includes('Reloading config')) {
        await new Promise((r) => setTimeout(r, 20));
      }
      await new Promise((r) => setTimeout(r, 100));
    },
    log: () => out.join(''),
    async stop() {
      if (proc.exitCode === null && proc.signalCode === null) {
        proc.kill('SIGTERM');
        const t = setTimeout(() => proc.kill('SIGKILL'), 5_000);
        await exited;
        clearTimeout(t);
      }
      fs.rmSync(dir, { recursive: true, force: true });
    },
  };
}
