/**
 * The agent's built-in command handlers, answered on `agent/handler/echo` and
 * `agent/handler/host_exec` like any other module's handler.
 *
 * host_exec runs an allow-listed executable with an argument array: `spawn(cmd, args, {shell:false})`,
 * never a shell, so nothing in the payload is ever interpreted by one. The child runs in its own
 * process group and the whole group is killed on timeout (SIGTERM, then SIGKILL after a grace)
 * and when the module stops. Output is capped and streamed as it arrives.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { StringDecoder } from 'node:string_decoder';
import { z } from 'zod';
import { HubError } from '../../core/errors.js';
import type { Logger } from '../../core/log.js';
import type { ModuleTimers } from '../../core/module.js';
import type { AgentConfig } from './config.js';
import type { AgentTaskRequest, AgentTaskResult } from './contract/topics.js';
import { capUtf8 } from './log-buffer.js';

/** echo: the payload back as JSON text. */
export function echo(req: AgentTaskRequest): AgentTaskResult {
  return { status: 'success', exit_code: 0, output: JSON.stringify(req.payload ?? null), error: '' };
}

export const HostExecPayloadSchema = z
  .object({
    command: z.string().min(1).max(4096),
    args: z.array(z.string().max(65_536)).max(1024).default([]),
    timeout_ms: z.number().int().min(1).optional(),
  })
  .strict();

type HostExecConfig = AgentConfig['handlers']['host_exec'];

export interface HostExecDeps {
  cfg: HostExecConfig;
  /** Values never handed to a child's environment (the project secret and MQTT password). */
  secretValues: string[];
  /** Streams one piece of output of a command. */
  emit: (commandId: string, content: string) => void;
  timers: ModuleTimers;
  log: Logger;
  signal: AbortSignal;
}

export class HostExec {
  private readonly d: HostExecDeps;
  private readonly children = new Set<ChildProcess>();

  constructor(deps: HostExecDeps) {
    this.d = deps;
    deps.signal.addEventListener('abort', () => this.killAll(), { once: true });
  }

  get running(): number {
    return this.children.size;
  }

  /** Throws AGENT_ERR_INVALID (bad payload) or AGENT_ERR_NOT_ALLOWED; otherwise resolves with the run's result. */
  run(req: AgentTaskRequest): Promise<AgentTaskResult> {
    const parsed = HostExecPayloadSchema.safeParse(req.payload);
    if (!parsed.success) {
      const issue = parsed.error.issues[0];
      throw new HubError(
        'AGENT_ERR_INVALID',
        `host_exec payload: ${issue?.path.join('.') || '(payload)'}: ${issue?.message ?? 'invalid'}`,
      );
    }
    const { command, args } = parsed.data;
    const { cfg } = this.d;
    if (!cfg.allow.includes(command)) {
      this.d.log.warn({ command_id: req.command_id, command }, 'host_exec refused: not in the allow list');
      throw new HubError(
        'AGENT_ERR_NOT_ALLOWED',
        `command ${JSON.stringify(command)} is not in handlers.host_exec.allow`,
      );
    }
    if (this.d.signal.aborted) throw new HubError('AGENT_ERR_HANDLER', 'agent is stopping');
    const left = Number.isFinite(req.deadline) ? req.deadline - Date.now() : cfg.timeout_ms;
    const timeoutMs = Math.max(1, Math.min(parsed.data.timeout_ms ?? cfg.timeout_ms, left));
    return this.spawn(req.command_id, command, args, timeoutMs);
  }

  private spawn(commandId: string, command: string, args: string[], timeoutMs: number): Promise<AgentTaskResult> {
    const { cfg, timers, log } = this.d;
    return new Promise<AgentTaskResult>((resolve) => {
      const env: NodeJS.ProcessEnv = {};
      for (const [k, v] of Object.entries(process.env)) {
        if (v !== undefined && !this.d.secretValues.includes(v)) env[k] = v;
      }
      let child: ChildProcess;
      try {
        child = spawn(command, args, {
          shell: false,
          stdio: ['ignore', 'pipe', 'pipe'],
          detached: process.platform !== 'win32',
          windowsHide: true,
          env,
        });
      } catch (err) {
        resolve({ status: 'failure', exit_code: -1, output: '', error: `spawn failed: ${(err as Error).message}` });
        return;
      }
      this.children.add(child);
      log.info({ command_id: commandId, command, pid: child.pid, timeout_ms: timeoutMs }, 'host_exec started');

      const parts: string[] = [];
      let kept = 0;
      let truncated = false;
      let timedOut = false;
      let spawnError: Error | null = null;
      let settled = false;
      const decoders = { out: new StringDecoder('utf8'), err: new StringDecoder('utf8') };
      const take = (text: string) => {
        if (text.length === 0) return;
        const room = cfg.max_output_bytes - kept;
        if (room <= 0) {
          truncated = true;
          return;
        }
        const piece = capUtf8(text, room);
        if (piece.truncated) truncated = true;
        if (piece.text.length === 0) return;
        kept += Buffer.byteLength(piece.text, 'utf8');
        parts.push(piece.text);
        this.d.emit(commandId, piece.text);
      };
      child.stdout?.on('data', (b: Buffer) => take(decoders.out.write(b)));
      child.stderr?.on('data', (b: Buffer) => take(decoders.err.write(b)));

      let killTimer: NodeJS.Timeout | null = null;
      const timer = timers.setTimeout(() => {
        timedOut = true;
        signalGroup(child, 'SIGTERM');
        killTimer = timers.setTimeout(() => signalGroup(child, 'SIGKILL'), cfg.kill_grace_ms);
      }, timeoutMs);

      const finish = (code: number | null, sig: NodeJS.Signals | null) => {
        if (settled) return;
        settled = true;
        timers.clear(timer);
        if (killTimer) timers.clear(killTimer);
        this.children.delete(child);
        take(decoders.out.end());
        take(decoders.err.end());
        let output = parts.join('');
        if (truncated) output += `\n[output truncated at ${cfg.max_output_bytes} bytes]`;
        const exitCode = code ?? -1;
        let result: AgentTaskResult;
        if (spawnError) {
          result = { status: 'failure', exit_code: -1, output, error: `spawn failed: ${spawnError.message}` };
        } else if (timedOut) {
          result = { status: 'timeout', exit_code: exitCode, output, error: `timed out after ${timeoutMs} ms; killed` };
        } else if (code === 0) {
          result = { status: 'success', exit_code: 0, output, error: '' };
        } else {
          const why = sig ? `killed by signal ${sig}` : `exited with code ${code}`;
          result = { status: 'failure', exit_code: exitCode, output, error: why };
        }
        log.info(
          { command_id: commandId, status: result.status, exit_code: result.exit_code, bytes: kept },
          'host_exec finished',
        );
        resolve(result);
      };
      child.on('error', (err) => {
        spawnError = err;
        // a spawn failure (ENOENT, EACCES) may not be followed by 'close' on every platform
        if (child.pid === undefined) finish(null, null);
      });
      child.on('close', (code, sig) => finish(code, sig));
    });
  }

  /** Kills every running child at once (the module stops). */
  killAll(): void {
    for (const c of this.children) signalGroup(c, 'SIGKILL');
  }
}

function signalGroup(child: ChildProcess, sig: NodeJS.Signals): void {
  try {
    // detached: the child leads its own process group; a negative pid signals the whole group,
    // including grandchildren that may still hold the output pipes after the child itself exited
    if (process.platform !== 'win32' && child.pid !== undefined) process.kill(-child.pid, sig);
    else if (child.exitCode === null && child.signalCode === null) child.kill(sig);
  } catch {
    // the group is gone already
  }
}
