import path from 'node:path';
import { z } from 'zod';
import { deriveMqttPassword } from '../shared/credentials.js';
import { DEFAULT_MAX_MESSAGE_BYTES, isValidProjectId } from '../shared/protocol.js';
import { CLOCK_WINDOW_MS } from '../shared/signing.js';

const int = (min: number) => z.number().int().min(min);

/**
 * URL schemes mqtt.js opens a TCP or TLS socket for (we set TCP_NODELAY on it, docs/architecture.md#performance-decisions), and
 * MQTT over WebSocket (`ws://host:port/mqtt`, `wss://…`: seed 004; sites that allow only HTTPS out).
 */
const SCHEMES = ['mqtt:', 'tcp:', 'mqtts:', 'tls:', 'ssl:', 'ws:', 'wss:'];

const HostExecSchema = z
  .object({
    /** Off by default: an agent runs nothing on its host unless the operator says so. */
    enabled: z.boolean().default(false),
    /** Executables allowed, compared exactly with the command's `command` (a path or a name looked up in PATH). No shell ever. */
    allow: z.array(z.string().min(1)).default([]),
    timeout_ms: int(1).default(30_000),
    /** stdout + stderr kept and streamed per run; the rest is discarded and the output marked truncated. */
    max_output_bytes: int(1).default(1_048_576),
    /** After SIGTERM on timeout, SIGKILL follows this much later. */
    kill_grace_ms: int(0).default(2_000),
  })
  .strict();

const QueueSchema = z
  .object({
    memory_max: int(1).default(1000),
    /** Default `${HUB_DATA_DIR:-./data}/agent-queue`, resolved at start; one sub-folder per project. */
    dir: z.string().min(1).optional(),
    disk_max: int(0).default(100_000),
    ttl_ms: int(1).default(86_400_000),
    max_retries: int(1).default(10),
    /** Messages published at once while draining (MQTT keeps their order on the wire). */
    window: int(1).max(1000).default(64),
    /** After a publish fails on a live connection, the queue tries again this much later. */
    retry_delay_ms: int(1).default(1000),
  })
  .strict();

/**
 * Settings of the `agent` module: this host acting as a field agent ("watchdog") of one project.
 *
 * @example
 *   agent:
 *     url: mqtt://hub.example:1883
 *     project_id: plant-7
 *     secret: ${AGENT_SECRET}
 *     handlers: { host_exec: { enabled: true, allow: [/usr/bin/uptime] } }
 */
export const AgentConfigSchema = z
  .object({
    url: z
      .string()
      .min(1)
      .refine(
        (u) => {
          try {
            return SCHEMES.includes(new URL(u).protocol);
          } catch {
            return false;
          }
        },
        `must be a URL with one of the schemes ${SCHEMES.map((s) => `${s}//`).join(', ')}`,
      ),
    project_id: z.string().refine(isValidProjectId, 'must be a valid project id (one MQTT topic level)'),
    /** The project's secret: signs every message and derives the MQTT password. Never logged. */
    secret: z.string().min(1),
    username: z.string().min(1).optional(),
    password: z.string().optional(),
    node_name: z
      .string()
      .regex(/^[A-Za-z0-9_.-]{1,64}$/, 'must be 1-64 characters of [A-Za-z0-9_.-]')
      .default('gmq-agent'),
    /** MQTT client id; default `agent-{project_id}-{node_name}`, stable so the broker keeps the session. */
    client_id: z.string().min(1).max(256).optional(),
    heartbeat_interval_s: int(1).default(5),
    clock_window_ms: int(0).default(CLOCK_WINDOW_MS),
    reconnect_min_ms: int(1).default(500),
    reconnect_max_ms: int(1).default(30_000),
    /**
     * A register without an answer (or refused) is sent again this much later, doubling each time
     * up to `register_retry_max_ms`; every unanswered attempt is a warning saying what to check. A max below the
     * first wait is read as the first wait (no backoff).
     */
    register_retry_ms: int(1).default(5000),
    register_retry_max_ms: int(1).default(60_000),
    keepalive_s: int(0).max(65_535).default(30),
    connect_timeout_ms: int(1).default(10_000),
    /** On stop: how long in-flight uplinks and the goodbye may take before the client is ended by force. */
    stop_drain_ms: int(0).default(2000),
    handlers: z
      .object({
        echo: z.boolean().default(true),
        host_exec: HostExecSchema.prefault({}),
      })
      .strict()
      .prefault({}),
    log_flush_bytes: int(1).default(4096),
    log_flush_ms: int(1).default(1000),
    /** exec_result `output` is cut to this (the full output went out as log_result chunks); stays under the 256 KiB message limit. */
    result_output_max_bytes: int(0)
      .max(DEFAULT_MAX_MESSAGE_BYTES / 2)
      .default(65_536),
    queue: QueueSchema.prefault({}),
    default_task_timeout_ms: int(1).default(60_000),
  })
  .strict()
  .refine((c) => c.reconnect_max_ms >= c.reconnect_min_ms, {
    message: 'reconnect_max_ms must be >= reconnect_min_ms',
    path: ['reconnect_max_ms'],
  });

export type AgentConfig = z.output<typeof AgentConfigSchema>;

/** The values derived from the settings at start. */
export interface ResolvedAgentConfig {
  username: string;
  password: string;
  clientId: string;
  queueDir: string;
}

export function resolveAgentConfig(c: AgentConfig, env: NodeJS.ProcessEnv = process.env): ResolvedAgentConfig {
  const base = c.queue.dir ?? path.join(env.HUB_DATA_DIR || './data', 'agent-queue');
  return {
    username: c.username ?? c.project_id,
    password: c.password ?? deriveMqttPassword(c.project_id, c.secret),
    clientId: c.client_id ?? `agent-${c.project_id}-${c.node_name}`,
    queueDir: path.resolve(base),
  };
}
