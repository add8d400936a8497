/**
 * The `web` module: REST under /api/exchange-hub, the live WebSocket, the dashboard at `/`,
 * /metrics, /healthz, /readyz and /openapi.json. A thin adapter: it owns no data and talks to
 * the domain modules only over the bus (COMMAND.*, STATUS.*, BRIDGE.stats, host topics).
 *
 * Stopping (host/stopping, or this module restarting): new requests get 503 HOST_ERR_STOPPING,
 * sync waits end early with the command id, WebSocket clients get close 1001; the server then
 * closes, cutting connections still open after `close_grace_ms`.
 *
 * Bus: answers WEB.info(name); requests COMMAND.send/get/list/cancel/deadList/deadReplay,
 * STATUS.create/list/get/enable/disable/rotate/online, BRIDGE.stats, HOST_TOPICS.listModules/
 * restartModule/busStats; listens to COMMAND.eventPattern, STATUS.changedPattern, HOST_TOPICS.stopping.
 *
 * @example config.yml
 *   web:
 *     port: ${HUB_HTTP_PORT:-8080}
 *     token: ${HUB_API_TOKEN:-}
 */

import { readFileSync } from 'node:fs';
import type { Knex } from 'knex';
import { CONTROL } from '../../core/bus.js';
import { errorCode } from '../../core/errors.js';
import { HOST_TOPICS } from '../../core/host-topics.js';
import type { ModuleProvider } from '../../core/module.js';
import { AuditTrail } from '../audit/contract/trail.js';
import { JOBS } from '../jobs/contract/topics.js';
import { BRIDGE, type BridgeStats } from '../mqtt-bridge/contract/topics.js';
import { CommandWaiter } from '../shared/interface-kit/command-waiter.js';
import { EventFeed, idleMsOf } from '../shared/interface-kit/event-feed.js';
import { listenHost } from '../shared/interface-kit/listen-host.js';
import { warnRenamedSettings } from '../shared/interface-kit/renamed-settings.js';
import { tokenEntries, tokenOnlyEdit } from '../shared/interface-kit/settings.js';
import { TokenGate } from '../shared/interface-kit/token-gate.js';
import { defaultStaticDir, type WebConfig, webConfigSchema } from './config.js';
import { WEB, type WebInfo } from './contract/topics.js';
import { WebMetrics } from './metrics.js';
import { MqttWsGate } from './mqtt-ws.js';
import { buildOpenApi } from './openapi.js';
import { buildRoutes } from './routes.js';
import { buildServer, closeServer, listen } from './server.js';
import { StaticFiles } from './static.js';
import { WsHub } from './ws.js';

export type { WebConfig } from './config.js';

/** The package version, for the OpenAPI document (package.json is two levels up, three when compiled). */
const VERSION = (() => {
  for (const rel of ['../../package.json', '../../../package.json']) {
    try {
      return (
        (JSON.parse(readFileSync(new URL(rel, import.meta.url), 'utf8')) as { version?: string }).version ?? '0.0.0'
      );
    } catch {
      // not here: try the next
    }
  }
  return '0.0.0';
})();

export const provider: ModuleProvider<WebConfig> = {
  name: 'web',
  description: 'REST API, live WebSocket, dashboard, metrics and health for the exchange hub',
  schema: webConfigSchema,
  // calls come from outside and are answered by status and command: started after them, stopped before
  ingress: true,
  create(ctx) {
    const cfg = ctx.config;
    const log = ctx.log;
    warnRenamedSettings(cfg, log, ctx.name);
    const gate = new TokenGate(tokenEntries(cfg));
    const stop = new AbortController();
    const feed = new EventFeed({ replay: cfg.ws.replay, idleMs: idleMsOf(cfg.ws.replay_idle_s) });
    const waiter = new CommandWaiter(ctx.bus, { pollMs: cfg.sync_poll_ms });
    const metrics = new WebMetrics(ctx.bus, {
      // read at scrape time only, once `hub` exists
      wsClients: () => hub.size,
      syncWaiting: () => waiter.waiting,
      syncAnswers: () => waiter.answers,
      feedEvents: () => feed.lastId,
      feedKept: () => feed.kept,
    });
    const hub = new WsHub({ feed, cfg: cfg.ws, gate, metrics, log, timers: ctx.timers });
    // MQTT packets are bounded by the broker (max_packet_bytes, 1 MiB by default); a frame is one or more of them
    const mqttWs = cfg.mqtt_ws_path === null ? undefined : new MqttWsGate(ctx.bus, log, 2 * 1_048_576);
    let closing: Promise<void> | undefined;

    /** Step 1 of stopping: no new work, waits end, WebSocket clients told to go. Idempotent. */
    const beginStop = () => {
      if (stop.signal.aborted) return;
      stop.abort();
      hub.beginStop();
    };

    const ready = async () => {
      const checks: Record<string, { ok: boolean; reason?: string }> = {};
      const t = cfg.ready_timeout_ms;
      const [db, bridge] = await Promise.allSettled([
        cfg.database === null ? Promise.resolve(true) : pingDb(() => ctx.services.db(cfg.database!), t),
        ctx.bus.request<BridgeStats>(BRIDGE.stats, {}, { timeoutMs: t }),
      ]);
      if (cfg.database !== null) {
        checks.database =
          db.status === 'fulfilled'
            ? { ok: true }
            : {
                ok: false,
                // DB_ERR_UNAVAILABLE already says "database "x" unreachable (ECONNREFUSED)"
                reason:
                  errorCode(db.reason) === 'DB_ERR_UNAVAILABLE'
                    ? (db.reason as Error).message
                    : `database ${cfg.database}: ${(db.reason as Error)?.message ?? db.reason}`,
              };
      }
      if (bridge.status === 'rejected') {
        checks.mqtt = { ok: false, reason: `mqtt bridge not answering: ${(bridge.reason as Error)?.message}` };
      } else if (bridge.value?.state !== 'connected') {
        checks.mqtt = { ok: false, reason: `mqtt bridge is ${bridge.value?.state ?? 'unknown'}` };
      } else checks.mqtt = { ok: true };
      return { ready: Object.values(checks).every((c) => c.ok), checks };
    };

    // a token edit swaps the gate's table in place: open WebSockets stay, each re-checked
    gate.onChange(() => hub.recheckPrincipals());

    return {
      reconfigure(next) {
        const entries = tokenOnlyEdit(cfg, next as WebConfig, gate.enabled);
        if (entries === null) return false;
        gate.replace(entries);
        log.info({ tokens: entries.length }, 'tokens edited: applied in place (open connections kept)');
        return true;
      },
      async start() {
        const { host, refused } = listenHost(cfg.host, gate.enabled);
        if (!gate.enabled) {
          const why = refused === undefined ? '' : `; refusing ${refused}`;
          log.warn({ host }, `no API token configured (HUB_API_TOKEN): listening on loopback ${host} only${why}`);
        }

        feed.attach(ctx.bus, JOBS.eventPattern);
        waiter.attach();
        ctx.bus.subscribe(HOST_TOPICS.stopping, () => beginStop());

        const routes = buildRoutes({ name: ctx.name, cfg, bus: ctx.bus, waiter, ready });
        const app = buildServer({
          cfg,
          log,
          routes,
          gate,
          metrics,
          ws: hub,
          mqttWs,
          statics: new StaticFiles(cfg.static_dir ?? defaultStaticDir()),
          openapi: () => buildOpenApi(routes, { auth: gate.enabled, version: VERSION }),
          trail: new AuditTrail(ctx.bus, log, () => ctx.services.clock.now(), cfg.request_timeout_ms),
          stopping: stop.signal,
        });
        const bound = await listen(app, cfg, host);
        const urlHost = bound.host.includes(':') ? `[${bound.host}]` : bound.host;
        const info: WebInfo = {
          url: `http://${urlHost}:${bound.port}`,
          host: bound.host,
          port: bound.port,
          auth: gate.enabled,
          ws_clients: 0,
        };
        const where = info;
        ctx.bus.subscribe(WEB.info(ctx.name), (): WebInfo => ({ ...where, ws_clients: hub.size }), CONTROL);
        ctx.onStop(() => {
          beginStop();
          mqttWs?.close();
          closing ??= closeServer(app, cfg.close_grace_ms).finally(() => hub.close());
          return closing;
        });
        hub.startKeepalive();
        log.info({ url: info.url, auth: gate.enabled }, 'web listening');
      },
      async stop() {
        beginStop();
      },
    };
  },
};

async function pingDb(db: () => Knex, timeoutMs: number): Promise<true> {
  let timer: NodeJS.Timeout | undefined;
  try {
    const q = db().raw('select 1');
    await Promise.race([
      q,
      new Promise((_, reject) => {
        timer = setTimeout(() => reject(new Error(`no answer within ${timeoutMs} ms`)), timeoutMs);
      }),
    ]);
    return true;
  } finally {
    clearTimeout(timer);
  }
}
