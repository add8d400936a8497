/**
 * The `command` module: the command lifecycle (docs/architecture.md#a-command-end-to-end).
 *
 *   scheduled ──schedule_at comes (scheduler.ts)──▶ pending │ failed (offline_policy fail, project gone)
 *   pending ──relay publish, broker PUBACK──▶ sent ──agent command_ack──▶ acked ──exec_result──▶ completed | failed
 *      │  (queued: outbox 'waiting' until the project is online or queue_ttl_ms passes → failed)
 *      └─ cancel (never delivered; also from scheduled) ▶ cancelled          any live state past timeout_at ▶ timeout
 *
 * A send writes the tracker row and its outbox row in one statement (sends of the same moment
 * share it), answers at once and publishes the first attempt right after the commit; the relay
 * (relay.ts) re-publishes until the agent acks, and publishes what a crash left behind; acks and results are written
 * in groups (uplink.ts); the sweeper (sweeper.ts) applies timeouts and queue expiry. Everything
 * is in the database, so a restarted module (or a second hub instance) carries on from the tables.
 *
 * How the odd cases show (COMMAND.get):
 *  - a result after the timeout: status stays 'timeout', `result` is filled in, late_result true,
 *    and a CommandEvent { kind: 'result' } still goes out;
 *  - no ack after max_attempts publishes: status 'failed', error 'undeliverable', the outbox row
 *    is dead (COMMAND.deadList; COMMAND.deadReplay sends it again). If the agent's ack or result
 *    turns up after all, the command resumes (acked, completed or failed) as if live;
 *  - queued past queue_ttl_ms: status 'failed', error 'expired before the project came online';
 *  - cancelled: status 'cancelled' (only before any broker PUBACK and agent ack).
 *
 * Bus: answers COMMAND.send/get/list/cancel/deadList/deadReplay/stats; publishes CommandEvent on
 * COMMAND.event(project_id, command_id), its own and (marked `remote`) those of the other hub
 * instances on the same database (cluster-events.ts); asks STATUS.credentials and BRIDGE.publish; listens to
 * BRIDGE uplinks (command_ack, exec_result, log_result) and STATUS.changedPattern.
 *
 * @example config.yml
 *   modules:
 *     command:
 *       default_timeout_ms: 30000
 *       max_attempts: 8
 */
import { CONTROL } from '../../core/bus.js';
import { metricsTopic } from '../../core/metrics.js';
import type { ModuleProvider } from '../../core/module.js';
import { subscribeUplinks } from '../mqtt-bridge/contract/uplink-routes.js';
import { STATUS, type StatusChangedEvent } from '../status/contract/topics.js';
import { ClusterEvents } from './cluster-events.js';
import { type CommandConfig, commandConfigSchema } from './config.js';
import { COMMAND } from './contract/topics.js';
import { CredentialsCache } from './credentials.js';
import type { Deps } from './deps.js';
import { COMMAND_EVENTS, EVENT_TABLE } from './domain-events.js';
import { Events, newCounters } from './events.js';
import { commandMetrics } from './metrics.js';
import { migrations } from './migrations.js';
import { CommandOwners } from './owners.js';
import { Queries } from './queries.js';
import { Reasker } from './reask.js';
import { Relay } from './relay.js';
import { Scheduler } from './scheduler.js';
import { Sender } from './send.js';
import { StageMetrics } from './stage-metrics.js';
import { Sweeper } from './sweeper.js';
import { Uplinks } from './uplink.js';
import { checkCommandId } from './validate.js';

export type { CommandConfig } from './config.js';

/** Reads in flight at once per instance (the pg pool is 10 connections by default). */
const PARALLEL = 16;
/**
 * Sends in flight at once: they wait mostly for the group commit (insert-batch.ts), which writes
 * all of them in one statement, so many at once cost one connection, not many.
 */
const SEND_PARALLEL = 512;
/** Acks and results waiting for their write at once (each answered after the commit). */
const UPLINK_CONCURRENCY = 4096;

export const provider: ModuleProvider<CommandConfig> = {
  name: 'command',
  description: 'Signed commands to agents: tracker, transactional outbox relay, acks, results, timeouts',
  schema: commandConfigSchema,
  // Not the bridge: it is an ingress, started after us and stopped before us, and it opens its
  // uplink flow only when the host is ready (every consumer subscribed). Until the bridge
  // answers, the relay's publishes fail and are retried on the backoff schedule.
  dependencies: ['status'],
  create(ctx) {
    const cfg = ctx.config;
    const counters = newCounters();
    let db: Deps['db'] | undefined;
    const owners = new CommandOwners(() => db);
    const stages = new StageMetrics();
    const events = new Events(ctx.bus, ctx.services.clock, counters, owners, ctx.log, stages);
    const creds = new CredentialsCache(ctx.bus, ctx.services.clock, cfg.credentials_cache_ms);
    let relay: Relay | undefined;
    let sweeper: Sweeper | undefined;
    let uplinks: Uplinks | undefined;
    let cluster: ClusterEvents | undefined;
    const releases = new Set<Promise<unknown>>();

    return {
      async start() {
        await ctx.services.migrate(migrations, cfg.database);
        db = ctx.services.db(cfg.database);
        ctx.services.outbox.declare({ table: EVENT_TABLE, database: cfg.database, events: COMMAND_EVENTS });
        const deps: Deps = {
          db,
          cfg,
          log: ctx.log,
          clock: ctx.services.clock,
          events,
          counters,
          creds,
          owners,
          wakeRelay: () => relay?.wake(),
          settleUplinks: async () => uplinks?.settle(),
          outbox: ctx.services.outbox,
        };
        const theRelay = new Relay(deps, ctx.bus, ctx.timers);
        relay = theRelay;
        const sender = new Sender(deps, (row) => theRelay.deliverSoon(row));
        const queries = new Queries(deps);
        const scheduler = new Scheduler(deps);
        sweeper = new Sweeper(deps, ctx.timers, sender, new Reasker(deps, ctx.bus), scheduler);
        const up = new Uplinks(deps, ctx.timers, theRelay.outcomes);
        uplinks = up;

        const bus = ctx.bus;
        // Sends and reads are independent of each other (every state change is a guarded SQL
        // statement), so they need not wait in line: a slow query must not hold up the acks.
        const parallel = { concurrency: PARALLEL };
        bus.subscribe(COMMAND.send, (p) => sender.send(p), { concurrency: SEND_PARALLEL });
        bus.subscribe(COMMAND.get, (p) => queries.get(checkCommandId(p)), parallel);
        bus.subscribe(COMMAND.list, (p) => queries.list(p), parallel);
        bus.subscribe(COMMAND.cancel, (p) => queries.cancel(checkCommandId(p)));
        bus.subscribe(COMMAND.deadList, (p) => queries.deadList(p), parallel);
        bus.subscribe(COMMAND.deadReplay, (p) => sender.replay(checkCommandId(p)));
        bus.subscribe(metricsTopic(ctx.name), () => [...commandMetrics(counters), ...stages.families()], CONTROL);
        bus.subscribe(
          COMMAND.stats,
          async () => ({
            ...counters,
            insert_statements: sender.insertStatements,
            uplink_queue: up.queued,
            owner_lookups: owners.lookups,
            outbox: await queries.outbox(),
          }),
          CONTROL,
        );
        // Acks and results (durable in the uplink table) are bus requests answered once written
        // (the bridge acknowledges them to the broker then): many wait at once, so the writes group (uplink.ts).
        subscribeUplinks(bus, 'command', up.handlers, { options: { concurrency: UPLINK_CONCURRENCY } });
        bus.subscribe<StatusChangedEvent>(STATUS.changedPattern, (ev) => {
          if (!ev || typeof ev.project_id !== 'string') return;
          creds.forget(ev.project_id);
          if (ev.state !== 'online') return;
          // Not awaited: the mailbox goes on with acks and sends while the queue is released.
          const p = sender
            .release(ev.project_id)
            .catch((err) =>
              ctx.log.warn({ err, project_id: ev.project_id }, 'releasing queued commands failed; the sweeper retries'),
            )
            .finally(() => releases.delete(p));
          releases.add(p);
        });

        // other instances' events: listening before the relay and sweeper start changing rows
        cluster = new ClusterEvents(deps);
        const heard = cluster;
        await heard.start();
        // own events in version order on every backend (migration 009), others' too when heard
        events.ordered = true;
        if (heard.enabled) {
          events.announceLog = (p, c, seq, content) => heard.announceLog(p, c, seq, content);
        }

        relay.start();
        sweeper.start();
        ctx.log.info(
          { database: cfg.database, max_attempts: cfg.max_attempts, default_timeout_ms: cfg.default_timeout_ms },
          'command module started',
        );
      },

      async stop() {
        await Promise.allSettled([relay?.stop(), sweeper?.stop(), ...releases]);
        // Acks and results already taken from the mailbox are written before the instance goes.
        await uplinks?.close();
        events.announceLog = undefined;
        await cluster?.stop();
        // the lifecycle lines of the last changes, held for a turn (lifecycle-lines.ts)
        events.flushLines();
      },
    };
  },
};
