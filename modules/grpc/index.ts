/**
 * The `grpc` module: the hub's operations over gRPC (resource/proto/exchangehub/v1/exchange_hub.proto)
 * plus the standard health service and server reflection, so grpcurl and grpc_cli work without
 * the .proto. A thin adapter: every call is a bus request to the command or status module; sync
 * waits and the live feed use the shared CommandWaiter and EventFeed, like the web module.
 */

import { type ChannelOptions, Server, ServerCredentials, type ServiceDefinition } from '@grpc/grpc-js';
import { ReflectionService } from '@grpc/reflection';
import { HealthImplementation, type ServingStatus } from 'grpc-health-check';
import { CONTROL } from '../../core/bus.js';
import { HubError } from '../../core/errors.js';
import { HOST_TOPICS } from '../../core/host-topics.js';
import { counter, countsBy, type MetricFamily, metricsTopic } from '../../core/metrics.js';
import type { ModuleContext, ModuleProvider } from '../../core/module.js';
import { AuditTrail } from '../audit/contract/trail.js';
import { JOBS } from '../jobs/contract/topics.js';
import { closeWithGrace } from '../shared/interface-kit/close-with-grace.js';
import { CommandWaiter } from '../shared/interface-kit/command-waiter.js';
import { EventFeed, idleMsOf } from '../shared/interface-kit/event-feed.js';
import { listenHost } from '../shared/interface-kit/listen-host.js';
import { warnRenamedSettings } from '../shared/interface-kit/renamed-settings.js';
import { tokenEntries, tokenOnlyEdit } from '../shared/interface-kit/settings.js';
import { TokenGate } from '../shared/interface-kit/token-gate.js';
import { type GrpcConfig, grpcConfigSchema } from './config.js';
import { GRPC, type GrpcStats } from './contract/topics.js';
import { loadProto, SERVICE_NAME } from './proto.js';
import { type CallStats, ExchangeHubService } from './service.js';

export const provider: ModuleProvider<GrpcConfig> = {
  name: 'grpc',
  description: 'gRPC interface (ExchangeHub service, WatchEvents stream, health, reflection)',
  schema: grpcConfigSchema,
  // calls come from outside and are answered by status and command: started after them, stopped before
  ingress: true,
  create: (ctx) => {
    const gate = new TokenGate(tokenEntries(ctx.config));
    return {
      start: () => start(ctx, gate),
      // a token edit swaps the gate's table in place: open WatchEvents streams stay, each re-checked
      reconfigure(next) {
        const entries = tokenOnlyEdit(ctx.config, next as GrpcConfig, gate.enabled);
        if (entries === null) return false;
        gate.replace(entries);
        ctx.log.info({ tokens: entries.length }, 'tokens edited: applied in place (open streams kept)');
        return true;
      },
    };
  },
};

/** The listen address: no token → loopback only, whatever the config says (docs/architecture.md#web-and-grpc). */
function chooseHost(ctx: ModuleContext<GrpcConfig>, gate: TokenGate): string {
  const { host, refused } = listenHost(ctx.config.host, gate.enabled);
  if (refused !== undefined) {
    ctx.log.warn(
      { host: refused },
      `no token configured: refusing to listen on ${refused}; listening on ${host} only (set tokens, or HUB_API_TOKEN in the default config)`,
    );
  } else if (!gate.enabled) {
    ctx.log.info({ host }, 'no token configured: gRPC listens on loopback only and accepts calls without a token');
  }
  return host;
}

function bind(server: Server, address: string, port: number, portEnv: string): Promise<number> {
  return new Promise((resolve, reject) => {
    server.bindAsync(address, ServerCredentials.createInsecure(), (err, bound) => {
      if (!err) return resolve(bound);
      if (/EADDRINUSE/.test(err.message)) {
        return reject(
          new HubError(
            'HOST_ERR_PORT_IN_USE',
            `port ${port} is in use (set ${portEnv})`,
            { port, env: portEnv },
            {
              cause: err,
            },
          ),
        );
      }
      reject(err);
    });
  });
}

/** Running calls get `graceMs` to finish (tryShutdown), then every call and connection is cut (forceShutdown). */
function shutdown(server: Server, graceMs: number): Promise<'graceful' | 'forced'> {
  return closeWithGrace(
    graceMs,
    () => new Promise<void>((resolve) => server.tryShutdown(() => resolve())),
    () => server.forceShutdown(),
  );
}

async function start(ctx: ModuleContext<GrpcConfig>, gate: TokenGate): Promise<void> {
  const cfg = ctx.config;
  warnRenamedSettings(cfg, ctx.log, ctx.name);
  const host = chooseHost(ctx, gate);
  const proto = loadProto();

  const feed = new EventFeed({ replay: cfg.replay, idleMs: idleMsOf(cfg.replay_idle_s) });
  feed.attach(ctx.bus, JOBS.eventPattern);
  const waiter = new CommandWaiter(ctx.bus, { pollMs: cfg.sync_poll_ms });
  waiter.attach();

  const health = new HealthImplementation({ '': 'NOT_SERVING', [SERVICE_NAME]: 'NOT_SERVING' });
  const setHealth = (s: ServingStatus) => {
    health.setStatus('', s);
    health.setStatus(SERVICE_NAME, s);
  };
  let stopping = false;
  ctx.bus.subscribe(HOST_TOPICS.stopping, () => {
    stopping = true;
    setHealth('NOT_SERVING');
    ctx.log.info('host stopping: gRPC health is NOT_SERVING and new calls get UNAVAILABLE');
  });

  // WatchEvents writes events encoded once and shared by every stream (see watch.ts)
  const watch = proto.service.WatchEvents;
  const encodeEvent = (msg: Record<string, unknown>) => watch.responseSerialize(msg);
  const definition: ServiceDefinition = {
    ...proto.service,
    WatchEvents: {
      ...watch,
      responseSerialize: (v: unknown) => (Buffer.isBuffer(v) ? v : watch.responseSerialize(v)),
    },
  };

  const stats: CallStats = { calls: 0, errors: {}, streams_open: 0, streams_total: 0, streams_slow: 0 };
  const service = new ExchangeHubService({
    ctx,
    gate,
    waiter,
    feed,
    encodeEvent,
    stopping: () => stopping || ctx.signal.aborted,
    stats,
    trail: new AuditTrail(ctx.bus, ctx.log, () => ctx.services.clock.now(), cfg.request_timeout_ms),
  });

  const options: ChannelOptions = {
    'grpc.max_receive_message_length': cfg.max_message_bytes,
    'grpc.max_send_message_length': cfg.max_message_bytes,
    // long-lived WatchEvents streams: notice a vanished client without waiting for TCP
    'grpc.keepalive_time_ms': 60_000,
    'grpc.keepalive_timeout_ms': 20_000,
  };
  const server = new Server(options);
  // refuses to start when a proto method declares no action (permissions.ts)
  server.addService(definition, service.implementation(Object.keys(proto.service)));
  const unwatch = gate.onChange(() => service.recheckPrincipals());
  // on /metrics: the refusals by code, as hub_http_refusals_total is for REST
  ctx.bus.subscribe(
    metricsTopic(ctx.name),
    (): MetricFamily[] => [
      counter(
        'hub_grpc_refusals_total',
        'gRPC calls refused as the caller’s mistake, by error code (AUTH_ERR_TOKEN, AUTH_ERR_FORBIDDEN, *_ERR_INVALID …)',
        countsBy('code', service.refusals),
        ['code'],
      ),
    ],
    CONTROL,
  );
  ctx.onStop(() => unwatch());
  health.addToServer(server);
  new ReflectionService(proto.reflection).addToServer(server);

  // registered before bind, so a failed start releases the server too
  ctx.onStop(async () => {
    stopping = true;
    setHealth('NOT_SERVING');
    service.endStreams();
    const how = await shutdown(server, cfg.close_grace_ms);
    ctx.log.info({ how, ...stats, errors: stats.errors }, 'gRPC server stopped');
  });

  const address = `${host.includes(':') && !host.startsWith('[') ? `[${host}]` : host}:${cfg.port}`;
  const port = await bind(server, address, cfg.port, cfg.port_env);
  setHealth('SERVING');
  ctx.log.info({ host, port, auth: gate.enabled }, 'gRPC server listening');
  ctx.bus.subscribe(
    GRPC.stats,
    (): GrpcStats => ({
      port,
      host,
      auth: gate.enabled,
      ...stats,
      errors: { ...stats.errors },
      sync_waiting: waiter.waiting,
      feed_epoch: feed.epoch,
      feed_last_id: feed.lastId,
      feed_replay_kept: feed.kept,
    }),
    CONTROL,
  );
}
