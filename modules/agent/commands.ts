/**
 * Commands from `wdd/RDMC/command/down/{project_id}` (docs/wire-protocol.md#mqtt-wire-protocol, docs/architecture.md#a-command-end-to-end).
 *
 * 1. Signature, clock window and message_id replay are checked (`verifyInbound`). A forged or
 *    stale command is dropped: not run, not acknowledged (nobody asked), logged and counted.
 * 2. A message_id seen before is the hub re-publishing until it gets our ack: `command_ack` again,
 *    plus the result again if there is one; never run twice.
 * 3. A new command is acknowledged at once, then run through the bus:
 *    `request(agent/handler/{command_type}, AgentTaskRequest)`. Output the handler streams as
 *    `agent/output/{command_id}` goes out as buffered `log_result` chunks, then `exec_result`.
 */
import type { ModuleBus } from '../../core/bus.js';
import { errorCode } from '../../core/errors.js';
import type { Logger } from '../../core/log.js';
import type { CommandMessage, ExecResultPayload, ExecStatus } from '../shared/protocol.js';
import { ReplayCache, type SentText, verifyInbound } from '../shared/signing.js';
import type { AgentConfig } from './config.js';
import { AGENT, type AgentTaskRequest, type AgentTaskResult } from './contract/topics.js';
import { capUtf8, type LogBuffers } from './log-buffer.js';

/** Past its deadline a handler gets this long to report its own `timeout` result before the agent does. */
export const HANDLER_GRACE_MS = 1000;
/** How many finished commands are remembered, for re-sending their result to a duplicate. */
const REMEMBERED = 10_000;

interface CommandRecord {
  done: boolean;
  /** When the command was accepted (ms). */
  at: number;
  result?: ExecResultPayload;
  /** Next log seq once the command's buffer is closed. */
  seq: number;
}

export interface RunnerCounters {
  commands_run: number;
  commands_rejected: number;
  duplicates: number;
  /** Results that waited for the mailbox barrier (a handler of another module, whose output comes over the bus). */
  result_barrier_waits: number;
}

export interface RunnerDeps {
  cfg: AgentConfig;
  bus: ModuleBus;
  log: Logger;
  logs: LogBuffers;
  /** Queues an uplink data message (through the retry queue); `durable`: on disk before it is sent. */
  enqueue: (dataType: string, payload: unknown, durable?: boolean) => void;
  /** Resolves once output events already waiting in the agent's mailbox have been handled. */
  barrier: () => Promise<void>;
  /**
   * Whether this module's own handler runs the type (echo, host_exec): it hands its output to the
   * runner directly, so its result needs no barrier.
   */
  ownHandler: (commandType: string) => boolean;
  counters: RunnerCounters;
  rejectedLog: (fields: Record<string, unknown>, msg: string) => void;
  /** Records an accepted command id on disk before it is acknowledged or run (seen-journal.ts). */
  accepted?: (id: string, at: number) => void;
  /** Records on disk that a command's result was queued (seen-journal.ts `done`). */
  finished?: (id: string, at: number) => void;
}

export class CommandRunner {
  private readonly d: RunnerDeps;
  private readonly replay: ReplayCache;
  private readonly records = new Map<string, CommandRecord>();
  private stopped = false;

  constructor(deps: RunnerDeps) {
    this.d = deps;
    // covers the whole clock window both ways, like the hub's own cache
    this.replay = new ReplayCache({ ttlMs: Math.max(600_000, 2 * deps.cfg.clock_window_ms + 1) });
  }

  get running(): number {
    let n = 0;
    for (const r of this.records.values()) if (!r.done) n++;
    return n;
  }

  /** `sent`: the parser's text of it (the signature is checked against it as sent first). */
  onCommand(msg: CommandMessage, sent?: SentText): void {
    if (this.stopped) return;
    const { cfg, counters, log } = this.d;
    const commandId = msg.message_id;
    const v = verifyInbound(msg, cfg.secret, this.replay, Date.now(), cfg.clock_window_ms, sent);
    if (!v.ok) {
      if (v.code === 'PROTO_ERR_REPLAY') {
        counters.duplicates++;
        const rec = this.records.get(commandId);
        log.info({ command_id: commandId, done: rec?.done ?? null }, 'duplicate command: acknowledged again, not run');
        this.d.enqueue('command_ack', { command_id: commandId });
        if (rec?.result) this.d.enqueue('exec_result', rec.result);
        return;
      }
      counters.commands_rejected++;
      this.d.rejectedLog(
        { command_id: commandId, command_type: msg.command_type, code: v.code, reason: v.reason },
        'command rejected',
      );
      return;
    }
    counters.commands_run++;
    const at = Date.now();
    this.d.accepted?.(commandId, at);
    this.remember(commandId, { done: false, at, seq: 0 });
    this.d.enqueue('command_ack', { command_id: commandId });
    // one info line per command: operators (and the fault suites) count executions from it
    log.info({ command_id: commandId, command_type: msg.command_type }, 'command accepted');
    void this.run(msg);
  }

  /** Output a handler streamed for `commandId`. */
  onOutput(commandId: string, content: string): void {
    const rec = this.records.get(commandId);
    if (!rec || typeof content !== 'string') return;
    if (!rec.done) {
      this.d.logs.append(commandId, content);
      return;
    }
    // late output (after the result went): still delivered, continuing the sequence
    this.d.logs.reopen(commandId, rec.seq);
    this.d.logs.append(commandId, content);
    rec.seq = this.d.logs.close(commandId);
  }

  /**
   * Ids of the commands accepted within the replay window, so the next process can still tell a
   * re-published command (the hub repeats until it sees our ack) from a new one.
   */
  exportSeen(): Array<{ id: string; at: number }> {
    const since = Date.now() - this.replay.ttlMs;
    const out: Array<{ id: string; at: number }> = [];
    for (const [id, r] of this.records) if (r.at >= since) out.push({ id, at: r.at });
    return out;
  }

  /**
   * Loads what the journal holds (seen-journal.ts): those ids count as duplicates (acknowledged
   * again, never run). One accepted and without a queued result was waiting or running when the
   * last process ended (kill -9, a crash, a power cut): it is reported failed now, with that
   * reason, so the hub records an outcome at once instead of waiting for the command's timeout.
   * It is not run again (at most once): whatever it did before the end stays done.
   */
  importSeen(list: unknown): { remembered: number; interrupted: number } {
    if (!Array.isArray(list)) return { remembered: 0, interrupted: 0 };
    const since = Date.now() - this.replay.ttlMs;
    const open = new Map<string, number>();
    let remembered = 0;
    for (const e of list as Array<{ id?: unknown; at?: unknown; done?: unknown }>) {
      if (typeof e?.id !== 'string' || typeof e.at !== 'number' || e.at < since) continue;
      if (e.done === true) open.delete(e.id);
      else if (!this.records.has(e.id)) open.set(e.id, e.at);
      if (this.records.has(e.id)) continue;
      this.replay.seen(e.id);
      this.records.set(e.id, { done: true, at: e.at, seq: 0 });
      remembered++;
    }
    for (const [id, at] of open) {
      this.finishFailed(
        id,
        'the agent process ended after accepting the command and before its result; it may have run in part, and was not run again',
        at,
      );
      this.d.log.warn({ command_id: id }, 'command interrupted by the end of the last agent process; reported failed');
    }
    return { remembered, interrupted: open.size };
  }

  /** The module stops: commands still running are reported failed, so the hub is not left waiting. */
  stop(): void {
    this.stopped = true;
    for (const [id, rec] of this.records) {
      if (!rec.done) this.finishFailed(id, 'agent stopped before the command finished', Date.now());
    }
  }

  /** Reports a command failed without a result of its handler (the agent stopping, or the last process gone); `since` is its start_time. */
  private finishFailed(id: string, error: string, since: number): void {
    const now = Date.now();
    this.finish(id, this.records.get(id)!, {
      command_id: id,
      status: 'failure',
      exit_code: -1,
      output: '',
      error,
      start_time: since,
      end_time: now,
      duration: now - since,
    });
  }

  private async run(msg: CommandMessage): Promise<void> {
    const { cfg, bus, log } = this.d;
    const commandId = msg.message_id;
    const type = msg.command_type;
    const start = Date.now();
    const timeoutMs = taskTimeout(msg.payload, cfg.default_task_timeout_ms);
    const req: AgentTaskRequest = {
      command_id: commandId,
      command_type: type,
      payload: msg.payload,
      deadline: start + timeoutMs,
    };
    let status: ExecStatus;
    let exitCode: number;
    let output = '';
    let error = '';
    try {
      const r = await bus.request<AgentTaskResult | undefined>(AGENT.handler(type), req, {
        timeoutMs: timeoutMs + HANDLER_GRACE_MS,
      });
      ({ status, exitCode, output, error } = normalise(r));
    } catch (err) {
      const code = errorCode(err);
      exitCode = -1;
      if (code === 'BUS_ERR_NO_RESPONDER') {
        status = 'failure';
        error = `no handler for ${type}`;
      } else if (code === 'BUS_ERR_REQUEST_TIMEOUT') {
        status = 'timeout';
        error = `handler did not answer within ${timeoutMs} ms`;
      } else {
        status = 'failure';
        const m = err instanceof Error ? err.message : String(err);
        error = code ? `${code}: ${m}` : m;
      }
    }
    const rec = this.records.get(commandId);
    if (!rec || rec.done) return;
    // Output events another module's handler published before it answered may still wait in our
    // mailbox. Our own handlers handed theirs over directly, and must not wait: the barrier queues
    // behind the next command's handler in this mailbox (up to BARRIER_TIMEOUT_MS), and a result
    // held in memory that long dies with the process (the chaos suite's agent-kill lost four so).
    if (!this.d.ownHandler(type)) {
      this.d.counters.result_barrier_waits++;
      await this.d.barrier();
      if (rec.done) return;
    }
    const end = Date.now();
    const capped = capUtf8(output, cfg.result_output_max_bytes);
    const result: ExecResultPayload & { output_truncated?: boolean } = {
      command_id: commandId,
      status,
      exit_code: exitCode,
      output: capped.text,
      error,
      start_time: start,
      end_time: end,
      duration: end - start,
    };
    if (capped.truncated) result.output_truncated = true;
    this.finish(commandId, rec, result);
    log.info(
      { command_id: commandId, command_type: type, status, exit_code: exitCode, duration_ms: end - start },
      'command finished',
    );
  }

  private finish(commandId: string, rec: CommandRecord, result: ExecResultPayload): void {
    rec.done = true;
    rec.seq = this.d.logs.close(commandId);
    rec.result = result;
    // on disk before the journal says done: from then on the command is never run again, so its
    // result must outlive this process even if it ends before the broker takes the message
    this.d.enqueue('exec_result', result, true);
    this.d.finished?.(commandId, rec.at);
  }

  private remember(id: string, rec: CommandRecord): void {
    this.records.set(id, rec);
    if (this.records.size <= REMEMBERED) return;
    for (const [k, r] of this.records) {
      if (this.records.size <= REMEMBERED) break;
      if (r.done) this.records.delete(k);
    }
  }
}

/** `payload.timeout_ms` when it is a positive integer, else the default. */
function taskTimeout(payload: unknown, fallback: number): number {
  const t =
    payload !== null && typeof payload === 'object' ? (payload as { timeout_ms?: unknown }).timeout_ms : undefined;
  return typeof t === 'number' && Number.isSafeInteger(t) && t > 0 ? t : fallback;
}

/** A handler's answer comes from any module: keep what is well typed, fill in the rest. */
function normalise(r: AgentTaskResult | undefined): {
  status: ExecStatus;
  exitCode: number;
  output: string;
  error: string;
} {
  const res = r !== null && typeof r === 'object' ? r : {};
  const exit = Number.isSafeInteger(res.exit_code) ? (res.exit_code as number) : undefined;
  const status: ExecStatus =
    res.status === 'success' || res.status === 'failure' || res.status === 'timeout'
      ? res.status
      : exit !== undefined && exit !== 0
        ? 'failure'
        : 'success';
  return {
    status,
    exitCode: exit ?? (status === 'success' ? 0 : -1),
    output: typeof res.output === 'string' ? res.output : res.output === undefined ? '' : JSON.stringify(res.output),
    error: typeof res.error === 'string' ? res.error : '',
  };
}
