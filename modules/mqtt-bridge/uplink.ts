import type { IPublishPacket } from 'mqtt';
import type { ModuleBus } from '../../core/bus.js';
import type { Logger } from '../../core/log.js';
import {
  type CommandMessage,
  type DataMessage,
  parseUplink,
  peekUplink,
  TOPIC_COMMAND_UP,
  TOPIC_MESSAGE_UP,
} from '../shared/protocol.js';
import { type AckGate, DEFER_ACK } from './ack-gate.js';
import { BRIDGE, type BridgeRejectedEvent, type UplinkEvent } from './contract/topics.js';
import { DURABLE_OWNERS, DurableWriter } from './durable-write.js';
import { RejectedByType } from './metrics.js';
import type { UplinkVerifier, Verdict } from './verify.js';

/** At most this many rejection warnings per second; the rest go to debug and are summed up. */
const WARN_PER_SECOND = 10;

/** The MQTT filters the bridge subscribes to, shared (`$share/<group>/…`, docs/architecture.md#several-instances) or not. */
export function uplinkFilters(sharedGroup: string | undefined): string[] {
  const topics = [TOPIC_COMMAND_UP, TOPIC_MESSAGE_UP];
  return sharedGroup ? topics.map((t) => `$share/${sharedGroup}/${t}`) : topics;
}

export interface UplinkCounters {
  received: number;
  rejected_by_code: Record<string, number>;
  /** Valid uplinks a full subscriber mailbox refused (the bus counts them too). */
  dropped_by_bus: number;
  /** State-carrying uplinks acknowledged after their owner wrote them. */
  durable_acked: number;
  /** State-carrying uplinks not acknowledged (write failed or too slow): the broker delivers them again. */
  durable_withheld: number;
  /** Durable writes that took longer than `durable_wait_ms` (each forces a reconnect). */
  durable_timeouts: number;
  /** Attempts at a durable write after the first failed (owner restarting, database down, credentials unreadable). */
  durable_retried: number;
}

export interface UplinkDeps {
  bus: ModuleBus;
  log: Logger;
  maxBytes: number;
  now: () => number;
  verifier: UplinkVerifier;
  /** How long a durable uplink may keep failing to be written before the bridge reconnects for a redelivery. */
  durableWaitMs: number;
  /** Backoff between a durable uplink's write attempts (tests shorten it). */
  durableRetryMs?: { first: number; max: number };
}

/**
 * Turns inbound PUBLISH packets into bus events: parse (protocol.ts), verify (verify.ts: the
 * project, signature, clock, replay), then hand over on `hub/uplink/{project_id}/{kind}/{type}`.
 * Refused uplinks are counted by code, logged without their payload (rate-limited), published on
 * `mqtt/rejected` with the project and type when known (status answers a refused register from
 * it), and acknowledged: dropping them is the decision.
 *
 * Durable types go out as bus requests and are acknowledged through the AckGate once answered;
 * the others as events, acknowledged once the bus has taken them (with `block` mailboxes full,
 * mqtt.js stops reading the socket meanwhile and the broker holds the messages).
 */
export class UplinkHandler {
  readonly counters: UplinkCounters = {
    received: 0,
    rejected_by_code: {},
    dropped_by_bus: 0,
    durable_acked: 0,
    durable_withheld: 0,
    durable_timeouts: 0,
    durable_retried: 0,
  };
  readonly rejectedByType = new RejectedByType();
  private readonly writer: DurableWriter;
  private gate?: AckGate;
  private onStall?: () => void;
  private windowStart = 0;
  private warnedInWindow = 0;
  private suppressed = 0;

  constructor(private readonly d: UplinkDeps) {
    this.writer = new DurableWriter({
      bus: d.bus,
      verifier: d.verifier,
      now: d.now,
      waitMs: d.durableWaitMs,
      retryMs: d.durableRetryMs,
      onRetry: () => {
        this.counters.durable_retried++;
      },
    });
  }

  /** The connection's client: PUBACKs of durable uplinks are written on it; `stall` reconnects it. */
  attach(gate: AckGate, stall: () => void): void {
    this.gate = gate;
    this.onStall = stall;
  }

  get waitingForWrites(): number {
    return this.gate?.waiting ?? 0;
  }

  /** mqtt.js `handleMessage`: `done()` lets the PUBACK go out and the next packet in. */
  handle(packet: IPublishPacket, done: (err?: Error) => void): void {
    const topic = packet.topic;
    const r = parseUplink(topic, packet.payload, { maxBytes: this.d.maxBytes });
    if (!r.ok) {
      // the project and type, when readable, let status answer a refused register with the reason
      // (read again only on this rare path; never for an oversized message)
      const peek =
        r.code === 'PROTO_ERR_TOO_LARGE' ? {} : peekUplink(topic, packet.payload, { maxBytes: this.d.maxBytes });
      this.reject(topic, r.code, r.reason, peek.project_id, peek.type);
      done();
      return;
    }
    const { kind, msg, sent } = r.value;
    const v = this.d.verifier.verify(kind, msg, sent);
    if (v instanceof Promise) {
      // an uncached project: the next packet waits for this lookup, so the order is kept
      v.then((verdict) => this.route(packet, kind, msg, verdict, done));
    } else {
      this.route(packet, kind, msg, v, done);
    }
  }

  private route(
    packet: IPublishPacket,
    kind: 'command' | 'data',
    msg: CommandMessage | DataMessage,
    verdict: Verdict,
    done: (err?: Error) => void,
  ): void {
    const type = kind === 'command' ? (msg as CommandMessage).command_type : (msg as DataMessage).data_type;
    const ev: UplinkEvent = { msg, topic: packet.topic, received_at: this.d.now() };
    const busTopic = BRIDGE.uplink(msg.project_id, kind, type);
    // a durable uplink whose credentials could not be read is the hub's failure, not a refusal:
    // the durable path tries it again instead of acknowledging it away
    if (DURABLE_OWNERS.has(type) && this.gate && (verdict.ok || verdict.code === 'PROTO_ERR_UNVERIFIABLE')) {
      this.durable(packet, type, busTopic, ev, verdict, done);
      return;
    }
    if (!verdict.ok) {
      this.reject(packet.topic, verdict.code, verdict.reason, msg.project_id, type);
      done();
      return;
    }
    let accepted: boolean | Promise<boolean>;
    try {
      accepted = this.d.bus.publish(busTopic, ev);
    } catch (err) {
      // the bus is closing (host stopping): ack nothing, the broker redelivers to the next session
      this.d.log.warn({ err: (err as Error).message, topic: packet.topic }, 'bus refused an uplink');
      done(err as Error);
      return;
    }
    this.counters.received++;
    if (accepted === true) {
      this.d.verifier.commit(verdict.replayKey);
      done();
    } else if (accepted === false) {
      this.dropped(msg.project_id, type);
      done();
    } else {
      accepted.then((ok) => {
        if (ok) this.d.verifier.commit(verdict.replayKey);
        else this.dropped(msg.project_id, type);
        done();
      });
    }
  }

  private durable(
    packet: IPublishPacket,
    type: string,
    busTopic: string,
    ev: UplinkEvent,
    verdict: Verdict,
    done: (err?: Error) => void,
  ): void {
    const gate = this.gate!;
    const settle = gate.defer(packet);
    const current = gate.connectionCheck();
    this.counters.received++;
    void this.writer.write(type, busTopic, ev, verdict, current).then((out) => {
      if (out.kind === 'written') {
        this.d.verifier.commit(out.replayKey);
        this.counters.durable_acked++;
        settle(true);
        return;
      }
      if (out.kind === 'refused') {
        // refused once the credentials could be read: acknowledged, dropping is the decision
        this.reject(packet.topic, out.verdict.code, out.verdict.reason, ev.msg.project_id, type);
        settle(true);
        return;
      }
      this.counters.durable_withheld++;
      settle(false);
      if (out.reason === 'deadline') {
        this.counters.durable_timeouts++;
        this.d.log.warn(
          {
            project_id: ev.msg.project_id,
            topic: busTopic,
            waited_ms: this.d.durableWaitMs,
            last_error: out.lastError,
          },
          'an uplink could not be written in time; reconnecting so the broker delivers it again',
        );
        // the broker redelivers what a session left unacknowledged only on a new connection
        if (current()) this.onStall?.();
      }
    });
    done(DEFER_ACK);
  }

  private dropped(projectId: string, type: string): void {
    this.counters.dropped_by_bus++;
    this.d.log.debug({ project_id: projectId, type }, 'uplink dropped by a full mailbox');
  }

  private reject(topic: string, code: string, reason: string, projectId?: string, type?: string): void {
    const c = this.counters.rejected_by_code;
    c[code] = (c[code] ?? 0) + 1;
    this.rejectedByType.count(type, projectId);
    const now = this.d.now();
    if (now - this.windowStart >= 1000) {
      if (this.suppressed > 0) {
        this.d.log.warn({ suppressed: this.suppressed }, 'more uplinks were rejected (not logged one by one)');
      }
      this.windowStart = now;
      this.warnedInWindow = 0;
      this.suppressed = 0;
    }
    // never the payload: it is untrusted and may be large
    const fields = { topic, code, reason, project_id: projectId, type };
    if (this.warnedInWindow < WARN_PER_SECOND) {
      this.warnedInWindow++;
      this.d.log.warn(fields, 'uplink rejected');
    } else {
      this.suppressed++;
      this.d.log.debug(fields, 'uplink rejected');
    }
    const ev: BridgeRejectedEvent = {
      topic,
      code,
      reason,
      at: now,
      ...(projectId !== undefined ? { project_id: projectId } : {}),
      ...(type !== undefined ? { type } : {}),
    };
    try {
      void this.d.bus.publish(BRIDGE.rejected, ev);
    } catch {
      // bus closing: the counter above still has it
    }
  }
}
