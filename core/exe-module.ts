import { type ChildProcess, spawn } from 'node:child_process';
import { z } from 'zod';
import { HubError } from './errors.js';
import type { ModuleContext, ModuleInstance, ModuleProvider } from './module.js';
import { RemotePeer } from './remote-peer.js';
import { within } from './within.js';

export interface ExeSpec {
  command: string;
  args: string[];
  env: Record<string, string>;
  cwd: string;
}

/** Lines longer than this from a child are refused (and counted) instead of buffered without end. */
const MAX_LINE = 1024 * 1024;
/** How long a stopping child may take to finish its event in flight, then to exit on `stop`, before SIGTERM. */
const GRACE_MS = 2000;
/** A child that closed its input is given this long to exit before it is reported as crashed. */
const INPUT_LOST_MS = 5000;

/**
 * A `type: exe` module: a child process in any language that speaks line-delimited JSON over
 * stdin/stdout (the ops are listed in remote-peer.ts and the README). stderr lines are logged.
 * Plain events are written without waiting for an answer; bus requests wait for `reply`.
 *
 * @example
 *   // config.yml
 *   //   py: { type: exe, command: python3, args: [examples/exe/echo_module.py], crash_after: 0 }
 */
export function exeProvider(spec: ExeSpec): ModuleProvider<Record<string, unknown>> {
  return {
    name: `exe:${spec.command}`,
    schema: z.record(z.string(), z.unknown()),
    create: (ctx) => new ExeModule(ctx as ModuleContext<unknown>, spec),
  };
}

class ExeModule implements ModuleInstance {
  private readonly ctx: ModuleContext<unknown>;
  private readonly spec: ExeSpec;
  private child?: ChildProcess;
  private peer?: RemotePeer;
  private stopping = false;
  /** Settles when the process is gone (exit, or it never started) … */
  private exited?: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  /** … and when its stdout is closed too, i.e. every line it wrote has been read. */
  private closed?: Promise<void>;

  constructor(ctx: ModuleContext<unknown>, spec: ExeSpec) {
    this.ctx = ctx;
    this.spec = spec;
  }

  async start(): Promise<void> {
    const child = spawn(this.spec.command, this.spec.args, {
      cwd: this.spec.cwd,
      env: { ...process.env, ...this.spec.env },
      stdio: ['pipe', 'pipe', 'pipe'],
    });
    this.child = child;
    const stdin = child.stdin!;
    let gone = false;
    let startError: Error | undefined;
    this.exited = new Promise((resolve) => {
      child.once('exit', (code, signal) => resolve({ code, signal }));
      // 'error' alone (no 'exit') when the command cannot be run; later 'error's (a failed kill)
      // must still be listened to, or the host would die of an unhandled 'error'
      child.on('error', (err) => {
        if (child.pid === undefined) {
          startError = new HubError('HOST_ERR_START_FAILED', `cannot run ${this.spec.command}: ${err.message}`);
          resolve({ code: null, signal: null });
        } else this.ctx.log.warn({ err: err.message }, 'exe process error');
      });
    });
    this.closed = new Promise((resolve) => child.once('close', () => resolve()));
    const peer = new RemotePeer(
      this.ctx,
      {
        send: (m) => {
          if (gone) return true; // the crash path has reported it and paused the mailbox
          // The pipe broke (EPIPE): the child is dying, but on a busy machine its 'exit' can come
          // well after. Until then each event waits (drained) instead of being dropped: passed as
          // written, a whole mailbox of them drained into nothing before the crash was seen.
          if (!stdin.writable) return false;
          return stdin.write(`${JSON.stringify(m)}\n`);
        },
        // a write that filled the pipe waits for room, or for the end of the process (never for ever)
        drained: () =>
          new Promise<void>((resolve) => {
            if (gone) return resolve();
            const done = () => {
              stdin.off('drain', done);
              resolve();
            };
            stdin.on('drain', done);
            // after the crash report (registered first, below), so the mailbox is paused by then
            void this.exited!.then(done);
          }),
      },
      { ackEveryEvent: false },
    );
    this.peer = peer;
    stdin.on('error', () => undefined); // EPIPE after the child died is reported through 'exit'
    // A child that closes its input but lives on would hold the event waiting for it for ever:
    // after INPUT_LOST_MS without an exit it is reported as crashed (the restart stops it).
    stdin.once('close', () => {
      if (this.stopping || gone) return;
      const t = setTimeout(() => {
        if (this.stopping || gone) return;
        gone = true;
        this.ctx.crashed(new Error(`process ${this.ctx.name} closed its input and did not exit`));
      }, INPUT_LOST_MS);
      void this.exited!.then(() => clearTimeout(t));
    });
    this.readLines(child, peer);
    splitLines(child.stderr!, MAX_LINE, (line) => this.ctx.log.warn({ stderr: line.slice(0, 2000) }, 'exe stderr'));

    // The crash is reported at 'exit' (so the host pauses the mailbox at once); the events still
    // waiting for a reply fail only at 'close', once the lines the child wrote before dying are read.
    const ended = this.exited.then(({ code, signal }) => {
      const reported = gone; // by the closed-input timer
      gone = true;
      const err = startError ?? new Error(`process exited (code ${code}, signal ${signal})`);
      if (!this.stopping && !reported) this.ctx.crashed(err);
      return err;
    });
    void this.closed.then(() => peer.failAll(`process ${this.ctx.name} exited`));
    peer.hello();
    await Promise.race([
      peer.ready,
      ended.then((err) => {
        throw err;
      }),
    ]);
  }

  /** One JSON object per line; a line that is not JSON or is too long is counted, never fatal. */
  private readLines(child: ChildProcess, peer: RemotePeer): void {
    splitLines(
      child.stdout!,
      MAX_LINE,
      (line) => {
        let msg: unknown;
        try {
          msg = JSON.parse(line);
        } catch {
          return peer.malformed('line is not JSON');
        }
        try {
          peer.onMessage(msg);
        } catch (err) {
          peer.malformed(`message could not be handled: ${(err as Error).message}`);
        }
      },
      () => peer.malformed(`line longer than ${MAX_LINE} bytes`),
    );
  }

  async stop(): Promise<void> {
    this.stopping = true;
    const child = this.child;
    if (!child || !this.exited) return;
    if (child.exitCode === null && child.signalCode === null && child.pid !== undefined) {
      // let the requests already written be answered, then ask, then insist: SIGTERM, SIGKILL
      await within(GRACE_MS, Promise.race([this.peer!.idle(), this.exited]));
      if (child.stdin?.writable) child.stdin.write(`${JSON.stringify({ op: 'stop' })}\n`);
      child.stdin?.end();
      let exit = await within(GRACE_MS, this.exited);
      if (!exit) {
        child.kill('SIGTERM');
        exit = await within(GRACE_MS, this.exited);
      }
      if (!exit) child.kill('SIGKILL');
      const { code, signal } = exit ?? (await this.exited);
      this.ctx.log.info({ pid: child.pid, code, signal }, 'exe process stopped');
    }
    // a grandchild holding stdout open must not hold the stop: read what came, then let go
    await within(GRACE_MS, this.closed!);
    child.stdout?.destroy();
    child.stderr?.destroy();
    this.peer?.failAll('process stopped');
  }
}

/**
 * Splits a byte stream into UTF-8 lines without ever holding more than `max` bytes of one line:
 * past that, the rest of the line is skipped and `onOversized` called once for it.
 */
function splitLines(
  stream: NodeJS.ReadableStream,
  max: number,
  onLine: (line: string) => void,
  onOversized: () => void = () => undefined,
): void {
  let parts: Buffer[] = [];
  let size = 0;
  let skipping = false;
  const emit = (tail: Buffer) => {
    const line = (parts.length === 0 ? tail : Buffer.concat([...parts, tail])).toString('utf8').replace(/\r$/, '');
    parts = [];
    size = 0;
    if (line.length > 0) onLine(line);
  };
  stream.on('data', (chunk: Buffer) => {
    let from = 0;
    for (;;) {
      const nl = chunk.indexOf(10, from);
      if (nl < 0) break;
      if (skipping) skipping = false;
      else if (size + nl - from > max) {
        parts = [];
        size = 0;
        onOversized();
      } else emit(chunk.subarray(from, nl));
      from = nl + 1;
    }
    if (from >= chunk.length || skipping) return;
    const rest = chunk.subarray(from);
    if (size + rest.length > max) {
      parts = [];
      size = 0;
      skipping = true;
      onOversized();
      return;
    }
    parts.push(rest);
    size += rest.length;
  });
  stream.on('end', () => {
    if (!skipping && size > 0) emit(Buffer.alloc(0));
  });
  stream.on('error', () => undefined);
}
