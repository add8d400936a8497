/**
 * The bridge's hand-over of uplinks, consumer side (in the bridge's contract because the topics
 * are the bridge's): how an owner module (status, command) takes its uplinks from the bridge.
 * One handler per type it owns in the uplink table (shared/protocol/uplinks.ts), subscribed
 * here to the bus topic the bridge hands that type over on (`hub/uplink/+/{kind}/{type}`). The handler map is checked by the compiler
 * against the table (`satisfies UplinkHandlers<'status'>`): a type added to the table without
 * its owner's handler does not build.
 *
 * @example
 *   subscribeUplinks(ctx.bus, 'command', uplinks.handlers, { options: { concurrency: 64 } });
 */
import type { ModuleBus, SubscribeOptions } from '../../../core/bus.js';
import {
  type CommandMessage,
  type DataMessage,
  UPLINKS,
  type UplinkCommandType,
  type UplinkOwner,
  type UplinkPayload,
  type UplinkType,
  type UplinkTypeOf,
  uplinkTypesOf,
} from '../../shared/protocol.js';
import { BRIDGE, type UplinkEvent } from './topics.js';

/** The message of one uplink type, payload parsed. */
export type UplinkMessage<K extends UplinkType> = K extends UplinkCommandType
  ? CommandMessage<K, UplinkPayload<K>>
  : DataMessage<K, UplinkPayload<K>>;

/**
 * An owner's handlers, one per type it owns. A durable type's handler settles (or its promise
 * does) once the uplink is written: the bridge acknowledges it to the broker then.
 */
export type UplinkHandlers<O extends UplinkOwner> = {
  readonly [K in UplinkTypeOf<O>]: (ev: UplinkEvent<UplinkMessage<K>>) => unknown;
};

/** What an owner does with its durable types' handlers: wrap their answer, or subscribe them with options. */
export interface DurableHandling {
  /** Turns a handler's result into the reply the bridge waits for (status: `{ written }` after its flush). */
  wrap?: (result: unknown) => unknown;
  options?: SubscribeOptions;
}

/** Subscribes `handlers` to every uplink type `owner` owns in the table. */
export function subscribeUplinks<O extends UplinkOwner>(
  bus: ModuleBus,
  owner: O,
  handlers: UplinkHandlers<O>,
  durable: DurableHandling = {},
): void {
  for (const type of uplinkTypesOf(owner)) {
    const spec = UPLINKS[type];
    const handle = handlers[type] as (ev: UplinkEvent) => unknown;
    const topic = BRIDGE.uplinkPattern(spec.kind, type);
    if (!spec.durable) {
      bus.subscribe<UplinkEvent>(topic, handle);
      continue;
    }
    const { wrap, options } = durable;
    bus.subscribe<UplinkEvent>(topic, wrap ? (ev) => wrap(handle(ev)) : handle, options);
  }
}
