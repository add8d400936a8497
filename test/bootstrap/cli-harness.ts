/**
 * Running the compiled `gmq-hub` CLI (dist/bootstrap/cli.js) as a child process: one-shot runs
 * with their exit code and output, long runs (watch, start) whose lines a test waits for with a
 * bound, and a TCP proxy a test can cut to make a WebSocket client reconnect.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import net from 'node:net';
import path from 'node:path';
import { createInterface } from 'node:readline';
import { REPO_ROOT } from '../helpers/process.js';
import { scaled } from '../helpers/wait.js';

export const CLI = path.join(REPO_ROOT, 'dist/bootstrap/cli.js');

export interface CliResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

/** Environment for a CLI child without anything of ours that could point it elsewhere. */
export function cliEnv(env: NodeJS.ProcessEnv): NodeJS.ProcessEnv {
  const base = { ...process.env };
  for (const k of ['HUB_URL', 'HUB_API_TOKEN', 'HUB_HTTP_PORT', 'HUB_CONFIG']) delete base[k];
  return { ...base, ...env };
}

/** Runs `gmq-hub ...args` to its exit (killed after `ms`). Asynchronous: an in-process hub keeps serving meanwhile. */
export function runCli(args: readonly string[], env: NodeJS.ProcessEnv, ms = 30_000): Promise<CliResult> {
  return runScript(CLI, args, env, ms);
}

/** Runs `node <script> ...args` to its exit (killed after `ms`). */
export function runScript(
  script: string,
  args: readonly string[],
  env: NodeJS.ProcessEnv,
  ms = 30_000,
): Promise<CliResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [script, ...args], { env: cliEnv(env), stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (d: string) => {
      stdout += d;
    });
    child.stderr.setEncoding('utf8').on('data', (d: string) => {
      stderr += d;
    });
    const bound = scaled(ms);
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(
        new Error(`gmq-hub ${args.join(' ')} did not exit within ${bound} ms\nstdout: ${stdout}\nstderr: ${stderr}`),
      );
    }, bound);
    child.once('error', reject);
    child.once('close', (code, signal) => {
      clearTimeout(timer);
      resolve({ code, signal, stdout, stderr });
    });
  });
}

/** A CLI child that keeps running (watch, start): its output lines, waited for with a bound. */
export class CliProcess {
  readonly proc: ChildProcess;
  readonly stdout: string[] = [];
  readonly stderr: string[] = [];
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  private wake: Array<() => void> = [];

  constructor(args: readonly string[], env: NodeJS.ProcessEnv, opts: { cwd?: string } = {}) {
    this.proc = spawn(process.execPath, [CLI, ...args], {
      env: cliEnv(env),
      cwd: opts.cwd,
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    const feed = (into: string[]) => (line: string) => {
      into.push(line);
      for (const w of this.wake.splice(0)) w();
    };
    createInterface({ input: this.proc.stdout! }).on('line', feed(this.stdout));
    createInterface({ input: this.proc.stderr! }).on('line', feed(this.stderr));
    this.exited = new Promise((resolve) =>
      this.proc.once('exit', (code, signal) => {
        resolve({ code, signal });
        for (const w of this.wake.splice(0)) w();
      }),
    );
  }

  /** The first line of `stream` (already seen or to come) that matches; rejects after `ms` or on exit. */
  line(stream: 'stdout' | 'stderr', match: (l: string) => boolean, ms: number, what: string): Promise<string> {
    return this.until(() => this[stream].find(match), ms, what);
  }

  /** Resolves with `probe()`'s first defined value, re-checked on every new line; rejects after `ms` or on exit. */
  async until<T>(probe: () => T | undefined, quietMs: number, what: string): Promise<T> {
    const ms = scaled(quietMs);
    const deadline = Date.now() + ms;
    for (;;) {
      const found = probe();
      if (found !== undefined) return found;
      if (this.proc.exitCode !== null || this.proc.signalCode !== null) {
        throw new Error(`gmq-hub exited while waiting for ${what}\n${this.tail()}`);
      }
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`timed out after ${ms} ms waiting for ${what}\n${this.tail()}`);
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, left);
        this.wake.push(() => {
          clearTimeout(t);
          resolve();
        });
      });
    }
  }

  /** The stdout lines parsed as JSON. */
  json(): Array<Record<string, unknown>> {
    return this.stdout.map((l) => JSON.parse(l) as Record<string, unknown>);
  }

  tail(): string {
    return `stdout:\n${this.stdout.slice(-10).join('\n')}\nstderr:\n${this.stderr.slice(-10).join('\n')}`;
  }

  /** Sends `signal` and waits for the exit (SIGKILL after `ms`). */
  async stop(signal: NodeJS.Signals = 'SIGINT', ms = 15_000) {
    if (this.proc.exitCode === null && this.proc.signalCode === null) this.proc.kill(signal);
    const t = setTimeout(() => this.proc.kill('SIGKILL'), scaled(ms));
    const r = await this.exited;
    clearTimeout(t);
    return r;
  }
}

/**
 * A loopback TCP proxy to `target` on a free port. `down()` cuts every open connection and
 * refuses new ones (accepted, then destroyed) until `up()`.
 */
export class TcpProxy {
  private readonly sockets = new Set<net.Socket>();
  private open = true;
  readonly server: net.Server;
  port = 0;

  constructor(private readonly target: number) {
    this.server = net.createServer((client) => {
      if (!this.open) {
        client.destroy();
        return;
      }
      const upstream = net.connect(this.target, '127.0.0.1');
      for (const s of [client, upstream]) {
        s.setNoDelay(true);
        this.sockets.add(s);
        s.on('close', () => this.sockets.delete(s));
        s.on('error', () => {
          client.destroy();
          upstream.destroy();
        });
      }
      client.pipe(upstream);
      upstream.pipe(client);
    });
  }

  async listen(): Promise<this> {
    await new Promise<void>((resolve) => this.server.listen(0, '127.0.0.1', () => resolve()));
    this.port = (this.server.address() as net.AddressInfo).port;
    return this;
  }

  get url(): string {
    return `http://127.0.0.1:${this.port}`;
  }

  down(): void {
    this.open = false;
    for (const s of this.sockets) s.destroy();
  }

  up(): void {
    this.open = true;
  }

  async close(): Promise<void> {
    this.down();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }
}
