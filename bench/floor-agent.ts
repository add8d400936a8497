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
 *
 * With BENCH_FLOOR=signed (floor-protocol.ts) each agent is the protocol's instead: it parses the
 * signed command, checks signature, clock and replay, and answers with a signed `command_ack`
 * and a signed `exec_result` (the payload back as its output), both QoS 1, as SimAgent does.
 */
import type { MqttClient } from 'mqtt';
import { commandDownTopic, parseDownlink } from '../modules/shared/protocol.js';
import { CLOCK_WINDOW_MS, ReplayCache, verifyInbound } from '../modules/shared/signing.js';
import { connectMqtt, echoResult, endClient, pool, signedData } from './agents.js';
import { type FloorKind, floorKind, floorSecret } from './floor-protocol.js';

/** Each kind of floor on topics of its own, so the two can share a broker in one run (BENCH_FLOOR=both). */
const topicRoot = (kind: FloorKind) => (kind === 'signed' ? 'floor-signed' : 'floor');
export const floorCommandTopic = (projectId: string, kind: FloorKind = floorKind()) =>
  `${topicRoot(kind)}/cmd/${projectId}`;
export const floorReplyTopic = (projectId: string, kind: FloorKind = floorKind()) =>
  `${topicRoot(kind)}/res/${projectId}`;
/** What a floor server of `kind` subscribes to: its agents' replies. */
export const floorReplies = (kind: FloorKind = floorKind()) => `${topicRoot(kind)}/res/+`;

/** Username and password carried in an `mqtt://user:pass@host:port` URL (a private test broker). */
export function urlAuth(url: string): { username?: string; password?: string } {
  const u = new URL(url);
  return u.username ? { username: decodeURIComponent(u.username), password: decodeURIComponent(u.password) } : {};
}

export class FloorAgent {
  replies = 0;
  /** Signed commands refused (signature, clock or replay; BENCH_FLOOR=signed). */
  rejected = 0;
  /** Fires when the broker acknowledged the reply to command `id` (the async suite's slot clock). */
  onResultSent?: (id: string) => void;

  private constructor(
    readonly client: MqttClient,
    readonly projectId: string,
    kind: FloorKind,
  ) {
    const replyTopic = floorReplyTopic(projectId, kind);
    if (kind === 'signed') {
      this.answerSigned(replyTopic);
      return;
    }
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

  /** The protocol's agent (SimAgent's command path, on the floor's topics). */
  private answerSigned(replyTopic: string): void {
    const { client, projectId } = this;
    const secret = floorSecret(projectId);
    const replay = new ReplayCache();
    // the parser checks the topic's project against the message's: hand it the protocol's topic
    const downTopic = commandDownTopic(projectId);
    client.on('message', (_topic, payload) => {
      const r = parseDownlink(downTopic, payload);
      if (!r.ok || r.value.kind !== 'command') {
        this.rejected++;
        return;
      }
      const msg = r.value.msg;
      const v = verifyInbound(msg, secret, replay, Date.now(), CLOCK_WINDOW_MS, r.value.sent);
      if (!v.ok) {
        this.rejected++;
        return;
      }
      const id = msg.message_id;
      client.publish(replyTopic, signedData(projectId, secret, 'command_ack', { command_id: id }), { qos: 1 });
      client.publish(replyTopic, echoResult(projectId, secret, id, msg.payload), { qos: 1 }, (err) => {
        if (err) return;
        this.replies++;
        this.onResultSent?.(id);
      });
    });
  }

  static async connect(url: string, projectId: string, kind: FloorKind = floorKind()): Promise<FloorAgent> {
    // the kind in the client id: both floors' agents of one project connect at once (BENCH_FLOOR=both),
    // and one client id would have the broker cut each off for the other
    const client = await connectMqtt(url, { clientId: `floor-agent-${kind}-${projectId}`, ...urlAuth(url) });
    await client.subscribeAsync(floorCommandTopic(projectId, kind), { qos: 1 });
    return new FloorAgent(client, projectId, kind);
  }

  close(): Promise<void> {
    return endClient(this.client);
  }
}

/** One FloorAgent per project id, `concurrency` connecting at a time. */
export async function connectFloorAgents(
  url: string,
  projectIds: string[],
  concurrency = 64,
  kind: FloorKind = floorKind(),
): Promise<FloorAgent[]> {
  const out: FloorAgent[] = new Array(projectIds.length);
  await pool(projectIds, concurrency, async (id, i) => {
    out[i] = await FloorAgent.connect(url, id, kind);
  });
  return out;
}
