import {
  Metadata,
  type ServerUnaryCall,
  type ServerWritableStream,
  type sendUnaryData,
  type UntypedServiceImplementation,
} from '@grpc/grpc-js';
import { errorCode, HubError, isClientMistake } from '../../core/errors.js';
import type { ModuleInfo } from '../../core/host.js';
import { HOST_TOPICS } from '../../core/host-topics.js';
import type { ModuleContext } from '../../core/module.js';
import { type DeadEvent, OUTBOX_TOPICS } from '../../core/services/outbox/contract.js';
import { AUDIT, type AuditPage } from '../audit/contract/topics.js';
import { type AuditSpec, type AuditTrail, pickIds } from '../audit/contract/trail.js';
import { COMMAND, type CommandDetail, type CommandView, type SentCommand } from '../command/contract/topics.js';
import { type CreatedJob, JOBS, type JobView } from '../jobs/contract/topics.js';
import { CallSignals } from '../shared/interface-kit/call-signals.js';
import type { CommandWaiter } from '../shared/interface-kit/command-waiter.js';
import type { EventFeed, FeedEvent, FeedFilter } from '../shared/interface-kit/event-feed.js';
import {
  type Access,
  assertDeclared,
  forbiddenAction,
  grants,
  listScope,
  requireAction,
  requireNewProject,
  requireProject,
  requireWholeHub,
  seesProject,
} from '../shared/interface-kit/permissions.js';
import { syncWait } from '../shared/interface-kit/sync-wait.js';
import { bearerToken, type Principal, type TokenGate } from '../shared/interface-kit/token-gate.js';
import { STATUS_HISTORY } from '../status/contract/history-topics.js';
import { type CreatedProject, type ProjectView, STATUS } from '../status/contract/topics.js';
import type { GrpcConfig } from './config.js';
import type { GrpcStats } from './contract/topics.js';
import {
  type CreateJobMsg,
  type CreateProjectMsg,
  checkCommandId,
  checkModuleName,
  checkProjectId,
  commandDetail,
  deadEvents,
  deadList,
  jobView,
  type ListCommandsMsg,
  type ListDeadEventsMsg,
  type ListProjectsMsg,
  type PagingMsg,
  projectList,
  projectView,
  type RotateProjectSecretMsg,
  type SendCommandMsg,
  type SendSyncCommandMsg,
  toCreateJob,
  toCreateProject,
  toDeadEventsQuery,
  toFilter,
  toListCommands,
  toListJobs,
  toListProjects,
  toPaging,
  toRotate,
  toSendRequest,
  type WatchEventsMsg,
} from './convert.js';
import { invalidArg, isExpected, toServiceError } from './errors.js';
import { auditPage, type HistoryMsg, type ListAuditMsg, toHistoryRequest, toListAudit } from './history-convert.js';
import { type EventStream, startWatch } from './watch.js';

export interface ServiceDeps {
  ctx: ModuleContext<GrpcConfig>;
  gate: TokenGate;
  waiter: CommandWaiter;
  feed: EventFeed;
  /** Encodes a FeedEvent message once (the stream then writes the bytes as they are). */
  encodeEvent: (msg: Record<string, unknown>) => Buffer;
  /** True once the host announced its stop or the module is stopping: new calls get UNAVAILABLE. */
  stopping: () => boolean;
  stats: CallStats;
  /** Writes the audit record of an operator action (README "Audit trail"). */
  trail: AuditTrail;
}

/** An audit spec whose targets are these keys of the request, then of the answer. */
function audited<Q>(action: AuditSpec['action'], keys: string[]): AuditSpec<Q> {
  return {
    action,
    targets: (req, answer) => ({
      ...pickIds(req, keys),
      ...pickIds((answer as { command?: unknown } | null)?.command, keys),
      ...pickIds(answer, keys),
    }),
  };
}

/** The counters the service keeps; GRPC.stats adds the rest. */
export type CallStats = Pick<GrpcStats, 'calls' | 'errors' | 'streams_open' | 'streams_total' | 'streams_slow'>;

/**
 * How long RestartModule waits for the host to stop and start the module again (the same bound
 * as the REST route): longer than other requests, since a start may take the module's
 * start_timeout_ms (15 s by default) after a stop of up to its stop_timeout_ms.
 */
const RESTART_TIMEOUT_MS = 60_000;

/**
 * A handler's answer with work to do once it is handed to the caller (restarting this very
 * module: the stop waits for running calls, so it must not begin before the answer).
 */
class ThenRun {
  constructor(
    readonly value: unknown,
    readonly after: () => void,
  ) {}
}

/** Metadata of an answer an idempotency key replayed (REST: the Idempotent-Replayed header). */
const REPLAYED_MD = 'idempotent-replayed';

function replayedMetadata(): Metadata {
  const md = new Metadata();
  md.set(REPLAYED_MD, 'true');
  return md;
}

/** Time left before the call's deadline, in ms (Infinity without one). */
function remaining(call: { getDeadline(): Date | number }): number {
  const d = call.getDeadline();
  const at = d instanceof Date ? d.getTime() : d;
  return Number.isFinite(at) ? at - Date.now() : Number.POSITIVE_INFINITY;
}

/**
 * A sync wait bound by a deadline answers a little before it, so the DEADLINE_EXCEEDED with the
 * command id in its trailers reaches the caller before the caller's own timer fires.
 */
function deadlineMargin(left: number): number {
  return Math.min(1000, Math.max(50, Math.floor(left * 0.1)));
}

/** An open WatchEvents stream with who opened it (re-checked when the token table changes). */
interface OpenStream {
  stream: EventStream;
  principal: Principal;
  filter: FeedFilter;
}

/**
 * The ExchangeHub implementation: each RPC is a bus request to the module that owns the data.
 * Every method declares the action it needs (permissions.ts) where it is implemented, as the
 * first argument of `unary` / `declare`; `implementation()` refuses to build a service with a
 * proto method left undeclared.
 */
export class ExchangeHubService {
  /** Open WatchEvents streams, ended with UNAVAILABLE on stop. */
  readonly streams = new Map<EventStream, OpenStream>();
  private readonly cache = new WeakMap<FeedEvent, Buffer>();
  /** method → the action it needs, filled as the implementation is built. */
  private readonly declared = new Map<string, Access>();
  /** Calls refused as the caller's mistake, by hub error code (hub_grpc_refusals_total). */
  readonly refusals: Record<string, number> = {};

  /** Sync calls' "stop waiting" signals, all ended by one listener when the module stops. */
  private readonly calls: CallSignals;

  constructor(private readonly d: ServiceDeps) {
    this.calls = new CallSignals(d.ctx.signal);
  }

  /** A bus request bounded by request_timeout_ms (or `limitMs`) and the call's deadline. */
  private request<R>(
    topic: string,
    payload: unknown,
    call: { getDeadline(): Date | number },
    limitMs = this.d.ctx.config.request_timeout_ms,
  ): Promise<R> {
    const timeoutMs = Math.max(1, Math.min(limitMs, remaining(call)));
    return this.d.ctx.bus.request<R>(topic, payload, { timeoutMs });
  }

  /** Records a method's declared action and returns its handler. */
  private declare<H>(name: string, access: Access, handler: H): H {
    this.declared.set(name, access);
    return handler;
  }

  /**
   * Auth, the stopping check, error mapping and counting around one unary handler; with `audit`,
   * the operator action's record is written after the handler and before the answer (README
   * "Audit trail"): a done action is answered only once its record is committed.
   */
  private unary<Q, R>(
    name: string,
    access: Access,
    fn: (req: Q, call: ServerUnaryCall<Q, R>, who: Principal) => Promise<unknown>,
    audit?: AuditSpec<Q>,
  ) {
    return this.declare(name, access, (call: ServerUnaryCall<Q, R>, callback: sendUnaryData<R>) => {
      this.d.stats.calls++;
      const run = async () => {
        const who = this.admit(call.metadata, name);
        if (!audit) return fn(call.request, call, who);
        const action = this.d.trail.action(audit, who, 'grpc', call.request);
        let out: unknown;
        try {
          out = await fn(call.request, call, who);
        } catch (err) {
          await action.failed(errorCode(err) ?? 'INTERNAL');
          throw err;
        }
        await action.answered(out instanceof ThenRun ? out.value : out, 'ok');
        return out;
      };
      run().then(
        (res) => {
          if (!(res instanceof ThenRun)) return callback(null, res as R);
          callback(null, res.value as R);
          res.after();
        },
        (err) => callback(this.fail(name, err)),
      );
    });
  }

  /**
   * The stopping check, the token gate (every ExchangeHub method needs the token; health and
   * reflection do not), then the method's declared action against the token's role. An
   * undeclared method is refused (fail closed; the start already refused to build one).
   */
  private admit(md: Metadata, method: string): Principal {
    if (this.d.stopping()) throw new HubError('HOST_ERR_STOPPING', 'the hub is stopping; try again elsewhere or later');
    const presented = bearerToken(md.get('authorization')[0]);
    const who = this.d.gate.admit(presented);
    if (!who) {
      throw new HubError(
        'AUTH_ERR_TOKEN',
        presented === null ? 'missing metadata "authorization: Bearer <token>"' : 'invalid bearer token',
      );
    }
    requireAction(who, this.declared.get(method) ?? 'admin', method);
    return who;
  }

  /** For a token limited to some projects: the command must be one of theirs (read first). */
  private async requireCommand(who: Principal, commandId: string, call: { getDeadline(): Date | number }) {
    if (who.projects === null) return;
    const cmd = await this.request<CommandDetail>(COMMAND.get, { command_id: commandId }, call);
    requireProject(who, cmd.project_id);
  }

  private fail(method: string, err: unknown, trailers?: Record<string, string>) {
    const se = toServiceError(err, trailers);
    const key = String(se.code);
    this.d.stats.errors[key] = (this.d.stats.errors[key] ?? 0) + 1;
    const code = errorCode(err);
    if (code && isClientMistake(err)) this.refusals[code] = (this.refusals[code] ?? 0) + 1;
    const log = this.d.ctx.log;
    if (errorCode(err) === 'AUTH_ERR_FORBIDDEN') {
      // a caller's mistake worth seeing: who (token_id, role; never the token) and what
      const ctx = (err as HubError).details as { token_id?: string; role?: string } | undefined;
      log.info(
        { method, code: 'AUTH_ERR_FORBIDDEN', token_id: ctx?.token_id, role: ctx?.role },
        (err as Error).message,
      );
    } else if (isClientMistake(err)) {
      // a caller's mistake is an answer: one info line with its code, never a stack or the request
      log.info({ method, code, grpc_status: se.code }, 'gRPC call refused');
    } else if (isExpected(err)) log.debug({ method, code: se.code, err: (err as Error).message }, 'gRPC call refused');
    else log.error({ method, err }, 'gRPC call failed');
    return se;
  }

  /**
   * The service's handlers, each with its declared action. Throws AUTH_ERR_UNDECLARED (the module
   * does not start) when a method of the proto has no declared handler.
   */
  implementation(methods: Iterable<string>): UntypedServiceImplementation {
    const impl = this.handlers();
    assertDeclared('grpc (ExchangeHub)', methods, (m) => (m in impl ? this.declared.get(m) : undefined));
    return impl;
  }

  private handlers(): UntypedServiceImplementation {
    return {
      SendCommand: this.unary<SendCommandMsg, CommandView>(
        'SendCommand',
        'operate',
        async (m, call, who) => {
          const req = toSendRequest(m);
          requireProject(who, req.project_id);
          const { idempotent_replayed, ...view } = await this.request<SentCommand>(COMMAND.send, req, call);
          if (idempotent_replayed) call.sendMetadata(replayedMetadata());
          return view;
        },
        audited('command.sent', ['command_id', 'project_id']),
      ),
      SendSyncCommand: this.declare(
        'SendSyncCommand',
        'operate',
        (call: ServerUnaryCall<SendSyncCommandMsg, unknown>, callback: sendUnaryData<unknown>) =>
          this.sendSync(call, callback),
      ),
      GetCommand: this.unary<{ command_id: string }, unknown>('GetCommand', 'read', async (m, call, who) => {
        const cmd = await this.request<CommandDetail>(
          COMMAND.get,
          { command_id: checkCommandId('command_id', m.command_id) },
          call,
        );
        requireProject(who, cmd.project_id);
        return commandDetail(cmd);
      }),
      ListCommands: this.unary<ListCommandsMsg, unknown>('ListCommands', 'read', (m, call, who) => {
        const req = toListCommands(m);
        if (req.project_id !== undefined) requireProject(who, req.project_id);
        return this.request(COMMAND.list, { ...req, ...listScope(who) }, call);
      }),
      CancelCommand: this.unary<{ command_id: string }, unknown>(
        'CancelCommand',
        'operate',
        async (m, call, who) => {
          const id = checkCommandId('command_id', m.command_id);
          await this.requireCommand(who, id, call);
          return this.request(COMMAND.cancel, { command_id: id }, call);
        },
        audited('command.cancelled', ['command_id', 'project_id']),
      ),
      GetProjectStatus: this.unary<{ project_id: string }, unknown>(
        'GetProjectStatus',
        'read',
        async (m, call, who) => {
          const id = checkProjectId('project_id', m.project_id);
          requireProject(who, id);
          return projectView(await this.request<ProjectView>(STATUS.get, { project_id: id }, call));
        },
      ),
      ListOnlineProjects: this.unary<unknown, unknown>('ListOnlineProjects', 'read', async (_m, call, who) => {
        const all = await this.request<{ items: ProjectView[]; total?: number }>(STATUS.online, {}, call);
        const items = all.items.filter((p) => seesProject(who, p.project_id));
        return projectList(items.length === all.items.length ? all : { items });
      }),
      CreateProject: this.unary<CreateProjectMsg, unknown>(
        'CreateProject',
        'admin',
        (m, call, who) => {
          const req = toCreateProject(m);
          requireNewProject(who, req.project_id);
          return this.request<CreatedProject>(STATUS.create, req, call);
        },
        audited('project.created', ['project_id']),
      ),
      ListProjects: this.unary<ListProjectsMsg, unknown>('ListProjects', 'read', async (m, call, who) =>
        projectList(
          await this.request<{ items: ProjectView[]; total: number }>(
            STATUS.list,
            { ...toListProjects(m), ...listScope(who) },
            call,
          ),
        ),
      ),
      WatchEvents: this.declare('WatchEvents', 'read', (call: ServerWritableStream<WatchEventsMsg, unknown>) =>
        this.watch(call),
      ),
      DisableProject: this.unary<{ project_id: string }, unknown>(
        'DisableProject',
        'admin',
        async (m, call, who) => {
          const id = checkProjectId('project_id', m.project_id);
          requireProject(who, id);
          return projectView(await this.request<ProjectView>(STATUS.disable, { project_id: id }, call));
        },
        audited('project.disabled', ['project_id']),
      ),
      EnableProject: this.unary<{ project_id: string }, unknown>(
        'EnableProject',
        'admin',
        async (m, call, who) => {
          const id = checkProjectId('project_id', m.project_id);
          requireProject(who, id);
          return projectView(await this.request<ProjectView>(STATUS.enable, { project_id: id }, call));
        },
        audited('project.enabled', ['project_id']),
      ),
      RotateProjectSecret: this.unary<RotateProjectSecretMsg, unknown>(
        'RotateProjectSecret',
        'admin',
        (m, call, who) => {
          const req = toRotate(m);
          requireProject(who, req.project_id);
          return this.request<CreatedProject>(STATUS.rotate, req, call);
        },
        audited('project.rotated', ['project_id']),
      ),
      ListDeadCommands: this.unary<PagingMsg, unknown>('ListDeadCommands', 'read', async (m, call, who) =>
        deadList(await this.request(COMMAND.deadList, { ...toPaging(m), ...listScope(who) }, call)),
      ),
      ReplayDeadCommand: this.unary<{ command_id: string }, unknown>(
        'ReplayDeadCommand',
        'operate',
        async (m, call, who) => {
          const id = checkCommandId('command_id', m.command_id);
          await this.requireCommand(who, id, call);
          return this.request<CommandView>(COMMAND.deadReplay, { command_id: id }, call);
        },
        audited('command.replayed', ['command_id', 'project_id']),
      ),
      ListDeadEvents: this.unary<ListDeadEventsMsg, unknown>('ListDeadEvents', 'admin', async (m, call, who) => {
        requireWholeHub(who, 'read the outbox of every domain');
        return deadEvents(
          await this.request<{ items: DeadEvent[]; total: number }>(OUTBOX_TOPICS.deadList, toDeadEventsQuery(m), call),
        );
      }),
      ReplayDeadEvent: this.unary<{ event_id: string; route?: string }, unknown>(
        'ReplayDeadEvent',
        'admin',
        (m, call, who) => {
          requireWholeHub(who, 'replay an outbox event');
          return this.request(
            OUTBOX_TOPICS.deadReplay,
            { event_id: checkCommandId('event_id', m.event_id), ...(m.route !== undefined ? { route: m.route } : {}) },
            call,
          );
        },
        audited('outbox.event_replayed', ['event_id', 'route']),
      ),
      ListModules: this.unary<unknown, unknown>('ListModules', 'read', async (_m, call) => ({
        items: await this.request<ModuleInfo[]>(HOST_TOPICS.listModules, {}, call),
      })),
      GetProjectHistory: this.unary<HistoryMsg, unknown>('GetProjectHistory', 'read', (m, call, who) => {
        const req = toHistoryRequest(m);
        requireProject(who, req.project_id);
        return this.request(STATUS_HISTORY.list, req, call);
      }),
      // who did what across the hub: token ids and every project's actions
      ListAudit: this.unary<ListAuditMsg, unknown>('ListAudit', 'admin', async (m, call, who) => {
        requireWholeHub(who, 'read the audit trail');
        return auditPage(await this.request<AuditPage>(AUDIT.list, toListAudit(m), call));
      }),
      // a job may reach any project (`all`, metadata): jobs are for tokens of the whole hub
      CreateJob: this.unary<CreateJobMsg, unknown>(
        'CreateJob',
        'operate',
        async (m, call, who) => {
          requireWholeHub(who, 'create a job');
          const { idempotent_replayed, ...view } = await this.request<CreatedJob>(JOBS.create, toCreateJob(m), call);
          if (idempotent_replayed) call.sendMetadata(replayedMetadata());
          return jobView(view);
        },
        audited('job.created', ['job_id']),
      ),
      GetJob: this.unary<{ job_id: string }, unknown>('GetJob', 'read', async (m, call, who) => {
        requireWholeHub(who, 'read a job');
        return jobView(await this.request<JobView>(JOBS.get, { job_id: checkCommandId('job_id', m.job_id) }, call));
      }),
      ListJobs: this.unary<{ status: string[]; limit?: number; offset?: number }, unknown>(
        'ListJobs',
        'read',
        async (m, call, who) => {
          requireWholeHub(who, 'list jobs');
          const page = await this.request<{ items: JobView[]; total: number; limit: number; offset: number }>(
            JOBS.list,
            toListJobs(m),
            call,
          );
          return { ...page, items: page.items.map(jobView) };
        },
      ),
      CancelJob: this.unary<{ job_id: string }, unknown>(
        'CancelJob',
        'operate',
        async (m, call, who) => {
          requireWholeHub(who, 'cancel a job');
          return jobView(
            await this.request<JobView>(JOBS.cancel, { job_id: checkCommandId('job_id', m.job_id) }, call),
          );
        },
        audited('job.cancelled', ['job_id']),
      ),
      RestartModule: this.unary<{ name: string }, unknown>(
        'RestartModule',
        'admin',
        (m, call, who) => {
          requireWholeHub(who, 'restart a module');
          return this.restartModule(checkModuleName('name', m.name), call);
        },
        { action: 'module.restarted', targets: (m) => ({ module: m.name }) },
      ),
    };
  }

  /**
   * Another module: the answer comes once it runs again. This module itself: the host's stop of
   * it waits for running calls (tryShutdown), this one included, so it answers first and asks for
   * the restart after (as the web module does for its own REST route).
   */
  private async restartModule(name: string, call: { getDeadline(): Date | number }): Promise<unknown> {
    if (name !== this.d.ctx.name) {
      return this.request<ModuleInfo>(HOST_TOPICS.restartModule, { name }, call, RESTART_TIMEOUT_MS);
    }
    const self = (await this.request<ModuleInfo[]>(HOST_TOPICS.listModules, {}, call)).find((i) => i.name === name);
    const bus = this.d.ctx.bus;
    const log = this.d.ctx.log;
    return new ThenRun({ ...self, name, state: 'restarting' }, () => {
      log.info({ module: name }, 'restarting this gRPC module on request, now that the call is answered');
      // nobody is left to tell: the host finishes the restart on its own and logs a failed start
      // (ListModules shows it as last_error)
      bus.request(HOST_TOPICS.restartModule, { name }, { timeoutMs: RESTART_TIMEOUT_MS }).catch(() => undefined);
    });
  }

  private sendSync(call: ServerUnaryCall<SendSyncCommandMsg, unknown>, callback: sendUnaryData<unknown>): void {
    this.d.stats.calls++;
    const cfg = this.d.ctx.config;
    // the wait ends early when the caller goes away or the module stops
    const abort = this.calls.open();
    const onCancel = () => abort.abort();
    call.once('cancelled', onCancel);
    const run = async () => {
      const who = this.admit(call.metadata, 'SendSyncCommand');
      const m = call.request;
      const req = toSendRequest(m);
      requireProject(who, req.project_id);
      // no timeout_ms here: exchange_hub.proto documents an unset wait_ms as the server's default_sync_wait_ms
      const asked = syncWait(cfg, { wait_ms: m.wait_ms });
      const left = remaining(call);
      const wait = Math.min(asked, left - deadlineMargin(left));
      if (wait <= 0) throw new HubError('CMD_ERR_TIMEOUT', 'the call deadline leaves no time to wait for a result');
      // the send is the audited action: done once accepted, its record written beside the wait
      const action = this.d.trail.action(
        audited<SendSyncCommandMsg>('command.sent', ['command_id', 'project_id']),
        who,
        'grpc',
        m,
      );
      let out: Awaited<ReturnType<CommandWaiter['sendAndWait']>>;
      try {
        out = await this.d.waiter.sendAndWait(req, wait, { signal: abort.signal, onSent: action.done });
      } catch (err) {
        await action.failed(errorCode(err) ?? 'INTERNAL');
        throw err;
      }
      // sendAndWait returned, so the command was accepted and `done` began the record
      await action.answered(out.command, 'ok');
      const replayed = out.replayed ? { [REPLAYED_MD]: 'true' } : {};
      if (out.done) {
        if (out.replayed) call.sendMetadata(replayedMetadata());
        return commandDetail(out.command);
      }
      if (this.d.ctx.signal.aborted) {
        const err = new HubError(
          'HOST_ERR_STOPPING',
          `the gRPC server is stopping; command ${out.command_id} goes on (follow it with GetCommand)`,
          { command_id: out.command_id },
        );
        throw Object.assign(err, { trailers: { 'command-id': out.command_id, ...replayed } });
      }
      const state = out.command?.status ?? 'unknown';
      const err = new HubError(
        'CMD_ERR_TIMEOUT',
        `no result within ${wait} ms; command ${out.command_id} is ${state} (follow it with GetCommand or WatchEvents)`,
        { command_id: out.command_id, status: state },
      );
      throw Object.assign(err, { trailers: { 'command-id': out.command_id, 'command-status': state, ...replayed } });
    };
    run()
      .then(
        (res) => callback(null, res),
        (err) => callback(this.fail('SendSyncCommand', err, (err as { trailers?: Record<string, string> }).trailers)),
      )
      .finally(() => {
        call.off('cancelled', onCancel);
        this.calls.end(abort);
      });
  }

  private watch(call: ServerWritableStream<WatchEventsMsg, unknown>): void {
    this.d.stats.calls++;
    const m = call.request;
    let filter: FeedFilter;
    let who: Principal;
    try {
      who = this.admit(call.metadata, 'WatchEvents');
      filter = toFilter(m);
      // a token limited to some projects: never an event of another (`all` included), and naming
      // one of another is refused
      const refused = (filter.projects ?? []).filter((p) => !seesProject(who, p));
      if (refused.length > 0) requireProject(who, refused[0]);
      if (who.projects !== null) filter = { ...filter, allow: (p) => seesProject(who, p) };
      if (m.last_event_id !== undefined && m.resume_epoch === '') {
        throw invalidArg('resume_epoch', 'required with last_event_id');
      }
    } catch (err) {
      call.emit('error', this.fail('WatchEvents', err));
      return;
    }
    const resume = m.resume_epoch !== '' ? { epoch: m.resume_epoch, lastId: m.last_event_id ?? 0 } : null;
    const stats = this.d.stats;
    stats.streams_open++;
    stats.streams_total++;
    let stream: EventStream | undefined;
    stream = startWatch(call as ServerWritableStream<unknown, unknown>, this.d.feed, filter, resume, {
      max: this.d.ctx.config.stream_buffer_max,
      encode: this.d.encodeEvent,
      cache: this.cache,
      log: this.d.ctx.log,
      onClose: (why) => {
        stats.streams_open--;
        if (stream) this.streams.delete(stream);
        if (why === 'slow') {
          stats.streams_slow++;
          this.d.ctx.log.warn(
            { peer: call.getPeer(), max: this.d.ctx.config.stream_buffer_max },
            'WatchEvents stream did not keep up; ended with RESOURCE_EXHAUSTED',
          );
        }
      },
    });
    if (!stream.isClosed) this.streams.set(stream, { stream, principal: who, filter });
  }

  /**
   * After the gate's token table was swapped (config edit): a stream whose token is gone ends
   * with UNAUTHENTICATED (AUTH_ERR_TOKEN), one whose role no longer grants `read` with
   * PERMISSION_DENIED (AUTH_ERR_FORBIDDEN); a changed `projects` applies to the open stream.
   */
  recheckPrincipals(): void {
    for (const open of [...this.streams.values()]) {
      const now = this.d.gate.recheck(open.principal);
      if (now === open.principal) continue;
      if (now !== null && grants(now.role, 'read')) {
        open.principal = now;
        // the feed reads the filter on every event: changed in place
        if (now.projects === null) delete open.filter.allow;
        else open.filter.allow = (p) => seesProject(now, p);
        continue;
      }
      const err =
        now === null
          ? new HubError('AUTH_ERR_TOKEN', `token ${open.principal.token_id} is no longer accepted`)
          : forbiddenAction(now, 'read', 'WatchEvents');
      this.d.ctx.log.info(
        { method: 'WatchEvents', token_id: open.principal.token_id, code: err.code },
        `${err.message}; ending the stream`,
      );
      open.stream.end(err, 'revoked');
    }
  }

  /** Ends every open stream with UNAVAILABLE (the module is stopping). */
  endStreams(): void {
    for (const s of [...this.streams.keys()]) {
      s.end(new HubError('HOST_ERR_STOPPING', 'the gRPC server is stopping; reconnect and resume'), 'stop');
    }
  }
}
