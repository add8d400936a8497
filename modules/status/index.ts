import type { Knex } from 'knex';
import { CONTROL } from '../../core/bus.js';
import { metricsTopic } from '../../core/metrics.js';
import type { ModuleContext, ModuleProvider } from '../../core/module.js';
import { PgListener, pgListenSettings } from '../../core/services/pg-listener.js';
import { BRIDGE, type BridgeRejectedEvent, type DurableReply } from '../mqtt-bridge/contract/topics.js';
import { subscribeUplinks } from '../mqtt-bridge/contract/uplink-routes.js';
import { type StatusConfig, statusConfigSchema } from './config.js';
import { STATUS_HISTORY } from './contract/history-topics.js';
import type { StatusStats } from './contract/stats.js';
import {
  type CreatedProject,
  type ProjectCredentials,
  type ProjectView,
  STATUS,
  type StatusChangedEvent,
} from './contract/topics.js';
import { CredentialEvents } from './credential-events.js';
import { EVENT_TABLE, STATUS_EVENTS } from './domain-events.js';
import { historyCleanup, parseHistoryRequest, readHistory } from './history.js';
import { projectsByState, statusMetrics } from './metrics.js';
import { migrations } from './migrations.js';
import { Flusher, loadPresence, writeBatch } from './persist.js';
import { type Batch, Presence, type PresenceEntry, projectView } from './presence.js';
import { type ProjectRecord, ProjectStore, parseRequest, requests } from './projects.js';
import { PresenceSync, presenceChannel } from './sync.js';
import { Timeouts } from './timeouts.js';
import { Uplinks } from './uplinks.js';

/** Pure reads (broker logins, credentials of sends) answered at once: each is a cache hit or waits for a shared read. */
const READS_IN_FLIGHT = 256;

/**
 * `status`: project provisioning (secrets, MQTT credentials, broker authentication) and presence
 * (registration handshake, heartbeats, disconnects, last wills) — docs/wire-protocol.md#mqtt-wire-protocol and docs/architecture.md#tables.
 *
 * @example config.yml
 *   status:
 *     heartbeat_timeout_ms: ${HUB_HEARTBEAT_TIMEOUT_MS:-30000}
 */
export const provider: ModuleProvider<StatusConfig> = {
  name: 'status',
  description: 'project provisioning, registration handshake and presence',
  schema: statusConfigSchema,
  create: (ctx) => createStatus(ctx),
};

function createStatus(ctx: ModuleContext<StatusConfig>) {
  const cfg = ctx.config;
  const clock = ctx.services.clock;
  const db = () => ctx.services.db(cfg.database);
  const projects = new ProjectStore(db, clock, cfg.cache_ttl_ms);
  const emit = (ev: StatusChangedEvent) => {
    ctx.log.debug({ project_id: ev.project_id, state: ev.state, previous: ev.previous, reason: ev.reason }, 'presence');
    void ctx.bus.publish(STATUS.changed(ev.project_id), ev);
  };
  const presence = new Presence(clock, emit);
  // Every presence write goes through this one writer, so each applied transition's domain
  // event (project.online/offline) is written in its transaction, whoever decided it: a flush
  // or the silence sweep (timeouts.ts)
  const write = (d: Knex, b: Batch, channel: string | null) => writeBatch(d, b, channel, ctx.services.outbox);
  const flusher = new Flusher(db, presence, ctx.log, write);
  presence.onQueued = () => flusher.soon();
  const sync = new PresenceSync(db, presence, ctx.log);
  flusher.onLost = (ids) => sync.reread(ids);
  // Other hub instances may share the database when it is a server (driver pg): announcements,
  // a listener and checks against the row. PGlite is one process: the read model is the truth.
  const pgSettings = pgListenSettings(db(), 'gmq-hub presence');
  let listener: PgListener | null = null;
  const credentialEvents = new CredentialEvents(ctx.bus, clock, ctx.timers, ctx.log);
  const uplinks = new Uplinks({
    cfg,
    clock,
    log: ctx.log,
    bus: ctx.bus,
    projects,
    presence,
    sync: pgSettings ? sync : null,
  });
  const timeouts = new Timeouts({
    db,
    presence,
    clock,
    log: ctx.log,
    timeoutMs: cfg.heartbeat_timeout_ms,
    channel: () => flusher.channel,
    settled: () => ctx.bus.settled(),
    reread: (ids) => sync.reread(ids),
    write,
  });

  const view = (rec: ProjectRecord): ProjectView => projectView(rec, presence.get(rec.project_id));
  const byId = async (body: unknown) => projects.require(parseRequest(requests.idOnly, body).project_id);

  function subscribe(): void {
    const { bus } = ctx;
    bus.subscribe(STATUS.create, async (body): Promise<CreatedProject> => {
      const { rec, created } = await projects.create(body);
      ctx.log.info({ project_id: rec.project_id }, 'project created');
      credentialEvents.publish(rec.project_id, 'created');
      return created;
    });
    bus.subscribe(STATUS.list, async (body) => {
      const { items, total } = await projects.list(body);
      return { items: items.map(view), total };
    });
    bus.subscribe(STATUS.get, async (body) => view(await byId(body)));
    bus.subscribe(STATUS_HISTORY.list, async (body) => {
      // an unknown project is a 404, not an empty page (the same answer as its status)
      const req = parseHistoryRequest(body);
      await projects.require(req.project_id);
      return readHistory(db(), req);
    });
    bus.subscribe(STATUS.enable, async (body) => {
      const { project_id } = parseRequest(requests.idOnly, body);
      const rec = await projects.setEnabled(project_id, true);
      ctx.log.info({ project_id }, 'project enabled');
      credentialEvents.publish(project_id, 'enabled');
      return view(rec);
    });
    bus.subscribe(STATUS.disable, async (body) => {
      const { project_id } = parseRequest(requests.idOnly, body);
      const rec = await projects.setEnabled(project_id, false);
      const e = presence.get(project_id);
      if (e && e.state !== 'offline') {
        presence.change(
          e,
          [['offline', 'project disabled']],
          { states: ['connecting', 'verifying', 'online', 'disconnecting'] },
          { handshake: null },
        );
      }
      ctx.log.info({ project_id }, 'project disabled');
      // the broker drops the project's cached logins and disconnects its agents at once
      credentialEvents.publish(project_id, 'disabled');
      return view(rec);
    });
    bus.subscribe(STATUS.rotate, async (body): Promise<CreatedProject> => {
      const req = parseRequest(requests.rotateSchema, body);
      const overlap = req.overlap_s ?? cfg.rotation_overlap_s;
      const { rec, created } = await projects.rotate(req.project_id, overlap);
      ctx.log.info({ project_id: req.project_id, overlap_s: overlap }, 'project secret rotated');
      credentialEvents.rotated(req.project_id, rec.prev_secret_expires_at);
      return created;
    });
    // A pure read, like a login: a miss waits for the store's batched read without holding the
    // mailbox. Held, a burst of sends to projects not yet cached (a hub's first seconds, or the
    // command module's cache expiring under load) made one database read per project, one after
    // another, and the last sends of the burst waited seconds for their 202.
    bus.subscribe(
      STATUS.credentials,
      (body) => {
        const { project_id } = parseRequest(requests.idOnly, body);
        const answer = (rec: ProjectRecord, e = presence.get(rec.project_id)): ProjectCredentials => ({
          project_id: rec.project_id,
          enabled: rec.enabled,
          state: e?.state ?? 'offline',
          secrets: projects.validSecrets(rec),
          prev_secret_expires_at: rec.prev_secret_expires_at,
          require_data_signature: cfg.require_data_signature,
          clock_window_ms: cfg.clock_window_ms,
        });
        // Hot (every command signs with it): answered without a promise when cached.
        const r = projects.lookup(project_id);
        if (r instanceof Promise) return projects.require(project_id).then((rec) => answer(rec));
        if (!r) return projects.require(project_id).then((rec) => answer(rec)); // throws STATUS_ERR_NOT_FOUND
        // A send to a project this read model does not show online is refused: with other
        // instances writing presence, the row is asked first (its announcement may be on its way).
        const e = presence.get(project_id);
        if (!pgSettings || e?.state === 'online' || (e && e.pending > 0)) return answer(r, e);
        // the database unreachable: the read model's answer rather than none
        return sync.check(project_id).then(
          (fresh: PresenceEntry | undefined) => answer(r, fresh),
          () => answer(r, presence.get(project_id)),
        );
      },
      { concurrency: READS_IN_FLIGHT },
    );
    // A login is a pure read: a miss waits for the store's batched read (ProjectStore.load)
    // without holding the mailbox, so the logins of a fleet reconnecting at once share queries.
    bus.subscribe(
      STATUS.authenticate,
      (body) => {
        const b = (body ?? {}) as { username?: unknown; password?: unknown };
        return projects.authenticate(b.username, b.password);
      },
      { concurrency: READS_IN_FLIGHT },
    );
    bus.subscribe(
      STATUS.online,
      async () => {
        const items: ProjectView[] = [];
        for (const e of presence.all()) {
          if (e.state !== 'online') continue;
          const rec = await projects.lookup(e.project_id);
          if (rec) items.push(projectView(rec, e));
        }
        return { items };
      },
      CONTROL,
    );
    bus.subscribe(
      metricsTopic(ctx.name),
      async () => {
        const own = statusMetrics(uplinks.counters);
        try {
          return [...own, projectsByState(presence.all(), await projects.count())];
        } catch (err) {
          // the database unreachable: hub_projects is left out, so /metrics keeps its last counts
          ctx.log.debug({ err: (err as Error).message }, 'project counts not read');
          return own;
        }
      },
      CONTROL,
    );
    bus.subscribe(
      STATUS.stats,
      (): StatusStats => ({
        ...uplinks.counters,
        sweeps: timeouts.sweeps,
        timed_out: timeouts.timed_out,
        presence: { tracked: presence.size, online: presence.online, pending_writes: presence.pendingWrites },
        transitions_dropped: presence.opsDropped,
        sync: { ...sync.stats, listener: listener ? { ...listener.stats, channel: listener.channel } : null },
        projects_cached: projects.cachedCount,
        flush: { ...flusher.stats, in_flight: flusher.inFlight },
        credential_events: credentialEvents.published,
      }),
      CONTROL,
    );
    // uplinks the bridge refused: registers are answered with the reason, the rest counted per project
    bus.subscribe<BridgeRejectedEvent>(BRIDGE.rejected, (ev) => uplinks.onRejected(ev));
    // the uplink types status owns (the uplink table); the durable ones (register,
    // register_complete, disconnect) come as requests from the bridge, which acknowledges them to
    // the broker once `written` resolves: after the presence flush that holds their change (the
    // mailbox itself does not wait for it, so registrations still group)
    const durably = (r: unknown): DurableReply | Promise<DurableReply> =>
      r instanceof Promise ? r.then(() => ({ written: flusher.written() })) : { written: flusher.written() };
    subscribeUplinks(bus, 'status', uplinks.handlers, { wrap: durably });
  }

  return {
    async start() {
      await ctx.services.migrate(migrations, cfg.database);
      ctx.services.outbox.declare({ table: EVENT_TABLE, database: cfg.database, events: STATUS_EVENTS });
      if (pgSettings) {
        const channel = presenceChannel(pgSettings.schema);
        flusher.channel = channel;
        // LISTEN before the load below, and start waits for it: an instance that serves has heard
        // every change committed after its read, each with its own steps. A resync (every row
        // again, a missed change published as one) is only for a LISTEN that came later: a first
        // attempt that failed, or a reconnect.
        let resyncOnConnect = false;
        const messages = {
          connected: 'presence listener connected',
          lost: 'presence listener lost its connection; reconnecting',
        };
        listener = new PgListener(pgSettings.settings, channel, messages, ctx.log, {
          onNotice: (payload) => sync.onNotice(payload),
          onConnected: () => {
            if (!resyncOnConnect) return;
            return sync
              .resync()
              .catch((err: unknown) => ctx.log.warn({ err }, 'presence resync failed; next at a reconnect'));
          },
        });
        await listener.start();
        resyncOnConnect = true;
        ctx.onStop(() => {
          sync.close();
          return listener?.stop();
        });
      }
      presence.load(await loadPresence(db()));
      // presence the database kept is continued: silence is counted from now (timeouts.ts)
      // the agents of continued sessions heartbeat within seconds: their projects are read in a
      // few queries now (in the background) rather than one query per first heartbeat
      const continuing: string[] = [];
      for (const e of presence.all()) if (e.state !== 'offline') continuing.push(e.project_id);
      if (continuing.length > 0) {
        void projects.warm(continuing).then(
          (n) => ctx.log.info({ projects: n }, 'project cache warmed for continued sessions'),
          (err) => ctx.log.warn({ err }, 'project cache warm-up failed; projects are read on first use'),
        );
      }
      subscribe();
      const overlapping = await credentialEvents.rearm(db());
      if (overlapping > 0) ctx.log.info({ projects: overlapping }, 'rotation overlaps re-armed');
      ctx.timers.setInterval(() => {
        uplinks.forgetThrottles();
        void timeouts.sweep();
      }, cfg.sweep_interval_ms);
      ctx.timers.setInterval(() => void flusher.flush(), cfg.flush_interval_ms);
      const cleanup = historyCleanup(db, () => clock.now(), cfg.history_retention_days * 86_400_000, ctx.log);
      void cleanup();
      ctx.timers.setInterval(() => void cleanup(), cfg.history_cleanup_interval_ms);
      // Runs after the host cleared the timers: a sweep still waiting behind the queue decides
      // nothing, and the last changes reach the database before the pool closes.
      ctx.onStop(async () => {
        await timeouts.stop();
        await flusher.final();
      });
      ctx.log.info({ tracked: presence.size, online: presence.online }, 'status started');
    },
  };
}
