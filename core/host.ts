import path from 'node:path';
import { Bus, CONTROL } from './bus.js';
import {
  canonicalJson,
  type HostConfig,
  type HostSettings,
  loadConfig,
  type ModuleBlock,
  validateSettings,
} from './config.js';
import { type ConfigWatcher, watchConfigFile } from './config-watch.js';
import { ContextScope } from './context.js';
import { errorCode, HubError, serializeError } from './errors.js';
import { exeProvider } from './exe-module.js';
import { applyHeapGrowth, type HeapGrowth } from './heap-growth.js';
import { busMetrics, outboxMetrics } from './host-metrics.js';
import { HOST_TOPICS } from './host-topics.js';
import { createRootLogger, type Logger } from './log.js';
import { CORE_METRICS, metricsTopic } from './metrics.js';
import type { Clock, ModuleInstance, ModuleProvider } from './module.js';
import { ModuleGraph } from './module-graph.js';
import { checkPorts, plannedPorts, withPortHint } from './port-check.js';
import { ReadyPhase } from './ready-phase.js';
import type { ProviderRegistry } from './registry.js';
import { DbPool } from './services/db.js';
import { OUTBOX_TOPICS } from './services/outbox/contract.js';
import { OutboxService } from './services/outbox/service.js';
import { workerProvider } from './worker-module.js';

export type ModuleState = 'disabled' | 'stopped' | 'starting' | 'running' | 'stopping' | 'failed';

export interface ModuleInfo {
  name: string;
  type: ModuleBlock['type'];
  provider: string;
  state: ModuleState;
  started_at: string | null;
  restarts: number;
  failures: number;
  last_error: string | null;
  mailbox: ReturnType<Bus['stats']>['mailboxes'][number] | null;
}

export interface HostOptions {
  /** Path of config.yml; watched for edits unless `watch` is false. */
  configFile?: string;
  /** An already parsed config (tests); `configFile` still drives reloads when given. */
  config?: HostConfig;
  registry: ProviderRegistry;
  log?: Logger;
  env?: NodeJS.ProcessEnv;
  clock?: Clock;
  watch?: boolean;
}

interface ModuleRecord {
  name: string;
  block: ModuleBlock;
  provider: ModuleProvider<unknown>;
  settings: unknown;
  state: ModuleState;
  instance?: ModuleInstance;
  scope?: ContextScope;
  startedAt?: number;
  restarts: number;
  failures: number;
  lastError?: string;
  retryTimer?: NodeJS.Timeout;
  fileWatch?: ConfigWatcher;
}

interface Planned {
  block: ModuleBlock;
  provider: ModuleProvider<unknown>;
  settings: unknown;
}

export interface ReloadOutcome {
  applied: boolean;
  started: string[];
  stopped: string[];
  restarted: string[];
  /** Running modules that took an edit of their own settings in place (ModuleInstance.reconfigure): not restarted. */
  reconfigured: string[];
  /**
   * Modules whose edited block could not start. A module that ran before keeps running with its
   * previous block (`kept_previous`); a new one is retried with backoff.
   */
  failed: Array<{ name: string; code: string; message: string; kept_previous: boolean }>;
  error?: { code: string; message: string };
}

/**
 * The module host: builds modules from config.yml, starts them in the order of the module graph
 * (core/module-graph.ts), announces `host/ready` once all have started (ctx.onReady), restarts
 * crashed ones with backoff, applies config edits by restarting only what changed, and stops
 * in reverse order. Lifecycle operations run one at a time through `serial`.
 */
export class Host {
  readonly bus: Bus;
  readonly log: Logger;
  readonly db: DbPool;
  readonly outbox: OutboxService;
  private config: HostConfig;
  private readonly registry: ProviderRegistry;
  private readonly env: NodeJS.ProcessEnv;
  private readonly clock: Clock;
  private readonly records = new Map<string, ModuleRecord>();
  private graph = ModuleGraph.build([]);
  private readonly ready = new ReadyPhase();
  private chain: Promise<unknown> = Promise.resolve();
  private watcher?: ConfigWatcher;
  private readonly opts: HostOptions;
  private state: 'new' | 'starting' | 'running' | 'stopping' | 'stopped' = 'new';
  private stopPromise?: Promise<void>;

  constructor(opts: HostOptions) {
    this.opts = opts;
    this.registry = opts.registry;
    this.env = opts.env ?? process.env;
    this.clock = opts.clock ?? { now: () => Date.now() };
    this.log = opts.log ?? createRootLogger();
    if (!opts.config && !opts.configFile)
      throw new HubError('HOST_ERR_CONFIG_READ', 'the host needs a config or a config file');
    this.config = opts.config ?? loadConfig(opts.configFile!, this.env);
    this.bus = new Bus(this.log.child({ module: 'bus' }));
    this.db = new DbPool({ ...this.config.databases }, this.log.child({ module: 'db' }));
    this.outbox = new OutboxService(this.config.outbox, this.db, this.log.child({ module: 'outbox' }));
  }

  get running(): boolean {
    return this.state === 'running';
  }

  get currentConfig(): HostConfig {
    return this.config;
  }

  private serial<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.chain.then(fn, fn);
    this.chain = run.catch(() => undefined);
    return run;
  }

  /**
   * Starts every enabled module in graph order, then reaches the ready phase; a failure stops
   * what started and throws (the ready phase is then never reached).
   */
  async start(): Promise<void> {
    if (this.state !== 'new') return;
    this.state = 'starting';
    applyHeapGrowth(heapGrowthOf(this.config.host), this.log);
    this.installIntrospection();
    const plan = this.plan(this.config);
    await this.serial(async () => {
      this.graph = moduleGraph(plan);
      try {
        // cheap checks first: a second hub on the same PGlite directory, or a taken port, fail
        // in milliseconds instead of after the database (tens of seconds when fresh) has opened
        this.db.lockDataDirs();
        await checkPorts(
          plannedPorts([...plan.values()].map((p) => ({ name: p.block.name, settings: p.settings }))),
          this.config,
        );
        await this.db.prepareDataDirs();
      } catch (err) {
        this.state = 'stopped';
        await this.db.close();
        throw err;
      }
      for (const name of this.graph.start) {
        const p = plan.get(name)!;
        const rec = this.newRecord(p);
        try {
          await this.startInstance(rec);
        } catch (err) {
          this.log.error({ module: name, err: serializeError(err) }, 'module failed to start; stopping the host');
          await this.stopAll();
          this.state = 'stopped';
          await this.outbox.stop();
          await this.db.close(); // releases the data dir locks and any database a module opened
          throw err;
        }
      }
      for (const [name, block] of Object.entries(this.config.modules)) {
        if (!block.enable) this.records.set(name, this.disabledRecord(block));
      }
      this.ready.reach();
      void this.bus.publish(HOST_TOPICS.ready, { modules: [...this.graph.start] });
    });
    if (this.opts.configFile && this.opts.watch !== false) {
      this.watcher = watchConfigFile(this.opts.configFile, () => void this.reload(), {
        debounceMs: this.config.host.reload_debounce_ms,
      });
    }
    this.state = 'running';
    this.log.info({ modules: this.graph.start }, 'host started');
  }

  /** Validates every enabled module's settings against its provider; throws on the first bad one. */
  private plan(cfg: HostConfig): Map<string, Planned> {
    const out = new Map<string, Planned>();
    for (const [name, block] of Object.entries(cfg.modules)) {
      if (!block.enable) continue;
      const provider = this.providerFor(block, cfg);
      const settings = block.type === 'inner' ? validateSettings(block, provider.schema) : block.settings;
      out.set(name, { block, provider, settings });
    }
    return out;
  }

  private providerFor(block: ModuleBlock, cfg: HostConfig): ModuleProvider<unknown> {
    switch (block.type) {
      case 'inner':
        return this.registry.resolve(block.provider, `modules.${block.name}.provider`);
      case 'worker':
        return workerProvider(path.resolve(cfg.dir, block.path!)) as ModuleProvider<unknown>;
      case 'exe':
        return exeProvider({
          command: block.command!,
          args: block.args,
          env: block.env,
          cwd: block.cwd ? path.resolve(cfg.dir, block.cwd) : cfg.dir,
        }) as ModuleProvider<unknown>;
      default:
        throw new HubError('HOST_ERR_UNKNOWN_TYPE', `modules.${block.name}.type: unknown module type`);
    }
  }

  private newRecord(p: Planned): ModuleRecord {
    const rec: ModuleRecord = { name: p.block.name, ...p, state: 'stopped', restarts: 0, failures: 0 };
    this.records.set(rec.name, rec);
    this.bus.mailbox(rec.name, rec.block.mailbox).reconfigure(rec.block.mailbox);
    if (rec.block.type === 'worker') rec.fileWatch = this.watchWorkerFile(rec);
    return rec;
  }

  private disabledRecord(block: ModuleBlock): ModuleRecord {
    return {
      name: block.name,
      block,
      provider: undefined as unknown as ModuleProvider<unknown>,
      settings: undefined,
      state: 'disabled',
      restarts: 0,
      failures: 0,
    };
  }

  private async startInstance(rec: ModuleRecord): Promise<void> {
    rec.state = 'starting';
    const box = this.bus.mailbox(rec.name, rec.block.mailbox);
    const log = this.log.child({ module: rec.name });
    const scope = new ContextScope({
      name: rec.name,
      config: rec.settings,
      log,
      bus: this.bus,
      mailbox: box,
      db: this.db,
      clock: this.clock,
      outbox: this.outbox,
      ready: this.ready,
      onCrash: (err) => this.onCrash(rec, scope, err),
    });
    rec.scope = scope;
    const timeoutMs = rec.block.start_timeout_ms;
    let timer: NodeJS.Timeout | undefined;
    try {
      const started = (async () => {
        const instance = await rec.provider.create(scope.ctx);
        rec.instance = instance;
        await instance.start?.();
      })();
      const timeout = new Promise<never>((_, reject) => {
        timer = setTimeout(
          () =>
            reject(
              new HubError('HOST_ERR_START_TIMEOUT', `module ${rec.name} did not start within ${timeoutMs} ms`, {
                module: rec.name,
              }),
            ),
          timeoutMs,
        );
      });
      await Promise.race([started, timeout]);
    } catch (err) {
      clearTimeout(timer);
      rec.state = 'failed';
      rec.lastError = describe(err);
      await this.stopInstance(rec, 'failed start').catch(() => undefined);
      rec.state = 'failed';
      throw err instanceof HubError
        ? (withPortHint(err, this.config, rec.name, rec.settings) as HubError)
        : new HubError(
            'HOST_ERR_START_FAILED',
            `module ${rec.name} failed to start: ${describe(err)}`,
            { module: rec.name },
            { cause: err },
          );
    }
    clearTimeout(timer);
    rec.state = 'running';
    rec.startedAt = this.clock.now();
    box.resume();
    void this.bus.publish(HOST_TOPICS.moduleStarted, { name: rec.name, type: rec.block.type, restarts: rec.restarts });
  }

  /** Stops the instance and releases its scope; the mailbox is paused, keeping its events. */
  private async stopInstance(rec: ModuleRecord, why: string): Promise<void> {
    const scope = rec.scope;
    const instance = rec.instance;
    rec.scope = undefined;
    rec.instance = undefined;
    this.bus.mailbox(rec.name).pause();
    scope?.detach();
    if (rec.state !== 'failed') rec.state = 'stopping';
    const log = this.log.child({ module: rec.name });
    let timer: NodeJS.Timeout | undefined;
    try {
      if (instance?.stop) {
        await Promise.race([
          Promise.resolve().then(() => instance.stop!()),
          new Promise((_, reject) => {
            timer = setTimeout(
              () => reject(new Error(`stop took longer than ${rec.block.stop_timeout_ms} ms`)),
              rec.block.stop_timeout_ms,
            );
          }),
        ]);
      }
    } catch (err) {
      log.warn({ err: serializeError(err), why }, 'module stop failed; releasing its resources anyway');
    } finally {
      clearTimeout(timer);
      await scope?.release(log);
    }
    if (rec.state !== 'failed') rec.state = 'stopped';
  }

  private onCrash(rec: ModuleRecord, scope: ContextScope, err: Error): void {
    // hold the mailbox now, not when the serial queue gets here: events must wait for the next
    // instance instead of being handed to the dead one in the meantime
    if (rec.scope === scope && rec.state === 'running') this.bus.mailbox(rec.name).pause();
    void this.serial(async () => {
      if (rec.scope !== scope || this.state === 'stopping' || this.state === 'stopped') return;
      const ranMs = rec.startedAt ? this.clock.now() - rec.startedAt : 0;
      if (ranMs > (rec.block.restart.reset_after_ms ?? rec.block.restart.max_ms)) rec.failures = 0;
      rec.state = 'failed';
      rec.lastError = describe(err);
      await this.stopInstance(rec, 'crash');
      this.scheduleRetry(rec, err);
    });
  }

  /** Exponential backoff from restart.initial_ms, capped at restart.max_ms; events wait in the mailbox. */
  private scheduleRetry(rec: ModuleRecord, err: unknown): void {
    const delay = Math.min(rec.block.restart.initial_ms * 2 ** rec.failures, rec.block.restart.max_ms);
    rec.failures++;
    this.log.error({ module: rec.name, err: serializeError(err), retry_in_ms: delay }, 'module failed');
    void this.bus.publish(HOST_TOPICS.moduleFailed, {
      name: rec.name,
      error: serializeError(err),
      failures: rec.failures,
      retry_in_ms: delay,
    });
    clearTimeout(rec.retryTimer);
    rec.retryTimer = setTimeout(() => {
      rec.retryTimer = undefined;
      void this.serial(async () => {
        if (this.records.get(rec.name) !== rec || rec.state !== 'failed' || this.state !== 'running') return;
        try {
          await this.startInstance(rec);
          rec.restarts++;
          void this.bus.publish(HOST_TOPICS.moduleRestarted, {
            name: rec.name,
            restarts: rec.restarts,
            reason: 'crash',
          });
        } catch (e) {
          this.scheduleRetry(rec, e);
        }
      });
    }, delay);
  }

  /** Restarts one module in place: its mailbox keeps what arrives meanwhile. */
  restartModule(name: string): Promise<ModuleInfo> {
    return this.serial(async () => {
      const rec = this.records.get(name);
      if (!rec || rec.state === 'disabled') {
        throw new HubError('HOST_ERR_UNKNOWN_MODULE', `no enabled module named ${name}`, { module: name });
      }
      clearTimeout(rec.retryTimer);
      await this.stopInstance(rec, 'restart');
      try {
        await this.startInstance(rec);
        rec.restarts++;
        void this.bus.publish(HOST_TOPICS.moduleRestarted, { name, restarts: rec.restarts, reason: 'request' });
      } catch (err) {
        this.scheduleRetry(rec, err);
        throw err;
      }
      return this.info(rec);
    });
  }

  /**
   * Re-reads the config file and applies the difference: restarts modules whose block changed,
   * starts added or enabled ones, stops removed or disabled ones. An invalid file changes nothing.
   */
  reload(): Promise<ReloadOutcome> {
    return this.serial(async () => {
      const outcome: ReloadOutcome = {
        applied: false,
        started: [],
        stopped: [],
        restarted: [],
        reconfigured: [],
        failed: [],
      };
      if (this.state !== 'running' || !this.opts.configFile) return outcome;
      let next: HostConfig;
      let plan: Map<string, Planned>;
      let graph: ModuleGraph;
      try {
        next = loadConfig(this.opts.configFile, this.env);
        plan = this.plan(next);
        graph = moduleGraph(plan);
      } catch (err) {
        const e = serializeError(err);
        this.log.error(
          { file: this.opts.configFile, code: e.code, reason: e.message },
          'config edit rejected; the running config stays in force',
        );
        void this.bus.publish(HOST_TOPICS.configRejected, { file: this.opts.configFile, ...e });
        return { ...outcome, error: { code: e.code, message: e.message } };
      }
      if (JSON.stringify(next.databases) !== JSON.stringify(this.config.databases)) {
        this.log.warn('databases changed in config; that part takes effect at the next process start');
      }
      applyHeapGrowth(heapGrowthOf(next.host), this.log);
      if (JSON.stringify(next.outbox) !== JSON.stringify(this.config.outbox)) {
        this.log.warn('outbox changed in config; that part takes effect at the next process start');
      }
      const prev = this.config;
      this.config = { ...next, databases: prev.databases, outbox: prev.outbox };

      // stop what went away or was disabled, in the running graph's stop order (dependents first)
      for (const name of this.graph.stop) {
        if (plan.has(name)) continue;
        const rec = this.records.get(name)!;
        clearTimeout(rec.retryTimer);
        rec.fileWatch?.close();
        await this.stopInstance(rec, 'removed from config');
        this.bus.removeMailbox(name);
        this.records.delete(name);
        outcome.stopped.push(name);
        void this.bus.publish(HOST_TOPICS.moduleStopped, { name, reason: 'config' });
      }
      const kept = new Map<string, ModuleBlock>(); // modules running on with their previous block
      for (const name of graph.start) {
        const p = plan.get(name)!;
        const rec = this.records.get(name);
        if (rec && rec.state !== 'disabled') {
          if (rec.block.fingerprint === p.block.fingerprint) continue;
          if (await this.applyInPlace(rec, p)) {
            outcome.reconfigured.push(name);
            continue;
          }
          const refused = await this.applyEdit(rec, p);
          if (refused) {
            outcome.failed.push(refused);
            if (refused.kept_previous) kept.set(name, rec.block);
          } else {
            outcome.restarted.push(name);
          }
        } else {
          const fresh = this.newRecord(p);
          try {
            await this.startInstance(fresh);
            outcome.started.push(name);
          } catch (err) {
            const e = serializeError(err);
            outcome.failed.push({ name, code: e.code, message: e.message, kept_previous: false });
            this.scheduleRetry(fresh, err);
          }
        }
      }
      if (kept.size > 0) {
        // what runs is what `currentConfig` says: the refused blocks are not in force
        this.config = { ...this.config, modules: { ...this.config.modules, ...Object.fromEntries(kept) } };
      }
      for (const [name, block] of Object.entries(next.modules)) {
        if (!block.enable) this.records.set(name, this.disabledRecord(block));
      }
      this.graph = graph;
      outcome.applied = true;
      const summary = {
        started: outcome.started,
        stopped: outcome.stopped,
        restarted: outcome.restarted,
        reconfigured: outcome.reconfigured,
      };
      if (outcome.failed.length === 0) this.log.info(summary, 'config reloaded');
      else {
        // the one line an operator reads after an edit: which module refused it, why, and what runs now
        const what = outcome.failed
          .map(
            (f) =>
              `modules.${f.name}: ${f.message}${f.kept_previous ? ' (kept running with its previous settings)' : ' (retrying)'}`,
          )
          .join('; ');
        this.log.error(
          { ...summary, failed: outcome.failed },
          `config reloaded, but an edit could not be applied: ${what}`,
        );
      }
      void this.bus.publish(HOST_TOPICS.configApplied, { ...outcome });
      return outcome;
    });
  }

  /**
   * An edit of a running module's own settings only (same provider, every host key equal) that
   * the instance takes without a restart. False: restart it (applyEdit).
   */
  private async applyInPlace(rec: ModuleRecord, p: Planned): Promise<boolean> {
    const instance = rec.instance;
    if (rec.state !== 'running' || !instance?.reconfigure || rec.provider !== p.provider) return false;
    const hostKeys = (b: ModuleBlock) => canonicalJson({ ...b, settings: null, fingerprint: null });
    if (hostKeys(rec.block) !== hostKeys(p.block)) return false;
    try {
      if (!(await instance.reconfigure(p.settings))) return false;
    } catch (err) {
      this.log.warn(
        { module: rec.name, err: serializeError(err) },
        'module could not take its edit in place; restarting it',
      );
      return false;
    }
    Object.assign(rec, { block: p.block, settings: p.settings });
    this.log.info({ module: rec.name }, 'module took its settings edit in place (not restarted)');
    return true;
  }

  /**
   * Restarts a running module with its edited block. A new port that is taken is refused before
   * the module is stopped; any other start failure brings the previous block back. Either way the
   * module runs on as before, nothing retries in a loop, and the refusal is returned. A module
   * that fails again with its previous block is retried with backoff, as after a crash.
   */
  private async applyEdit(rec: ModuleRecord, p: Planned): Promise<ReloadOutcome['failed'][number] | undefined> {
    const name = rec.name;
    const refusal = (err: unknown, kept: boolean) => {
      const e = serializeError(err);
      return { name, code: e.code, message: e.message, kept_previous: kept };
    };
    const [newPort] = plannedPorts([{ name, settings: p.settings }]);
    const [oldPort] = plannedPorts([{ name, settings: rec.settings }]);
    // (the same port on another address is held by the module itself: only a new port is checked)
    if (newPort && rec.state === 'running' && newPort.port !== oldPort?.port) {
      try {
        await checkPorts([newPort], this.config);
      } catch (err) {
        return refusal(err, true);
      }
    }
    const before = { block: rec.block, provider: rec.provider, settings: rec.settings };
    const wasRunning = rec.state === 'running';
    clearTimeout(rec.retryTimer);
    rec.fileWatch?.close();
    await this.stopInstance(rec, 'config changed');
    rec.fileWatch = undefined;
    const use = (b: typeof before) => {
      Object.assign(rec, { block: b.block, provider: b.provider, settings: b.settings, failures: 0 });
      this.bus.mailbox(name).reconfigure(b.block.mailbox);
      if (b.block.type === 'worker') {
        rec.fileWatch?.close();
        rec.fileWatch = this.watchWorkerFile(rec);
      }
    };
    use(p);
    try {
      await this.startInstance(rec);
      rec.restarts++;
      void this.bus.publish(HOST_TOPICS.moduleRestarted, { name, restarts: rec.restarts, reason: 'config' });
      return undefined;
    } catch (err) {
      if (!wasRunning) {
        // it was failing already: the edit may be its fix, so keep it and go on retrying
        this.scheduleRetry(rec, err);
        return refusal(err, false);
      }
      use(before);
      try {
        await this.startInstance(rec);
        rec.restarts++;
        void this.bus.publish(HOST_TOPICS.moduleRestarted, { name, restarts: rec.restarts, reason: 'config' });
      } catch (again) {
        this.scheduleRetry(rec, again);
      }
      return refusal(err, true);
    }
  }

  /** Editing a worker's file swaps its code: the restart loads the new file in a new worker_thread. */
  private watchWorkerFile(rec: ModuleRecord): ConfigWatcher {
    return watchConfigFile(path.resolve(this.config.dir, rec.block.path!), () => {
      this.log.info({ module: rec.name }, 'worker file changed; reloading it');
      void this.restartModule(rec.name).catch(() => undefined);
    });
  }

  /**
   * Graceful stop, in this order: refuse new lifecycle work and announce `host/stopping` (the
   * interfaces stop taking requests); drain mailboxes up to host.drain_timeout_ms; stop modules
   * in reverse start order (a failing stop is logged, the rest go on); close the bus and pools.
   */
  stop(): Promise<void> {
    this.stopPromise ??= (async () => {
      if (this.state === 'new' || this.state === 'stopped') {
        this.state = 'stopped';
        await this.db.close();
        return;
      }
      this.state = 'stopping';
      this.watcher?.close();
      this.log.info('host stopping');
      void this.bus.publish(HOST_TOPICS.stopping, {});
      const drained = await this.bus.drain(this.config.host.drain_timeout_ms);
      if (!drained)
        this.log.warn({ timeout_ms: this.config.host.drain_timeout_ms }, 'mailboxes not drained before the deadline');
      await this.serial(() => this.stopAll());
      this.bus.close();
      await this.outbox.stop(); // after the modules: their last commits' events still get a relay pass
      await this.db.close();
      this.state = 'stopped';
      this.log.info('host stopped');
    })();
    return this.stopPromise;
  }

  private async stopAll(): Promise<void> {
    for (const name of this.graph.stop) {
      const rec = this.records.get(name);
      if (!rec) continue;
      clearTimeout(rec.retryTimer);
      rec.fileWatch?.close();
      if (rec.scope) await this.stopInstance(rec, 'host stop');
      rec.state = 'stopped';
    }
  }

  list(): ModuleInfo[] {
    return [...this.records.values()].map((r) => this.info(r));
  }

  private info(r: ModuleRecord): ModuleInfo {
    return {
      name: r.name,
      type: r.block.type,
      provider: r.block.type === 'inner' ? r.block.provider : (r.block.path ?? r.block.command ?? ''),
      state: r.state,
      started_at: r.startedAt && r.state === 'running' ? new Date(r.startedAt).toISOString() : null,
      restarts: r.restarts,
      failures: r.failures,
      last_error: r.lastError ?? null,
      mailbox: this.bus.hasMailbox(r.name) ? this.bus.mailbox(r.name).stats() : null,
    };
  }

  /** The host answers bus requests about its modules, so the web and grpc modules can show them. */
  private installIntrospection(): void {
    const box = this.bus.mailbox('host', { capacity: 1000, overflow: 'reject', block_timeout_ms: 0 });
    box.subscribe(HOST_TOPICS.listModules, () => this.list(), CONTROL);
    box.subscribe(HOST_TOPICS.restartModule, (p) => this.restartModule(String((p as { name?: unknown })?.name)));
    box.subscribe(HOST_TOPICS.busStats, () => this.bus.stats(), CONTROL);
    box.subscribe(HOST_TOPICS.reloadConfig, () => this.reload());
    box.subscribe(OUTBOX_TOPICS.deadList, (p) => this.outbox.deadList((p ?? {}) as { route?: string }));
    box.subscribe(OUTBOX_TOPICS.deadReplay, (p) => this.outbox.replay(p as { event_id: string; route?: string }));
    box.subscribe(OUTBOX_TOPICS.stats, () => this.outbox.stats(), CONTROL);
    box.subscribe(metricsTopic(CORE_METRICS.bus), () => busMetrics(this.bus.stats()), CONTROL);
    box.subscribe(
      metricsTopic(CORE_METRICS.outbox),
      async () => outboxMetrics((await this.outbox.stats()).routes),
      CONTROL,
    );
  }
}

/**
 * The module graph of a plan: config `depends_on` (each must be enabled), provider `dependencies`
 * (when enabled) and `ingress`. Throws HOST_ERR_DEPENDENCY for a cycle or a missing dependency.
 */
export function moduleGraph(plan: ReadonlyMap<string, Planned>): ModuleGraph {
  return ModuleGraph.build(
    [...plan].map(
      ([name, p]) =>
        [
          name,
          { requires: p.block.depends_on, after: p.provider.dependencies ?? [], ingress: p.provider.ingress === true },
        ] as const,
    ),
  );
}

/** Start order of a plan (moduleGraph(plan).start). */
export function orderModules(plan: Map<string, Planned>): string[] {
  return [...moduleGraph(plan).start];
}

function describe(err: unknown): string {
  const code = errorCode(err);
  const msg = err instanceof Error ? err.message : String(err);
  return code ? `${code}: ${msg}` : msg;
}

/** config `host`'s heap settings, as core/heap-growth.ts takes them. */
function heapGrowthOf(host: HostSettings): HeapGrowth {
  return { percent: host.heap_growing_percent, headroomMb: host.heap_headroom_mb };
}
