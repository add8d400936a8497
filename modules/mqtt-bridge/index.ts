/**
 * `mqtt-bridge`: the hub's one MQTT client. Uplinks from agents become bus events
 * (`hub/uplink/{project_id}/{kind}/{type}`), bus requests on `mqtt/publish` become QoS 1
 * publishes answered after the broker's PUBACK. Connection state is published on `mqtt/state`,
 * counters answered on `mqtt/stats`.
 *
 * @example config.yml
 *   mqtt-bridge:
 *     url: ${HUB_MQTT_URL:-mqtt://127.0.0.1:1883}
 */

import { CONTROL } from '../../core/bus.js';
import { errorCode } from '../../core/errors.js';
import { metricsTopic } from '../../core/metrics.js';
import type { ModuleContext, ModuleInstance, ModuleProvider } from '../../core/module.js';
import { BROKER } from '../broker/contract/topics.js';
import { STATUS } from '../status/contract/topics.js';
import { AckGate } from './ack-gate.js';
import { type BridgeConfig, BridgeConfigSchema } from './config.js';
import { BridgeConnection, type Credential } from './connection.js';
import {
  BRIDGE,
  type BridgeStateEvent,
  type BridgeStats,
  type MqttPublishReply,
  type MqttPublishRequest,
} from './contract/topics.js';
import { bridgeMetrics } from './metrics.js';
import { Publisher } from './publisher.js';
import { UplinkHandler, uplinkFilters } from './uplink.js';
import { UplinkVerifier } from './verify.js';

/** BRIDGE.publish requests handled at once (each waiting for its PUBACK). */
const PUBLISH_CONCURRENCY = 256;

/** How long stop() gives the DISCONNECT to go out before the socket is destroyed. */
const END_GRACE_MS = 1000;

async function brokerCredential(ctx: ModuleContext<BridgeConfig>): Promise<Credential> {
  const c = await ctx.bus.request<{ username?: unknown; password?: unknown }>(
    BROKER.hubCredential,
    {},
    { timeoutMs: ctx.config.credential_timeout_ms },
  );
  if (typeof c?.username !== 'string' || typeof c.password !== 'string') {
    throw new Error('the broker answered without a username and password');
  }
  return { username: c.username, password: c.password };
}

function createBridge(ctx: ModuleContext<BridgeConfig>): ModuleInstance {
  const cfg = ctx.config;
  const now = () => ctx.services.clock.now();
  const verifier = new UplinkVerifier({ bus: ctx.bus, now, credentialsTtlMs: cfg.credentials_ttl_ms });
  const uplink = new UplinkHandler({
    bus: ctx.bus,
    log: ctx.log,
    maxBytes: cfg.max_message_bytes,
    now,
    verifier,
    durableWaitMs: cfg.durable_wait_ms,
  });
  let conn: BridgeConnection | undefined;
  let publisher: Publisher | undefined;
  let stopping: Promise<void> | undefined;
  let gate: AckGate | undefined;
  const filters = uplinkFilters(cfg.shared_group);

  const stats = (): BridgeStats => {
    const p = publisher?.counters;
    return {
      state: conn?.state ?? 'disconnected',
      connected_since: conn?.connectedSince ?? null,
      broker: conn?.broker ?? '',
      client_id: cfg.client_id,
      received: uplink.counters.received,
      rejected_by_code: { ...uplink.counters.rejected_by_code },
      dropped_by_bus: uplink.counters.dropped_by_bus,
      durable_acked: uplink.counters.durable_acked,
      durable_withheld: uplink.counters.durable_withheld,
      durable_waiting: uplink.waitingForWrites,
      durable_timeouts: uplink.counters.durable_timeouts,
      durable_retried: uplink.counters.durable_retried,
      credentials_cached: verifier.cached,
      signatures_as_sent: verifier.signatures.as_sent,
      signatures_canonical: verifier.signatures.canonical,
      published: p?.published ?? 0,
      publish_failures: p?.publish_failures ?? 0,
      publish_in_flight: publisher?.inFlight ?? 0,
      publish_ms_avg: p && p.published > 0 ? p.publish_ms_total / p.published : 0,
      publish_ms_max: p?.publish_ms_max ?? 0,
      reconnects: conn?.reconnects ?? 0,
      connects: conn?.connects ?? 0,
    };
  };

  /** With no username and no password configured, the embedded broker's hub credential, if it answers. */
  const resolveCredential = async (): Promise<{ credential: Credential; fromBroker: boolean }> => {
    if (cfg.username || cfg.password)
      return { credential: { username: cfg.username, password: cfg.password }, fromBroker: false };
    try {
      const credential = await brokerCredential(ctx);
      ctx.log.debug('using the embedded broker hub credential');
      return { credential, fromBroker: true };
    } catch (err) {
      ctx.log.info(
        { code: errorCode(err) },
        'no credential configured and none from the embedded broker; connecting without one',
      );
      return { credential: {}, fromBroker: false };
    }
  };

  return {
    async start() {
      if (cfg.shared_group && !cfg.clean_session) {
        ctx.log.warn(
          { shared_group: cfg.shared_group, client_id: cfg.client_id },
          'persistent session in a shared subscription: while this instance is down the broker keeps giving it uplinks no other instance can take',
        );
      }
      const { credential, fromBroker } = await resolveCredential();
      // stopped (a start timeout) while the credential was asked for: open nothing
      if (ctx.signal.aborted || stopping) return;
      // The uplink flow opens when the host is ready: right after CONNACK a persistent session
      // hands over what queued while the hub was down, before any SUBSCRIBE, and every module that
      // consumes uplinks must have subscribed by then, or those uplinks would be acknowledged into
      // no one's hands. Held ones are not acknowledged: the broker keeps them meanwhile.
      let flowing = false;
      const held: Array<() => void> = [];
      ctx.onReady(() => {
        flowing = true;
        for (const handle of held.splice(0)) handle();
      });
      const c = new BridgeConnection(
        {
          config: cfg,
          log: ctx.log,
          timers: ctx.timers,
          now,
          onState: (ev: BridgeStateEvent) => void ctx.bus.publish(BRIDGE.state, ev),
          // after every CONNACK the session subscribes again: a broker that lost our session (or a
          // new shared_group) needs them; with a resumed session this is a harmless refresh
          subscriptions: filters,
          onConnect: (connack) => {
            ctx.log.debug({ session_present: connack.sessionPresent }, 'mqtt bridge CONNACK');
          },
          handleMessage: (packet, done) => {
            if (flowing) uplink.handle(packet, done);
            else held.push(() => uplink.handle(packet, done));
          },
          credential: () => brokerCredential(ctx),
        },
        credential,
        fromBroker,
      );
      conn = c;
      // A stalled write: drop the connection, the broker delivers what was not acknowledged again.
      // On a clean session (shared group) the broker drops it instead; re-ask, the relay and the
      // agents' registration retry recover it (README "Several instances: events and takeover").
      gate = new AckGate(c.client, now);
      uplink.attach(gate, () => c.client.stream?.destroy());
      publisher = new Publisher({
        client: c.client,
        waitConnected: (ms) => c.waitConnected(ms),
        timers: ctx.timers,
        log: ctx.log,
        timeoutMs: cfg.publish_timeout_ms,
      });
      const pub = publisher;
      // Many publishes in flight at once: each waits for its own PUBACK, and one at a time would
      // cap the relay at one broker round trip (plus an event-loop turn) per command (bench `async`).
      // mqtt.js writes them in call order, so QoS 1 order per topic is kept.
      ctx.bus.subscribe<MqttPublishRequest>(BRIDGE.publish, (req): Promise<MqttPublishReply> => pub.publish(req), {
        concurrency: PUBLISH_CONCURRENCY,
      });
      ctx.bus.subscribe(BRIDGE.stats, () => stats(), CONTROL);
      ctx.bus.subscribe(metricsTopic(ctx.name), () => bridgeMetrics(stats(), uplink.rejectedByType.samples()), CONTROL);
      ctx.bus.subscribe(STATUS.credentialsChanged, verifier.onCredentialsChanged);
      ctx.onStop(() => stop());

      // the hub may start before its broker: the first attempt's outcome is logged, never awaited forever
      const up = await c.start(cfg.start_wait_ms);
      if (!up) {
        ctx.log.warn(
          { broker: c.broker, client_id: cfg.client_id },
          'mqtt broker not reached at start; the bridge keeps connecting in the background (see mqtt/state)',
        );
      }
    },
    stop: () => stop(),
  };

  /**
   * Stops taking uplinks first: in a shared subscription (or on a clean session) UNSUBSCRIBE, so
   * the broker hands new ones to the other instances instead of to a session about to end (alone
   * on a persistent session the subscription stays, and the broker keeps them for our return). Then the uplinks already taken are written and acknowledged and
   * the publishes in flight finish (both within stop_drain_ms), then DISCONNECT. What a clean
   * session still held unacknowledged at that point the broker drops: results are asked for again
   * by another instance (command reask), commands never acked are published again by the relay.
   */
  function stop(): Promise<void> {
    stopping ??= (async () => {
      const c = conn;
      const deadline = Date.now() + cfg.stop_drain_ms;
      // alone on a persistent session the subscription stays: the broker keeps our uplinks for our return
      if (c?.connected && (cfg.shared_group || cfg.clean_session)) {
        await new Promise<void>((resolve) => {
          const t = setTimeout(resolve, Math.max(0, deadline - Date.now()));
          c.client.unsubscribe(filters, () => {
            clearTimeout(t);
            resolve();
          });
        });
      }
      const drained = (await publisher?.drain(Math.max(0, deadline - Date.now()))) ?? true;
      if (!drained) ctx.log.warn({ in_flight: publisher?.inFlight }, 'mqtt bridge stopping with publishes in flight');
      while (gate && gate.waiting > 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
      if (gate && gate.waiting > 0) {
        ctx.log.warn(
          { waiting: gate.waiting, clean_session: cfg.clean_session },
          'mqtt bridge stopping with uplinks not yet written; they are not acknowledged',
        );
      }
      await c?.end(END_GRACE_MS);
    })();
    return stopping;
  }
}

export const provider: ModuleProvider<BridgeConfig> = {
  name: 'mqtt-bridge',
  description: 'MQTT client of the hub: uplinks to the bus, mqtt/publish to the broker',
  schema: BridgeConfigSchema,
  // After the embedded broker, when there is one: it must listen, and it hands out our credential.
  // The modules that consume uplinks are not listed: the uplink flow opens on ctx.onReady.
  dependencies: ['broker'],
  ingress: true,
  create: (ctx) => createBridge(ctx),
};
