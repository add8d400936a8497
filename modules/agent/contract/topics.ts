/**
 * The agent's bus contract: how its handler modules (inner, worker, exe) take tasks
 * (docs/conventions.md#each-domain-owns-its-bus-topics): every topic the agent module publishes or
 * answers, with its payload type. Other modules import this file, never the module itself.
 */
export const AGENT = {
  /**
   * request AgentTaskRequest → AgentTaskResult: `agent/handler/{command_type}`. Any module
   * (inner, worker, exe) that subscribes here implements that command type on the agent.
   */
  handler: (commandType: string) => `agent/handler/${commandType}`,
  /** event { command_id, content } — output a handler streams while it runs */
  output: (commandId: string) => `agent/output/${commandId}`,
  /** event { state, at } — the agent's connection/registration state */
  state: 'agent/state',
  /** request {} → agent stats (queue depths, registered, …) */
  stats: 'agent/stats',
} as const;

export interface AgentTaskRequest {
  command_id: string;
  command_type: string;
  payload: unknown;
  /** The handler should finish by then; the agent reports `timeout` after it. */
  deadline: number;
}
export interface AgentTaskResult {
  status?: 'success' | 'failure' | 'timeout';
  exit_code?: number;
  output?: string;
  error?: string;
}
/** `agent/output/{command_id}` */
export interface AgentOutputEvent {
  command_id: string;
  content: string;
}
export type AgentState = 'connecting' | 'registering' | 'registered' | 'refused' | 'disconnected' | 'stopped';
/** `agent/state` */
export interface AgentStateEvent {
  state: AgentState;
  at: number;
  reason?: string;
}
/** The reply to `agent/stats`. */
export interface AgentStats {
  registered: boolean;
  state: AgentState;
  queue_memory: number;
  queue_disk: number;
  sent: number;
  retried: number;
  expired: number;
  dropped: number;
  commands_run: number;
  commands_rejected: number;
  duplicates: number;
  /** Results that waited for output another module's handler published on the bus. */
  result_barrier_waits: number;
}
