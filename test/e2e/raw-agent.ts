/**
 * A raw mqtt.js client posing as an agent, and a FIFO gate that holds a host_exec command running
 * until the test releases it.
 */
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { MqttClient } from 'mqtt';
import {
  buildCommand,
  buildData,
  commandDownTopic,
  messageDownTopic,
  type RegisterPayload,
  TOPIC_COMMAND_UP,
  TOPIC_MESSAGE_UP,
} from '../../modules/shared/protocol.js';
import { verifySignature } from '../../modules/shared/signing.js';
import { connectClient, forgetSessions, MOSQUITTO_URL } from '../helpers/mqtt.js';
import { withTimeout } from '../helpers/wait.js';
import { type Json, type Provisioned, T, uniqueId } from './harness.js';

export interface Received {
  at: number;
  topic: string;
  raw: Buffer;
  msg: Json;
}

/**
 * An mqtt.js client that speaks the wire protocol by hand (modules/shared/protocol.ts and
 * signing.ts build its messages), so a test can send what a real agent never would. It keeps
 * only downlinks signed with its project's secret: on a shared broker other hubs may answer our
 * uplinks, unsigned, since they do not know the project.
 */
export class RawAgent {
  readonly received: Received[] = [];
  readonly ignored: Received[] = [];
  private waiters: Array<() => void> = [];

  private constructor(
    readonly client: MqttClient,
    readonly project: Provisioned,
    readonly clientId: string,
    private readonly url: string,
  ) {
    client.on('message', (topic, payload) => {
      let msg: Json = null;
      try {
        msg = JSON.parse(payload.toString('utf8'));
      } catch {
        // kept as ignored
      }
      const r = { at: Date.now(), topic, raw: Buffer.from(payload), msg };
      if (msg && verifySignature(msg, project.secret)) this.received.push(r);
      else this.ignored.push(r);
      for (const w of this.waiters.splice(0)) w();
    });
  }

  static async connect(url: string, project: Provisioned, opts: { clean?: boolean } = {}): Promise<RawAgent> {
    const clientId = uniqueId('raw');
    const client = await connectClient(url, {
      clientId,
      clean: opts.clean ?? true,
      username: project.mqtt_username,
      password: project.mqtt_password,
      protocolVersion: 4,
    });
    await client.subscribeAsync(
      { [commandDownTopic(project.project_id)]: { qos: 1 }, [messageDownTopic(project.project_id)]: { qos: 1 } },
      {},
    );
    return new RawAgent(client, project, clientId, url);
  }

  get projectId(): string {
    return this.project.project_id;
  }

  /** A signed `register` (or one built with another secret, timestamp or message id). */
  registerMessage(opts: { secret?: string; now?: number; messageId?: string } = {}): Json {
    const payload: RegisterPayload = {
      node_name: 'raw',
      instance_id: `raw-${os.hostname()}-${process.pid}`,
      version: '0.0.0-test',
      pid: process.pid,
      start_time: Date.now(),
      capabilities: ['echo'],
      metadata: { test: true },
      node_version: process.version,
    };
    return buildCommand(this.projectId, 'register', payload, opts.secret ?? this.project.secret, {
      ...(opts.now !== undefined ? { now: opts.now } : {}),
      ...(opts.messageId !== undefined ? { messageId: opts.messageId } : {}),
    });
  }

  /**
   * The whole handshake by hand: a signed register, an accepted register_ack, register_complete.
   * Resolves once the hub answered; the caller waits for the project to show online.
   */
  async handshake(): Promise<void> {
    const reg = this.registerMessage();
    await this.publishCommandUp(reg);
    const ack = await this.next(isRegisterAck, T, 'register_ack');
    if (ack.msg.payload?.accepted !== true) throw new Error(`register refused: ${JSON.stringify(ack.msg.payload)}`);
    await this.sendData('register_complete', { instance_id: reg.payload.instance_id });
  }

  async publishCommandUp(msg: unknown): Promise<void> {
    await this.client.publishAsync(TOPIC_COMMAND_UP, JSON.stringify(msg), { qos: 1 });
  }

  /** A signed uplink data message. */
  async sendData(dataType: string, payload: unknown): Promise<void> {
    const msg = buildData(this.projectId, dataType, payload, { secret: this.project.secret });
    await this.client.publishAsync(TOPIC_MESSAGE_UP, JSON.stringify(msg), { qos: 1 });
  }

  /** Waits for a signed downlink (past or future) that satisfies `pred`, starting at index `from`. */
  async next(pred: (r: Received) => boolean, ms = T, what = 'a downlink', from = 0): Promise<Received> {
    return withTimeout(
      (async () => {
        for (;;) {
          const found = this.received.slice(from).find(pred);
          if (found) return found;
          await new Promise<void>((r) => this.waiters.push(r));
        }
      })(),
      ms,
      what,
    );
  }

  /** The commands received so far with this message id. */
  copiesOf(commandId: string): Received[] {
    return this.received.filter((r) => r.topic === commandDownTopic(this.projectId) && r.msg.message_id === commandId);
  }

  async close(): Promise<void> {
    await this.client.endAsync();
    if (this.url === MOSQUITTO_URL) await forgetSessions(this.url, [this.clientId]);
  }
}

/** A `register_ack` signed by the hub for this project. */
export const isRegisterAck = (r: Received): boolean => r.msg?.type === 'message' && r.msg.data_type === 'register_ack';

// ─── a gate that holds a command running ────────────────────────────────────────────────────

/**
 * A named pipe. A host_exec command `/bin/cat <gate>` blocks reading it until the test opens the
 * other end and writes: the command is then as long as the test needs, with no timing guess.
 */
export class Gate {
  readonly path: string;
  private writing: Promise<void> | null = null;
  private written = false;

  constructor(dir: string) {
    this.path = path.join(dir, `gate-${randomBytes(4).toString('hex')}`);
    execFileSync('mkfifo', [this.path]);
  }

  /** The host_exec payload that waits for this gate. */
  get command(): { command: string; args: string[] } {
    return { command: '/bin/cat', args: [this.path] };
  }

  /** Writes `text` and closes: the waiting `cat` prints it and exits 0. */
  async release(text = 'released\n', ms = T): Promise<void> {
    // opening a FIFO for writing waits for its reader (in libuv's pool, not on the event loop)
    this.writing = fs.promises.writeFile(this.path, text).then(() => {
      this.written = true;
    });
    await withTimeout(this.writing, ms, 'the gate reader (cat)');
  }

  /**
   * A release still waiting for its reader would keep the test process alive (a pending fs
   * request): open the reading end ourselves so it completes, then let go.
   */
  dispose(): void {
    if (!this.writing || this.written) return;
    this.writing.catch(() => undefined);
    try {
      fs.closeSync(fs.openSync(this.path, fs.constants.O_RDONLY | fs.constants.O_NONBLOCK));
    } catch {
      // gone already
    }
  }
}
