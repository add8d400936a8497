import { randomUUID } from 'node:crypto';
import type { ModuleBus } from '../../core/bus.js';
import { errorCode } from '../../core/errors.js';
import {
  COMMAND,
  type CommandDetail,
  type CommandEvent,
  type CommandStatus,
  type SendCommandRequest,
} from './topics.js';

const FINAL: ReadonlySet<CommandStatus> = new Set(['completed', 'failed', 'timeout', 'cancelled']);

export type SyncOutcome =
  | { done: true; command: CommandDetail }
  /** The wait ran out: the command goes on; `command` is its current state, for following it by id. */
  | { done: false; command: CommandDetail | null; command_id: string };

/**
 * Synchronous sends for an interface module (web, grpc). DESIGN §5: the waiter lives with the
 * caller, keyed by a command id chosen *before* the send, so a restart of the command module
 * loses no waiter; result events wake it at once, and a slow poll of the database (through
 * `command/get`) catches a result whose event was missed while the command module restarted.
 *
 * @example
 *   const waiter = new CommandWaiter(ctx.bus);
 *   waiter.attach();                       // once, in start()
 *   const out = await waiter.sendAndWait({ project_id, command_type: 'echo', payload }, 10_000);
 */
export class CommandWaiter {
  private readonly bus: ModuleBus;
  private readonly pollMs: number;
  private readonly waiters = new Map<string, () => void>();
  /** Results that arrived as events for a waiting caller, taken by its loop. */
  private readonly results = new Map<string, CommandDetail>();

  constructor(bus: ModuleBus, opts: { pollMs?: number } = {}) {
    this.bus = bus;
    this.pollMs = opts.pollMs ?? 1000;
  }

  /** Subscribes to command events; call once when the owning module starts. */
  attach(): void {
    this.bus.subscribe<CommandEvent>(COMMAND.eventPattern, (ev) => {
      if (ev.kind === 'log') return;
      const waiter = this.waiters.get(ev.command.command_id);
      if (!waiter) return;
      if (ev.kind === 'result') {
        // the event is the whole record: no read back on the sync path (a late result, after
        // the command timed out, is the database's to tell: the waiter reads that one)
        if (!ev.command.late_result) {
          this.results.set(ev.command.command_id, {
            ...ev.command,
            payload: ev.payload,
            result: ev.result,
            timings: ev.timings,
          });
        }
        waiter();
      } else if (FINAL.has(ev.command.status)) waiter();
    });
  }

  get waiting(): number {
    return this.waiters.size;
  }

  /**
   * Sends with a fresh (or the caller's) command id and waits up to `waitMs` for a final state.
   * `signal` ends the wait early (the caller went away or the module is stopping): the outcome
   * is then the same as a wait that ran out.
   */
  async sendAndWait(
    req: SendCommandRequest,
    waitMs: number,
    opts: { signal?: AbortSignal } = {},
  ): Promise<SyncOutcome> {
    const commandId = req.command_id ?? randomUUID();
    let wake!: () => void;
    let woken = new Promise<void>((r) => {
      wake = r;
    });
    // registered before the send: a result can never arrive before its waiter exists
    this.waiters.set(commandId, () => wake());
    const deadline = Date.now() + waitMs;
    try {
      await this.bus.request(
        COMMAND.send,
        { ...req, command_id: commandId, is_sync: true },
        { timeoutMs: Math.max(1000, waitMs) },
      );
      const signal = opts.signal;
      const onAbort = () => wake();
      signal?.addEventListener('abort', onAbort, { once: true });
      try {
        for (;;) {
          const left = deadline - Date.now();
          if (left <= 0 || signal?.aborted) break;
          let timer: NodeJS.Timeout | undefined;
          await Promise.race([woken, new Promise<void>((r) => (timer = setTimeout(r, Math.min(left, this.pollMs))))]);
          clearTimeout(timer);
          if (signal?.aborted) break;
          woken = new Promise<void>((r) => {
            wake = r;
          });
          const fromEvent = this.results.get(commandId);
          if (fromEvent) return { done: true, command: fromEvent };
          const current = await this.get(commandId);
          if (current && FINAL.has(current.status) && (current.result || current.status !== 'completed')) {
            return { done: true, command: current };
          }
        }
      } finally {
        signal?.removeEventListener('abort', onAbort);
      }
      return { done: false, command: signal?.aborted ? null : await this.get(commandId), command_id: commandId };
    } finally {
      this.waiters.delete(commandId);
      this.results.delete(commandId);
    }
  }

  private async get(commandId: string): Promise<CommandDetail | null> {
    try {
      return await this.bus.request<CommandDetail>(COMMAND.get, { command_id: commandId }, { timeoutMs: 5000 });
    } catch (err) {
      // the command module may be restarting: the next poll tries again
      if (errorCode(err) === 'CMD_ERR_NOT_FOUND') return null;
      return null;
    }
  }
}
