import type { IPublishPacket } from 'mqtt';
import type { ModuleBus } from '../../core/bus.js';
import type { Logger } from '../../core/log.js';
import { parseUplink, peekUplink, TOPIC_COMMAND_UP, TOPIC_MESSAGE_UP } from '../shared/protocol.js';
import { BRIDGE, type BridgeRejectedEvent, type UplinkEvent } from '../shared/topics.js';

/** At most this many rejection warnings per second; the rest go to debug and are summed up. */
const WARN_PER_SECOND = 10;

/** The MQTT filters the bridge subscribes to, shared (`$share/<group>/…`, DESIGN §8) or not. */
export function uplinkFilters(sharedGroup: string | undefined): string[] {
  const topics = [TOPIC_COMMAND_UP, TOPIC_MESSAGE_UP];
  return sharedGroup ? topics.map((t) => `$share/${sharedGroup}/${t}`) : topics;
}

export interface UplinkCounters {
  received: number;
  rejected_by_code: Record<string, number>;
  /** Valid uplinks a full subscriber mailbox refused (the bus counts them too). */
  dropped_by_bus: number;
}

/**
 * Turns inbound PUBLISH packets into bus events. Valid uplinks go to
 * `hub/uplink/{project_id}/{kind}/{type}`; invalid ones are counted by code, logged without their
 * payload, published on `mqtt/rejected`, and acknowledged (dropping them is the decision).
 *
 * The PUBACK of a valid uplink is sent only once the bus has taken it: when the hub's mailboxes
 * are full (`block` policy) mqtt.js stops reading the socket meanwhile, so the broker holds the
 * messages instead of the hub dropping them.
 */
export class UplinkHandler {
  readonly counters: UplinkCounters = { received: 0, rejected_by_code: {}, dropped_by_bus: 0 };
  private readonly bus: ModuleBus;
  private readonly log: Logger;
  private readonly maxBytes: number;
  private readonly now: () => number;
  private windowStart = 0;
  private warnedInWindow = 0;
  private suppressed = 0;

  constructor(bus: ModuleBus, log: Logger, maxBytes: number, now: () => number) {
    this.bus = bus;
    this.log = log;
    this.maxBytes = maxBytes;
    this.now = now;
  }

  /** mqtt.js `handleMessage`: call `done` to let the PUBACK go out and the next packet in. */
  handle(packet: IPublishPacket, done: (err?: Error) => void): void {
    const topic = packet.topic;
    const r = parseUplink(topic, packet.payload, { maxBytes: this.maxBytes });
    if (!r.ok) {
      this.reject(topic, r.code, r.reason, packet.payload);
      done();
      return;
    }
    const { kind, msg } = r.value;
    const type = kind === 'command' ? msg.command_type : msg.data_type;
    const ev: UplinkEvent = { msg, topic, received_at: this.now() };
    let accepted: boolean | Promise<boolean>;
    try {
      accepted = this.bus.publish(BRIDGE.uplink(msg.project_id, kind, type), ev);
    } catch (err) {
      // the bus is closing (host stopping): ack nothing, the broker redelivers to the next session
      this.log.warn({ err: (err as Error).message, topic }, 'bus refused an uplink');
      done(err as Error);
      return;
    }
    this.counters.received++;
    if (accepted === true) {
      done();
    } else if (accepted === false) {
      this.dropped(msg.project_id, type);
      done();
    } else {
      accepted.then((ok) => {
        if (!ok) this.dropped(msg.project_id, type);
        done();
      });
    }
  }

  private dropped(projectId: string, type: string): void {
    this.counters.dropped_by_bus++;
    this.log.debug({ project_id: projectId, type }, 'uplink dropped by a full mailbox');
  }

  private reject(topic: string, code: string, reason: string, raw?: Buffer | string): void {
    const c = this.counters.rejected_by_code;
    c[code] = (c[code] ?? 0) + 1;
    const now = this.now();
    if (now - this.windowStart >= 1000) {
      if (this.suppressed > 0) {
        this.log.warn({ suppressed: this.suppressed }, 'more uplinks were rejected (not logged one by one)');
      }
      this.windowStart = now;
      this.warnedInWindow = 0;
      this.suppressed = 0;
    }
    // never the payload: it is untrusted and may be large
    if (this.warnedInWindow < WARN_PER_SECOND) {
      this.warnedInWindow++;
      this.log.warn({ topic, code, reason }, 'uplink rejected');
    } else {
      this.suppressed++;
      this.log.debug({ topic, code, reason }, 'uplink rejected');
    }
    // the project and type, when readable, let status answer a refused register and count the
    // refusal against the project (read again only on this rare path; never for oversized ones)
    const peek =
      raw !== undefined && code !== 'PROTO_ERR_TOO_LARGE' ? peekUplink(topic, raw, { maxBytes: this.maxBytes }) : {};
    const ev: BridgeRejectedEvent = { topic, code, reason, at: now, ...peek };
    try {
      void this.bus.publish(BRIDGE.rejected, ev);
    } catch {
      // bus closing: the counter above still has it
    }
  }
}
