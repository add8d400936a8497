import { randomUUID } from 'node:crypto';
import type { ModuleBus } from '../../../core/bus.js';
import { errorCode } from '../../../core/errors.js';
import { TERMINAL_STATUSES } from '../../command/contract/schemas.js';
import {
  COMMAND,
  type CommandDetail,
  type CommandEvent,
  type SendCommandRequest,
  type SentCommand,
} from '../../command/contract/topics.js';

export type SyncOutcome = (
  | { done: true; command: CommandDetail }
  /** The wait ran out: the command goes on; `command` is its current state, for following it by id. */
  | { done: false; command: CommandDetail | null; command_id: string }
) & {
  /** The request's idempotency key named a command made before: this outcome is that command's. */
  replayed?: true;
};

/**
 * Synchronous sends for an interface module (web, grpc). docs/architecture.md#a-command-end-to-end: the waiter lives with the
 * caller, keyed by a command id chosen *before* the send, so a restart of the command module
 * loses no waiter; result events wake it at once, and a slow poll of the database (through
 * `command/get`) catches a result whose event was missed while the command module restarted.
 * With several hub instances on one database, a result that lands on another instance comes
 * here as a `remote` result event (command module, cluster-events.ts): pushed too, so the poll
 * stays the safety net it is (`answers` counts which of the two found each result).
 *
 * @example
 *   const waiter = new CommandWaiter(ctx.bus);
 *   waiter.attach();                       // once, in start()
 *   const out = await waiter.sendAndWait({ project_id, command_type: 'echo', payload }, 10_000);
 */
export class CommandWaiter {
  private readonly bus: ModuleBus;
  private readonly pollMs: number;
  /** Wake-ups per command id (several callers may wait for one command: idempotent retries). */
  private readonly waiters = new Map<string, Set<() => void>>();
  /** Results that arrived as events for a waiting caller, taken by its loop. */
  private readonly results = new Map<string, CommandDetail>();
  /**
   * Sync calls answered, by how their result was found: from a result event (this instance's or,
   * announced through the database, another instance's) or by a database read (the slow poll,
   * or a final state that carries no result: failed, timeout, cancelled).
   */
  readonly answers = { event: 0, poll: 0 };

  constructor(bus: ModuleBus, opts: { pollMs?: number } = {}) {
    this.bus = bus;
    this.pollMs = opts.pollMs ?? 1000;
  }

  /** Subscribes to command events; call once when the owning module starts. */
  attach(): void {
    this.bus.subscribe<CommandEvent>(COMMAND.eventPattern, (ev) => {
      if (ev.kind === 'log') return;
      const waiters = this.waiters.get(ev.command.command_id);
      if (!waiters) return;
      const waiter = () => {
        for (const w of waiters) w();
      };
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
      } else if (TERMINAL_STATUSES.has(ev.command.status) && ev.command.status !== 'completed') waiter();
      // 'completed' is written with its result, whose event follows (from another instance it
      // may come a read later): waking here would only read the database for what is on its way
    });
  }

  get waiting(): number {
    return this.waiters.size;
  }

  /**
   * Sends with a fresh (or the caller's) command id and waits up to `waitMs` for a final state.
   * `signal` ends the wait early (the caller went away or the module is stopping): the outcome
   * is then the same as a wait that ran out. `onSent` is called once the command is accepted,
   * before the wait (an interface writes the send's audit record meanwhile).
   */
  async sendAndWait(
    req: SendCommandRequest,
    waitMs: number,
    opts: { signal?: AbortSignal; onSent?: (sent: SentCommand) => void } = {},
  ): Promise<SyncOutcome> {
    let commandId = req.command_id ?? randomUUID();
    let wake!: () => void;
    let woken = new Promise<void>((r) => {
      wake = r;
    });
    const me = () => wake();
    // registered before the send: a result can never arrive before its waiter exists
    this.listen(commandId, me);
    const deadline = Date.now() + waitMs;
    try {
      const sent = await this.bus.request<SentCommand>(
        COMMAND.send,
        { ...req, command_id: commandId, is_sync: true },
        { timeoutMs: Math.max(1000, waitMs) },
      );
      if (sent.command_id !== commandId) {
        // The idempotency key named an earlier command: wait for that one. Its result may be in
        // already, so the first look is at once (listening first: nothing falls in between).
        this.unlisten(commandId, me);
        commandId = sent.command_id;
        this.listen(commandId, me);
        wake();
      }
      opts.onSent?.(sent);
      const flag = sent.idempotent_replayed ? ({ replayed: true } as const) : {};
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
          if (fromEvent) {
            this.answers.event++;
            return { done: true, command: fromEvent, ...flag };
          }
          const current = await this.get(commandId);
          if (current && TERMINAL_STATUSES.has(current.status) && (current.result || current.status !== 'completed')) {
            this.answers.poll++;
            return { done: true, command: current, ...flag };
          }
        }
      } finally {
        signal?.removeEventListener('abort', onAbort);
      }
      return {
        done: false,
        command: signal?.aborted ? null : await this.get(commandId),
        command_id: commandId,
        ...flag,
      };
    } finally {
      // the last waiter of a command takes its result event with it
      if (this.unlisten(commandId, me)) this.results.delete(commandId);
    }
  }

  private listen(commandId: string, fn: () => void): void {
    const set = this.waiters.get(commandId);
    if (set) set.add(fn);
    else this.waiters.set(commandId, new Set([fn]));
  }

  /** True when no one waits for the command any more. */
  private unlisten(commandId: string, fn: () => void): boolean {
    const set = this.waiters.get(commandId);
    if (!set) return true;
    set.delete(fn);
    if (set.size > 0) return false;
    this.waiters.delete(commandId);
    return true;
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
