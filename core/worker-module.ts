import { Worker } from 'node:worker_threads';
import { z } from 'zod';
import { HubError } from './errors.js';
import type { ModuleContext, ModuleInstance, ModuleProvider } from './module.js';
import { RemotePeer } from './remote-peer.js';
import { within } from './within.js';

const RUNTIME = new URL('./worker-runtime.js', import.meta.url);
/** How long a stopping worker may take to finish its event in flight, then to run its `stop`, before terminate. */
const GRACE_MS = 2000;

/**
 * A `type: worker` module: the JS file at `file` runs in its own worker_thread. Node cannot
 * unload ES modules in-process (nodejs/node#49442); terminating a worker frees its code, so
 * restarting this module after the file changed really runs the new code.
 *
 * @example
 *   // config.yml
 *   //   greeter: { type: worker, path: examples/worker/greeter.mjs }
 */
export function workerProvider(file: string): ModuleProvider<Record<string, unknown>> {
  return {
    name: `worker:${file}`,
    schema: z.record(z.string(), z.unknown()),
    create: (ctx) => new WorkerModule(ctx as ModuleContext<unknown>, file),
  };
}

class WorkerModule implements ModuleInstance {
  private readonly ctx: ModuleContext<unknown>;
  private readonly file: string;
  private worker?: Worker;
  private peer?: RemotePeer;
  private stopping = false;
  private running = false;
  /** Settles with the exit code once the thread is gone, whatever ended it. */
  private exited?: Promise<number>;

  constructor(ctx: ModuleContext<unknown>, file: string) {
    this.ctx = ctx;
    this.file = file;
  }

  async start(): Promise<void> {
    const worker = new Worker(RUNTIME, {
      workerData: { file: this.file, name: this.ctx.name, config: this.ctx.config },
      stdout: false,
      stderr: false,
    });
    this.worker = worker;
    const peer = new RemotePeer(
      this.ctx,
      {
        send: (m) => {
          worker.postMessage(m);
          return true;
        },
      },
      { ackEveryEvent: true },
    );
    this.peer = peer;
    worker.on('message', (m) => peer.onMessage(m));
    // One 'error' (an uncaught throw in the worker; then 'exit' follows) and one 'exit' listener for
    // the worker's whole life: before `ready` they fail the start, after it they report a crash.
    let firstError: Error | undefined;
    worker.on('error', (err) => {
      firstError ??= err;
      if (this.running) this.died(err);
    });
    this.exited = new Promise((resolve) => worker.once('exit', resolve));
    const ended = this.exited.then((code) => {
      const err =
        firstError ?? new HubError('HOST_ERR_START_FAILED', `worker exited with code ${code} before it was ready`);
      if (this.running) this.died(firstError ?? new Error(`worker exited with code ${code}`));
      return err;
    });
    await Promise.race([
      peer.ready,
      ended.then((err) => {
        throw err;
      }),
    ]);
    this.running = true;
  }

  /** The worker died on its own: tell the host first (it pauses the mailbox), then fail what it held. */
  private died(err: Error): void {
    this.running = false;
    if (!this.stopping) this.ctx.crashed(err);
    this.peer?.failAll(`worker ${this.ctx.name} died`);
  }

  async stop(): Promise<void> {
    this.stopping = true;
    const worker = this.worker;
    if (!worker || !this.exited) return;
    // let the event in flight finish so a planned restart loses nothing, but not for ever
    if (this.running) {
      await within(GRACE_MS, Promise.race([this.peer!.idle(), this.exited]));
      worker.postMessage({ op: 'stop' });
      if ((await within(GRACE_MS, this.exited)) === undefined) await worker.terminate();
    } else {
      await worker.terminate(); // failed start: the thread may still be loading
    }
    await this.exited;
    this.running = false;
    this.peer?.failAll('worker stopped');
  }
}
