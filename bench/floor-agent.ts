/**
 * The agent side of the hand-coded floor (bench/floor-child.ts): one mqtt.js client per
 * project on its own TCP_NODELAY connection, in the bench process, as the hub suites' SimAgents
 * (bench/agents.ts) are. It answers every command on `floor/cmd/<project>` at once with one
 * QoS 1 publish `{ id, result: <the command's payload> }` on `floor/res/<project>`.
 *
 * The same as SimAgent: process layout (bench process), one connection per project, QoS 1 both
 * ways, two broker hops per command, the payload echoed back. What differs, by design of the
 * floor (issue 13: "no framework and no signing"): no HMAC verification or signing, no clock or
 * replay check, no registration or heartbeats, and one reply instead of command_ack +
 * exec_result. SimAgent cannot serve here: it rejects unsigned messages by design.
 */
import type { MqttClient } from 'mqtt';
import { connectMqtt, endClient, pool } from './agents.js';

export const floorCommandTopic = (projectId: string) => `floor/cmd/${projectId}`;
export const floorReplyTopic = (projectId: string) => `floor/res/${projectId}`;
export const FLOOR_REPLIES = 'floor/res/+';

/** Username and password carried in an `mqtt://user:pass@host:port` URL (a private test broker). */
export function urlAuth(url: string): { username?: string; password?: string } {
  const u = new URL(url);
  return u.username ? { username: decodeURIComponent(u.username), password: decodeURIComponent(u.password) } : {};
}

export class FloorAgent {
  replies = 0;
  /** Fires when the broker acknowledged the reply to command `id` (the async suite's slot clock). */
  onResultSent?: (id: string) => void;

  private constructor(
    readonly client: MqttClient,
    readonly projectId: string,
  ) {
    const replyTopic = floorReplyTopic(projectId);
    client.on('message', (_topic, payload) => {
      const m = JSON.parse(payload.toString('utf8')) as { id: string; payload: unknown };
      const reply = JSON.stringify({ id: m.id, result: m.payload });
      client.publish(replyTopic, reply, { qos: 1 }, (err) => {
        if (err) return;
        this.replies++;
        this.onResultSent?.(m.id);
      });
    });
  }

  static async connect(url: string, projectId: string): Promise<FloorAgent> {
    const client = await connectMqtt(url, { clientId: `floor-agent-${projectId}`, ...urlAuth(url) });
    await client.subscribeAsync(floorCommandTopic(projectId), { qos: 1 });
    return new FloorAgent(client, projectId);
  }

  close(): Promise<void> {
    return endClient(this.client);
  }
}

/** One FloorAgent per project id, `concurrency` connecting at a time. */
export async function connectFloorAgents(url: string, projectIds: string[], concurrency = 64): Promise<FloorAgent[]> {
  const out: FloorAgent[] = new Array(projectIds.length);
  await pool(projectIds, concurrency, async (id, i) => {
    out[i] = await FloorAgent.connect(url, id);
  });
  return out;
}
