import { CONTROL } from '../../core/bus.js';
import { metricsTopic } from '../../core/metrics.js';
import type { ModuleProvider } from '../../core/module.js';
import {
  BROKER,
  type BrokerHubCredential,
  type BrokerWsConnection,
  type CredentialsChangedEvent,
  STATUS,
} from '../shared/topics.js';
import { EmbeddedBroker } from './broker.js';
import { type BrokerConfig, brokerConfigSchema } from './config.js';
import { brokerMetrics } from './metrics.js';

/**
 * `broker`: the embedded MQTT broker (aedes) the hub's bridge and the agents connect to.
 * Answers BROKER.hubCredential and BROKER.stats, publishes BROKER.denied; asks STATUS.authenticate
 * to let an agent in; on STATUS.credentialsChanged drops the project's cached logins and
 * disconnects its agents whose login no longer authenticates.
 *
 * @example
 *   modules:
 *     broker:
 *       port: ${HUB_MQTT_PORT:-1883}
 *       enable: ${HUB_EMBEDDED_BROKER:-true}
 */
export const provider: ModuleProvider<BrokerConfig> = {
  name: 'broker',
  description: 'embedded MQTT broker with per-project authentication, ACL and load shedding',
  schema: brokerConfigSchema,
  // agents' CONNECTs come from outside and are authenticated by the status module: as an ingress
  // the broker starts after it, so the first CONNECTs find an answer (without it they are
  // refused with CONNACK 3 and retry)
  ingress: true,
  create(ctx) {
    const broker = new EmbeddedBroker(ctx);
    return {
      async start() {
        await broker.start();
        ctx.bus.subscribe(
          BROKER.hubCredential,
          (): BrokerHubCredential => ({ username: ctx.config.hub_username, password: broker.hubPassword }),
        );
        ctx.bus.subscribe(BROKER.stats, () => broker.stats(), CONTROL);
        ctx.bus.subscribe(metricsTopic(ctx.name), () => brokerMetrics(broker.stats()), CONTROL);
        // not awaited by the mailbox: a slow re-check of one project must not hold up the next event
        ctx.bus.subscribe<CredentialsChangedEvent>(STATUS.credentialsChanged, (ev) => {
          broker
            .credentialsChanged(ev)
            .catch((err) => ctx.log.warn({ err, project_id: ev?.project_id }, 'applying a credentials change failed'));
        });
        // MQTT over WebSocket arrives on the web module's port and is handed over here (see web/mqtt-ws.ts)
        ctx.bus.subscribe<BrokerWsConnection>(BROKER.wsConnection, (req) => broker.handleStream(req));
      },
      stop: () => broker.stop(),
    };
  },
};
