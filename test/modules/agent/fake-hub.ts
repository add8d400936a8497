import { randomBytes } from 'node:crypto';
import type { MqttClient } from 'mqtt';
import {
  buildCommand,
  buildData,
  type CommandMessage,
  commandDownTopic,
  messageDownTopic,
  parseUplink,
  TOPIC_COMMAND_UP,
  TOPIC_MESSAGE_UP,
} from '../../../modules/shared/protocol.js';
import { verifySignature } from '../../../modules/shared/signing.js';
import { connectClient } from '../../helpers/mqtt.js';
import { scaled } from '../../helpers/wait.js';

export interface Uplink {
  topic: string;
  kind: 'command' | 'data';
  type: string;
  // biome-ignore lint/suspicious/noExplicitAny: tests read payload fields by name
  payload: any;
  /** The payload as it was sent (before the hub's normalisation: times as the agent wrote them). */
  // biome-ignore lint/suspicious/noExplicitAny: tests read payload fields by name
  sent: any;
  message_id: string;
  /** The signature checks out with the project's secret. */
  signed: boolean;
}

export type AckMode = 'accept' | 'refuse-once' | 'manual';

/**
 * A stand-in for the hub: an mqtt.js client that listens to the uplink topics for one project,
 * answers `register` with a signed `register_ack`, and publishes signed commands downlink.
 */
export class FakeHub {
  readonly received: Uplink[] = [];
  ackMode: AckMode = 'accept';
  heartbeatS = 1;
  private refusals = 0;
  private waiters: Array<{ pred: (u: Uplink) => boolean; resolve: (u: Uplink) => void }> = [];

  private constructor(
    readonly client: MqttClient,
    readonly projectId: string,
    readonly secret: string,
  ) {}

  static async start(url: string, projectId: string, secret: string): Promise<FakeHub> {
    const client = await connectClient(url, { clientId: `fake-hub-${randomBytes(6).toString('hex')}`, clean: true });
    const hub = new FakeHub(client, projectId, secret);
    client.on('message', (topic, payload) => hub.onMessage(topic, payload));
    await client.subscribeAsync({ [TOPIC_COMMAND_UP]: { qos: 1 }, [TOPIC_MESSAGE_UP]: { qos: 1 } });
    return hub;
  }

  private onMessage(topic: string, payload: Buffer): void {
    const r = parseUplink(topic, payload);
    if (!r.ok || r.value.msg.project_id !== this.projectId) return;
    const msg = r.value.msg;
    const u: Uplink = {
      topic,
      kind: r.value.kind,
      type:
        r.value.kind === 'command' ? (msg as CommandMessage).command_type : (msg as { data_type: string }).data_type,
      payload: msg.payload,
      sent: JSON.parse(payload.toString('utf8')).payload,
      message_id: msg.message_id,
      signed: verifySignature(msg, this.secret),
    };
    this.received.push(u);
    for (const w of [...this.waiters]) {
      if (w.pred(u)) {
        this.waiters.splice(this.waiters.indexOf(w), 1);
        w.resolve(u);
      }
    }
    if (u.type === 'register' && u.signed) {
      if (this.ackMode === 'accept') void this.ack(true);
      else if (this.ackMode === 'refuse-once') {
        if (this.refusals++ === 0) void this.ack(false, 'not provisioned yet');
        else void this.ack(true);
      }
    }
  }

  /** Sends a signed register_ack (or one signed with `secret` to forge it). */
  async ack(accepted: boolean, reason?: string, secret = this.secret): Promise<void> {
    const payload = { accepted, heartbeat_interval_s: this.heartbeatS, ...(reason ? { reason } : {}) };
    await this.publishData('register_ack', payload, secret);
  }

  async publishData(type: string, payload: unknown, secret = this.secret): Promise<void> {
    const msg = buildData(this.projectId, type, payload, { secret });
    await this.client.publishAsync(messageDownTopic(this.projectId), JSON.stringify(msg), { qos: 1 });
  }

  /** Publishes a signed command downlink and returns it (its message_id is the command id). */
  async command(
    type: string,
    payload: unknown,
    opts: { secret?: string; now?: number; messageId?: string } = {},
  ): Promise<CommandMessage> {
    const msg = buildCommand(this.projectId, type, payload, opts.secret ?? this.secret, {
      now: opts.now,
      messageId: opts.messageId,
    });
    await this.publishRaw(msg);
    return msg;
  }

  async publishRaw(msg: object): Promise<void> {
    await this.client.publishAsync(commandDownTopic(this.projectId), JSON.stringify(msg), { qos: 1 });
  }

  /** The first uplink (already received or to come) that matches. */
  waitFor(pred: (u: Uplink) => boolean, quietMs: number, what: string): Promise<Uplink> {
    const ms = scaled(quietMs);
    const seen = this.received.find(pred);
    if (seen) return Promise.resolve(seen);
    return new Promise<Uplink>((resolve, reject) => {
      const w = {
        pred,
        resolve: (u: Uplink) => {
          clearTimeout(timer);
          resolve(u);
        },
      };
      const timer = setTimeout(() => {
        this.waiters.splice(this.waiters.indexOf(w), 1);
        reject(new Error(`timed out after ${ms} ms waiting for ${what}`));
      }, ms);
      this.waiters.push(w);
    });
  }

  /** Every uplink of `type` about `commandId`. */
  about(type: string, commandId: string): Uplink[] {
    return this.received.filter((u) => u.type === type && u.payload?.command_id === commandId);
  }

  count(type: string): number {
    return this.received.filter((u) => u.type === type).length;
  }

  async close(): Promise<void> {
    await this.client.endAsync(true);
  }
}
