/**
 * The `jobs` module: one command to many projects (README "Jobs: one command to many projects", issue 14 item 1).
 *
 *   scheduled ──schedule_at──▶ running ──every target terminal──▶ completed
 *       │                         ├──failure ratio ≥ abort.failure_ratio (after min_done)──▶ aborted
 *       └──────── cancel ─────────┴──cancel──▶ cancelled
 *
 * A job's targets are projects (by id, all enabled ones, or by metadata) resolved through the
 * status module; each target is an ordinary command sent through the command module over the
 * bus, carrying `job_id` (GET /commands?job_id=). The rollout driver (driver.ts) keeps within
 * `max_in_flight` and `max_per_minute`; one instance drives a job at a time (a lease row), and
 * everything is in the database, so a restarted hub, or another instance, carries on.
 *
 * Target states follow their commands' state events (every instance applies them, grouped into
 * one statement per turn; a change is applied once) and are re-read from the command module
 * every `reconcile_ms` by the job's driver, so counts are right after any restart or lost event.
 *
 * Bus: answers JOBS.create/get/list/cancel; publishes JobProgressEvent on JOBS.event(job_id);
 * asks STATUS.list/get and COMMAND.send/list/cancel; listens to COMMAND.eventPattern.
 *
 * @example config.yml
 *   modules:
 *     jobs:
 *       default_max_in_flight: 100
 */
import { randomUUID } from 'node:crypto';
import { CONTROL } from '../../core/bus.js';
import { counter, countsBy, metricsTopic } from '../../core/metrics.js';
import type { ModuleProvider } from '../../core/module.js';
import { COMMAND, type CommandEvent } from '../command/contract/topics.js';
import { type JobsConfig, jobsConfigSchema } from './config.js';
import { TARGET_STATE_OF } from './contract/schemas.js';
import { JOBS, type JobProgressEvent, type JobView, type TargetState } from './contract/topics.js';
import { Driver } from './driver.js';
import { migrations } from './migrations.js';
import { JobService } from './service.js';
import { applyCommandStates, getRow, isoAt, query, viewOf } from './store.js';
import { TargetResolver } from './targets.js';

export type { JobsConfig } from './config.js';

/** Reads in flight at once. */
const PARALLEL = 16;
/** How often idempotency keys past their retention are let go. */
const KEY_SWEEP_MS = 3_600_000;

export const provider: ModuleProvider<JobsConfig> = {
  name: 'jobs',
  description: 'Jobs: one command to many projects, with rollout limits, abort threshold and schedule',
  schema: jobsConfigSchema,
  dependencies: ['status', 'command'],
  create(ctx) {
    const cfg = ctx.config;
    const owner = `${ctx.name}-${randomUUID()}`;
    const counters = {
      created: 0,
      rejected: 0,
      replayed: 0,
      cancelled: 0,
      sent: 0,
      send_refused: 0,
      aborted: 0,
      completed: 0,
      takeovers: 0,
      state_updates: 0,
    };
    let driver: Driver | undefined;
    /** Command states waiting for the next grouped write: command_id → state. */
    const pendingStates = new Map<string, TargetState>();
    let flushing: Promise<void> | null = null;

    const progress = (job: JobView) => {
      const ev: JobProgressEvent = { job, at: ctx.services.clock.now() };
      void ctx.bus.publish(JOBS.event(job.job_id), ev);
    };

    return {
      async start() {
        await ctx.services.migrate(migrations, cfg.database);
        const db = ctx.services.db(cfg.database);
        const resolver = new TargetResolver(ctx.bus, cfg.request_timeout_ms);
        const service = new JobService({
          db,
          bus: ctx.bus,
          cfg,
          log: ctx.log,
          clock: ctx.services.clock,
          resolver,
          wake: () => driver?.wake(),
          progress,
          counters,
        });
        driver = new Driver({
          db,
          bus: ctx.bus,
          cfg,
          log: ctx.log,
          clock: ctx.services.clock,
          timers: ctx.timers,
          resolver,
          owner,
          progress,
          counters,
        });

        /** Writes the states heard since the last write in one statement, then tells watchers and the driver. */
        const flush = async (): Promise<void> => {
          while (pendingStates.size > 0) {
            const batch = [...pendingStates].map(([command_id, state]) => ({ command_id, state }));
            pendingStates.clear();
            const changed = await applyCommandStates(db, batch, ctx.services.clock.now());
            counters.state_updates += batch.length;
            for (const jobId of changed) {
              const row = await getRow(db, jobId);
              if (row) progress(await viewOf(db, row));
            }
            if (changed.length > 0) driver?.wake();
          }
        };
        const scheduleFlush = () => {
          if (flushing) return;
          flushing = new Promise<void>((r) => setImmediate(r))
            .then(flush)
            .catch((err: unknown) => ctx.log.warn({ err }, 'job target states not written; the driver re-reads them'))
            .finally(() => {
              flushing = null;
              if (pendingStates.size > 0) scheduleFlush();
            });
        };

        const bus = ctx.bus;
        const parallel = { concurrency: PARALLEL };
        bus.subscribe(JOBS.create, (p) => service.create(p), parallel);
        bus.subscribe(JOBS.get, (p) => service.get(p), parallel);
        bus.subscribe(JOBS.list, (p) => service.list(p), parallel);
        bus.subscribe(JOBS.cancel, (p) => service.cancel(p));
        bus.subscribe<CommandEvent>(COMMAND.eventPattern, (ev) => {
          if (ev.kind === 'log') return;
          const c = ev.command;
          if (!c?.job_id) return;
          pendingStates.set(c.command_id, TARGET_STATE_OF[c.status]);
          scheduleFlush();
        });
        bus.subscribe(
          metricsTopic(ctx.name),
          () => [
            counter(
              'hub_jobs_total',
              "This instance's jobs module: jobs created, refused (bad request, unknown project, no target, key mismatch), answered by an idempotency key, cancelled, aborted, completed; target commands sent and refused; leases taken",
              countsBy('counter', { ...counters }),
              ['counter'],
            ),
          ],
          CONTROL,
        );
        // Idempotency keys name their job for cfg.idempotency_retention_ms, then are let go (the job stays).
        const sweepKeys = () =>
          query(
            db,
            'UPDATE job SET idempotency_key = NULL WHERE idempotency_key IS NOT NULL AND created_at < ?::timestamptz',
            [isoAt(ctx.services.clock.now() - cfg.idempotency_retention_ms)],
          ).catch((err: unknown) => ctx.log.warn({ err }, 'expiring job idempotency keys failed'));
        ctx.timers.setInterval(() => void sweepKeys(), KEY_SWEEP_MS);
        driver.start();
        ctx.log.info(
          { owner, database: cfg.database, tick_ms: cfg.tick_ms, lease_ms: cfg.lease_ms },
          'jobs module started',
        );
      },

      async stop() {
        await driver?.stop();
        await flushing;
      },
    };
  },
};
