/**
 * What an agent may do on the embedded broker (docs/wire-protocol.md#qos-and-sessions, deny by default). An agent connects as
 * its project P; it may publish only uplinks that speak for P, and subscribe only to P's own
 * downlinks. Pure functions: the broker counts, logs and reports what they refuse.
 */

export const UPLINK_TOPICS: ReadonlySet<string> = new Set(['wdd/RDMC/command/up', 'wdd/RDMC/message/up']);

const COMMAND_DOWN = 'wdd/RDMC/command/down/';
const MESSAGE_DOWN = 'wdd/RDMC/message/down/';

/**
 * Whether `topic` is one of the project's own two downlink topics, `wdd/RDMC/command/down/<P>` or
 * `wdd/RDMC/message/down/<P>`: compared in place, so the broker keeps no copy of them per
 * connection and builds none per packet.
 */
export function isOwnDownlink(projectId: string, topic: string): boolean {
  // both prefixes are as long
  return (
    topic.length === COMMAND_DOWN.length + projectId.length &&
    topic.endsWith(projectId) &&
    (topic.startsWith(COMMAND_DOWN) || topic.startsWith(MESSAGE_DOWN))
  );
}

/** Why an agent's publish is refused, or null when it is allowed. */
export type PublishDenial = 'topic' | 'too_large' | 'not_json' | 'project_id';

/**
 * An agent (project P) may publish only to the two uplink topics, and only a JSON object whose
 * `project_id` is P: a connection can never speak for another project, whatever the hub later
 * checks (signatures). Unparsable payloads are refused here rather than passed on.
 */
export function checkAgentPublish(
  projectId: string,
  topic: string,
  payload: Buffer | string,
  maxBytes: number,
): PublishDenial | null {
  if (!UPLINK_TOPICS.has(topic)) return 'topic';
  const size = typeof payload === 'string' ? Buffer.byteLength(payload) : payload.length;
  if (size > maxBytes) return 'too_large';
  let msg: unknown;
  try {
    msg = JSON.parse(typeof payload === 'string' ? payload : payload.toString('utf8'));
  } catch {
    return 'not_json';
  }
  if (msg === null || typeof msg !== 'object' || Array.isArray(msg)) return 'not_json';
  return (msg as { project_id?: unknown }).project_id === projectId ? null : 'project_id';
}

/**
 * An agent may subscribe only to its own two downlink topics, spelled out: no wildcards, so it can
 * never see another project's commands (`#`, `wdd/RDMC/command/down/+` are refused).
 */
export function agentMaySubscribe(projectId: string, topic: string): boolean {
  return isOwnDownlink(projectId, topic);
}
