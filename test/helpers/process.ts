import { type ChildProcess, spawn } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { scaled } from './wait.js';

/** The repository root, from dist/test/helpers/ where the compiled helper runs. */
export const REPO_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../..');
export const MAIN = path.join(REPO_ROOT, 'dist/bootstrap/main.js');

export interface LogLine {
  level: number;
  msg: string;
  module?: string;
  [k: string]: unknown;
}

/**
 * A gmq-hub host running as its own process (`node dist/bootstrap/main.js`), with its pino
 * output parsed so tests can wait for what it says instead of sleeping.
 */
export class HostProcess {
  readonly proc: ChildProcess;
  readonly lines: LogLine[] = [];
  readonly stderr: string[] = [];
  private waiters: Array<{ match: (l: LogLine) => boolean; resolve: (l: LogLine) => void }> = [];
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;

  constructor(configFile: string, env: NodeJS.ProcessEnv = {}) {
    this.proc = spawn(process.execPath, [MAIN], {
      cwd: path.dirname(configFile),
      env: { ...process.env, LOG_LEVEL: 'info', ...env, HUB_CONFIG: configFile },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    createInterface({ input: this.proc.stdout! }).on('line', (raw) => {
      let line: LogLine;
      try {
        line = JSON.parse(raw) as LogLine;
      } catch {
        line = { level: 30, msg: raw };
      }
      this.lines.push(line);
      for (const w of [...this.waiters]) {
        if (w.match(line)) {
          this.waiters.splice(this.waiters.indexOf(w), 1);
          w.resolve(line);
        }
      }
    });
    createInterface({ input: this.proc.stderr! }).on('line', (l) => this.stderr.push(l));
    this.exited = new Promise((resolve) => this.proc.once('exit', (code, signal) => resolve({ code, signal })));
  }

  /** Resolves with the first log line (past or future) that matches, or rejects after `ms` (scaled). */
  waitFor(match: (l: LogLine) => boolean, quietMs: number, what: string): Promise<LogLine> {
    const ms = scaled(quietMs);
    const seen = this.lines.find(match);
    if (seen) return Promise.resolve(seen);
    return new Promise((resolve, reject) => {
      const entry = {
        match,
        resolve: (l: LogLine) => {
          clearTimeout(timer);
          resolve(l);
        },
      };
      const timer = setTimeout(() => {
        this.waiters.splice(this.waiters.indexOf(entry), 1);
        reject(new Error(`timed out after ${ms} ms waiting for ${what}; last lines:\n${this.tail()}`));
      }, ms);
      this.waiters.push(entry);
      void this.exited.then(({ code, signal }) => {
        if (!this.waiters.includes(entry)) return;
        clearTimeout(timer);
        reject(new Error(`process exited (${code ?? signal}) while waiting for ${what}:\n${this.tail()}`));
      });
    });
  }

  started(ms = 30_000): Promise<LogLine> {
    return this.waitFor((l) => l.msg === 'host started', ms, 'host started');
  }

  tail(n = 15): string {
    return [...this.lines.slice(-n).map((l) => JSON.stringify(l)), ...this.stderr.slice(-5)].join('\n');
  }

  /** SIGTERM and wait for the exit (SIGKILL after `ms`, scaled). */
  async stop(quietMs = 15_000): Promise<{ code: number | null; signal: NodeJS.Signals | null }> {
    if (this.proc.exitCode !== null || this.proc.signalCode !== null) return this.exited;
    this.proc.kill('SIGTERM');
    const timer = setTimeout(() => this.proc.kill('SIGKILL'), scaled(quietMs));
    const r = await this.exited;
    clearTimeout(timer);
    return r;
  }

  kill9(): Promise<{ code: number | null; signal: NodeJS.Signals | null }> {
    this.proc.kill('SIGKILL');
    return this.exited;
  }
}

/** A free loopback TCP port (bound then released: good enough for a test's own servers). */
export async function freePort(): Promise<number> {
  const srv = net.createServer();
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', () => r()));
  const port = (srv.address() as net.AddressInfo).port;
  await new Promise<void>((r) => srv.close(() => r()));
  return port;
}

/** Whether something accepts TCP connections on 127.0.0.1:`port` now (a server started by a test). */
export function listening(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = net.connect(port, '127.0.0.1');
    s.once('connect', () => {
      s.destroy();
      resolve(true);
    });
    s.once('error', () => resolve(false));
  });
}

/** A temp directory with a config file in it. */
export function writeTempConfig(prefix: string, yaml: string): { dir: string; file: string; cleanup(): void } {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), `gmq-${prefix}-`));
  const file = path.join(dir, 'config.yml');
  fs.writeFileSync(file, yaml);
  return { dir, file, cleanup: () => fs.rmSync(dir, { recursive: true, force: true }) };
}
