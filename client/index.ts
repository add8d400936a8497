/**
 * `gmq-hub/client`: a typed client for the hub's REST API (README "REST API", `/openapi.json`),
 * for Node 20+ (global `fetch`) and browsers. Its types are the hub's own (the command and status
 * contracts, modules/<domain>/contract/topics.ts: the shapes its routes validate against), so a caller's code breaks at compile time, not at run
 * time, when the contract changes. Errors are `HubApiError` with the hub's stable `code`.
 *
 * @example
 *   import { HubClient, HubApiError } from 'gmq-hub/client';
 *   const hub = new HubClient({ url: 'http://127.0.0.1:8080', token: process.env.HUB_API_TOKEN });
 *   const { secret } = await hub.createProject({ project_id: 'plant-7' });
 *   const done = await hub.sendSync({ project_id: 'plant-7', command_type: 'echo', payload: { hi: 1 } });
 *   console.log(done.status, done.result?.output);
 *   try {
 *     await hub.send({ project_id: 'nope', command_type: 'echo' });
 *   } catch (err) {
 *     if (err instanceof HubApiError && err.code === 'CMD_ERR_UNKNOWN_PROJECT') console.log('no such project');
 *   }
 */
import type { DeadEvent, OutboxEnvelope } from '../core/services/outbox/contract.js';
import type { AuditEntry } from '../modules/audit/contract/topics.js';
import type {
  CommandDetail,
  CommandStatus,
  CommandView,
  SendCommandRequest,
} from '../modules/command/contract/topics.js';
import type { CreateJobRequest, JobStatus, JobView } from '../modules/jobs/contract/topics.js';
import type { PresenceChange } from '../modules/status/contract/history-topics.js';
import type { CreatedProject, ProjectView } from '../modules/status/contract/topics.js';

export type { AuditEntry, AuditPage } from '../modules/audit/contract/topics.js';
export type {
  CommandDetail,
  CommandResultView,
  CommandStatus,
  CommandTimings,
  CommandView,
  OfflinePolicy,
} from '../modules/command/contract/topics.js';
export type { CreateJobRequest, JobCounts, JobStatus, JobView } from '../modules/jobs/contract/topics.js';
export type { PresenceChange, PresenceHistoryPage } from '../modules/status/contract/history-topics.js';
export type { CreatedProject, PresenceState, ProjectView } from '../modules/status/contract/topics.js';
export type { DeadEvent, OutboxEnvelope };

export const API_BASE = '/api/exchange-hub';

export interface HubClientOptions {
  /** The hub's HTTP address, e.g. `http://127.0.0.1:8080` (no path). */
  url: string;
  /** The bearer token, when the hub has one (`HUB_API_TOKEN`). */
  token?: string;
  /** Per-request limit in ms (default 30 000); a sync call waits `wait_ms` + this. */
  timeoutMs?: number;
  /** Another fetch (tests, proxies); the global one by default. */
  fetch?: typeof fetch;
}

/**
 * `POST /command/send` and `/command/sync` bodies: the hub's own send request without the fields
 * the interface modules set themselves (the id a waiter chooses, the sync flag, the key, which
 * travels as the `Idempotency-Key` header: `SendOptions`).
 */
export type SendRequest = Omit<SendCommandRequest, 'command_id' | 'is_sync' | 'idempotency_key'>;

export interface SyncRequest extends SendRequest {
  /** how long the hub waits for the result before answering 504 (its default when left out) */
  wait_ms?: number;
}

export interface SendOptions {
  /** `Idempotency-Key`: a retry with the same key and body gets the first call's command. */
  idempotencyKey?: string;
  signal?: AbortSignal;
}

export interface Sent<T> {
  command: T;
  /** true when the idempotency key named a command made by an earlier call */
  replayed: boolean;
}

export interface ListCommandsFilter {
  project_id?: string;
  /** one status or several */
  status?: CommandStatus | CommandStatus[];
  command_type?: string;
  /** only the commands of this job */
  job_id?: string;
  /** created at or after: a Date, an ISO time or ms since the epoch */
  since?: Date | string | number;
  /** created before */
  until?: Date | string | number;
  /** ≤ 500 */
  limit?: number;
  offset?: number;
}

export interface Page<T> {
  items: T[];
  total: number;
  limit?: number;
  offset?: number;
}

export interface ModuleInfo {
  name: string;
  type: 'inner' | 'worker' | 'exe';
  provider: string;
  state: 'disabled' | 'stopped' | 'starting' | 'running' | 'stopping' | 'failed';
  started_at: string | null;
  restarts: number;
  failures: number;
  last_error: string | null;
  mailbox: { queued: number; handled: number; dropped: number; [k: string]: unknown } | null;
  [k: string]: unknown;
}

/** What a dead event's replay put back: the routes it is pending on again. */
export interface ReplayedEvent {
  event_id: string;
  routes: string[];
}

export interface Readiness {
  ready: boolean;
  checks: Record<string, { ok: boolean; reason?: string }>;
}

/**
 * The hub answered with an error (`{ error: { code, message, field? } }`), or something that is
 * not the hub answered. `code` is the hub's stable code (`CMD_ERR_PROJECT_OFFLINE` …), `HTTP_<status>`
 * for an answer not in the hub's shape, `CLIENT_ERR_UNREACHABLE` when nothing answered.
 */
export class HubApiError extends Error {
  constructor(
    readonly code: string,
    message: string,
    /** the HTTP status, 0 when nothing answered */
    readonly status: number,
    /** the whole answer: a sync timeout's (504) carries `command_id` and `command` */
    readonly body: unknown,
    readonly field?: string,
  ) {
    super(message);
    this.name = 'HubApiError';
  }
}

const enc = encodeURIComponent;

function instant(v: Date | string | number): string {
  return v instanceof Date ? v.toISOString() : String(v);
}

export class HubClient {
  private readonly base: string;
  private readonly token?: string;
  private readonly timeoutMs: number;
  private readonly fetchFn: typeof fetch;

  constructor(opts: HubClientOptions) {
    const u = new URL(opts.url);
    if (u.protocol !== 'http:' && u.protocol !== 'https:') throw new TypeError(`url must be http(s): ${opts.url}`);
    this.base = u.href.replace(/\/+$/, '');
    this.token = opts.token || undefined;
    this.timeoutMs = opts.timeoutMs ?? 30_000;
    this.fetchFn = opts.fetch ?? fetch;
  }

  // ─── commands ─────────────────────────────────────────────────────────────────────────────

  /** Sends a command; answers at once with it (`pending`), the outbox delivers it. */
  async send(req: SendRequest, opts: SendOptions = {}): Promise<CommandView> {
    return (await this.sendWithReplay(req, opts)).command;
  }

  /** `send`, telling whether an idempotency key answered with an earlier call's command. */
  async sendWithReplay(req: SendRequest, opts: SendOptions = {}): Promise<Sent<CommandView>> {
    const r = await this.call<CommandView>('POST', '/command/send', { body: req, ...idem(opts) });
    return { command: r.body, replayed: r.headers.get('idempotent-replayed') === 'true' };
  }

  /**
   * Sends a command and waits for its result. Resolves with the command once it is final
   * (completed, failed, timeout: check `status`); a wait that runs out rejects with
   * `HubApiError` `CMD_ERR_TIMEOUT` (status 504) whose `body.command_id` names the command.
   */
  async sendSync(req: SyncRequest, opts: SendOptions = {}): Promise<CommandDetail> {
    const wait = req.wait_ms ?? Math.max(30_000, req.timeout_ms ?? 0);
    const r = await this.call<CommandDetail>('POST', '/command/sync', {
      body: req,
      ...idem(opts),
      timeoutMs: wait + this.timeoutMs,
    });
    return r.body;
  }

  getCommand(commandId: string): Promise<CommandDetail> {
    return this.get(`/command/${enc(commandId)}`);
  }

  /** Cancels a command not delivered yet (409 `CMD_ERR_NOT_CANCELLABLE` once delivered). */
  async cancelCommand(commandId: string): Promise<CommandView> {
    return (await this.call<CommandView>('POST', `/command/${enc(commandId)}/cancel`, { body: {} })).body;
  }

  /** Newest first, one page. */
  listCommands(filter: ListCommandsFilter = {}): Promise<Page<CommandView>> {
    const q = new URLSearchParams();
    if (filter.project_id) q.set('project_id', filter.project_id);
    if (filter.status) q.set('status', ([] as string[]).concat(filter.status).join(','));
    if (filter.command_type) q.set('command_type', filter.command_type);
    if (filter.job_id) q.set('job_id', filter.job_id);
    if (filter.since !== undefined) q.set('since', instant(filter.since));
    if (filter.until !== undefined) q.set('until', instant(filter.until));
    if (filter.limit !== undefined) q.set('limit', String(filter.limit));
    if (filter.offset !== undefined) q.set('offset', String(filter.offset));
    const qs = q.toString();
    return this.get(`/commands${qs ? `?${qs}` : ''}`);
  }

  listDeadCommands(page: { limit?: number; offset?: number } = {}): Promise<Page<CommandView>> {
    return this.get(`/commands/dead${paging(page)}`);
  }

  async replayDeadCommand(commandId: string): Promise<CommandView> {
    return (await this.call<CommandView>('POST', `/commands/dead/${enc(commandId)}/replay`, { body: {} })).body;
  }

  // ─── jobs ─────────────────────────────────────────────────────────────────────────────────

  /** One command to many projects, rolled out within `rollout` (README "Jobs: one command to many projects"). */
  async createJob(
    req: Omit<CreateJobRequest, 'idempotency_key'>,
    opts: SendOptions = {},
  ): Promise<{ job: JobView; replayed: boolean }> {
    const r = await this.call<JobView>('POST', '/jobs', { body: req, ...idem(opts) });
    return { job: r.body, replayed: r.headers.get('idempotent-replayed') === 'true' };
  }

  getJob(jobId: string): Promise<JobView> {
    return this.get(`/jobs/${enc(jobId)}`);
  }

  /** Newest first, one page; `status` one or several. */
  listJobs(filter: { status?: JobStatus | JobStatus[]; limit?: number; offset?: number } = {}): Promise<Page<JobView>> {
    const q = new URLSearchParams();
    if (filter.status) q.set('status', ([] as string[]).concat(filter.status).join(','));
    if (filter.limit !== undefined) q.set('limit', String(filter.limit));
    if (filter.offset !== undefined) q.set('offset', String(filter.offset));
    const qs = q.toString();
    return this.get(`/jobs${qs ? `?${qs}` : ''}`);
  }

  /** Cancels a scheduled or running job: its targets not sent yet are never sent. */
  async cancelJob(jobId: string): Promise<JobView> {
    return (await this.call<JobView>('POST', `/jobs/${enc(jobId)}/cancel`, { body: {} })).body;
  }

  // ─── projects ─────────────────────────────────────────────────────────────────────────────

  /** Provisions a project; the answer holds its secret, shown this once. */
  async createProject(req: { project_id?: string; name?: string; metadata?: Record<string, unknown> } = {}) {
    return (await this.call<CreatedProject>('POST', '/projects', { body: req })).body;
  }

  getProjectStatus(projectId: string): Promise<ProjectView> {
    return this.get(`/project/${enc(projectId)}/status`);
  }

  listOnlineProjects(): Promise<{ items: ProjectView[] }> {
    return this.get('/projects/online');
  }

  listProjects(opts: { includeDisabled?: boolean; limit?: number; offset?: number } = {}): Promise<Page<ProjectView>> {
    const q = new URLSearchParams();
    if (opts.includeDisabled) q.set('include_disabled', 'true');
    if (opts.limit !== undefined) q.set('limit', String(opts.limit));
    if (opts.offset !== undefined) q.set('offset', String(opts.offset));
    const qs = q.toString();
    return this.get(`/projects${qs ? `?${qs}` : ''}`);
  }

  async disableProject(projectId: string): Promise<ProjectView> {
    return (await this.call<ProjectView>('POST', `/projects/${enc(projectId)}/disable`, { body: {} })).body;
  }

  async enableProject(projectId: string): Promise<ProjectView> {
    return (await this.call<ProjectView>('POST', `/projects/${enc(projectId)}/enable`, { body: {} })).body;
  }

  /** A new secret; the old one keeps working `overlap_s` seconds (the hub's default when left out). */
  async rotateProjectSecret(projectId: string, opts: { overlap_s?: number } = {}): Promise<CreatedProject> {
    return (await this.call<CreatedProject>('POST', `/projects/${enc(projectId)}/rotate`, { body: opts })).body;
  }

  /** A project's presence changes with their reasons, newest first. */
  projectHistory(
    projectId: string,
    filter: { since?: Date | string | number; until?: Date | string | number; limit?: number; offset?: number } = {},
  ): Promise<Page<PresenceChange>> {
    return this.get(`/project/${enc(projectId)}/history${timeFilter(filter)}`);
  }

  // ─── the audit trail ──────────────────────────────────────────────────────────────────────

  /** Operator actions, newest first (README "Audit trail"). */
  listAudit(
    filter: {
      action?: string;
      project_id?: string;
      token_id?: string;
      since?: Date | string | number;
      until?: Date | string | number;
      limit?: number;
      offset?: number;
    } = {},
  ): Promise<Page<AuditEntry>> {
    const { action, project_id, token_id, ...rest } = filter;
    const q = new URLSearchParams(timeFilter(rest).slice(1));
    if (action) q.set('action', action);
    if (project_id) q.set('project_id', project_id);
    if (token_id) q.set('token_id', token_id);
    const qs = q.toString();
    return this.get(`/audit${qs ? `?${qs}` : ''}`);
  }

  // ─── the outbox ───────────────────────────────────────────────────────────────────────────

  /** Domain events every attempt of a route failed for, oldest first (all routes, or `route`). */
  listDeadOutboxEvents(filter: { route?: string; limit?: number; offset?: number } = {}): Promise<Page<DeadEvent>> {
    const q = new URLSearchParams(paging(filter).slice(1));
    if (filter.route !== undefined) q.set('route', filter.route);
    const qs = q.toString();
    return this.get(`/outbox/dead${qs ? `?${qs}` : ''}`);
  }

  /**
   * Puts a dead event back to pending with fresh attempts, on `route` or on every route it died
   * on; consumers dedupe on its `event_id`. 404 `OUTBOX_ERR_NOT_FOUND` when there is none.
   */
  async replayDeadOutboxEvent(eventId: string, opts: { route?: string } = {}): Promise<ReplayedEvent> {
    return (await this.call<ReplayedEvent>('POST', `/outbox/dead/${enc(eventId)}/replay`, { body: opts })).body;
  }

  // ─── the host ─────────────────────────────────────────────────────────────────────────────

  listModules(): Promise<{ items: ModuleInfo[] }> {
    return this.get('/modules');
  }

  async restartModule(name: string): Promise<unknown> {
    return (await this.call('POST', `/modules/${enc(name)}/restart`, { body: {} })).body;
  }

  /** `/healthz`: the process answers (rejects with `CLIENT_ERR_UNREACHABLE` when it does not). */
  health(): Promise<{ ok: true }> {
    return this.get<{ ok: true }>('/healthz', { root: true });
  }

  /** `/readyz`: resolves with the checks whether ready (200) or not (503). */
  async ready(): Promise<Readiness> {
    try {
      return (await this.call<Readiness>('GET', '/readyz', { root: true })).body;
    } catch (err) {
      if (err instanceof HubApiError && err.status === 503 && isReadiness(err.body)) return err.body;
      throw err;
    }
  }

  // ─── transport ────────────────────────────────────────────────────────────────────────────

  private async get<T>(path: string, o: { root?: boolean } = {}): Promise<T> {
    return (await this.call<T>('GET', path, o)).body;
  }

  private async call<T>(
    method: string,
    path: string,
    o: {
      body?: unknown;
      headers?: Record<string, string>;
      timeoutMs?: number;
      signal?: AbortSignal;
      root?: boolean;
    } = {},
  ): Promise<{ status: number; body: T; headers: Headers }> {
    const url = `${this.base}${o.root ? '' : API_BASE}${path}`;
    const headers: Record<string, string> = { accept: 'application/json', ...o.headers };
    if (this.token) headers.authorization = `Bearer ${this.token}`;
    if (o.body !== undefined) headers['content-type'] = 'application/json';
    const timeout = AbortSignal.timeout(o.timeoutMs ?? this.timeoutMs);
    let res: Response;
    let text: string;
    try {
      res = await this.fetchFn(url, {
        method,
        headers,
        body: o.body === undefined ? undefined : JSON.stringify(o.body),
        signal: o.signal ? AbortSignal.any([o.signal, timeout]) : timeout,
      });
      text = await res.text();
    } catch (err) {
      const e = err as { name?: string; message?: string; cause?: { message?: string; code?: string } };
      const why = e.name === 'TimeoutError' ? 'no answer in time' : (e.cause?.message ?? e.cause?.code ?? e.message);
      throw new HubApiError('CLIENT_ERR_UNREACHABLE', `cannot reach the hub at ${this.base}: ${why}`, 0, undefined);
    }
    let body: unknown;
    try {
      body = text === '' ? undefined : JSON.parse(text);
    } catch {
      body = text;
    }
    if (res.ok) return { status: res.status, body: body as T, headers: res.headers };
    const error = (body as { error?: { code?: unknown; message?: unknown; field?: unknown } } | undefined)?.error;
    if (error && typeof error.code === 'string') {
      throw new HubApiError(
        error.code,
        String(error.message ?? error.code),
        res.status,
        body,
        typeof error.field === 'string' ? error.field : undefined,
      );
    }
    if (isReadiness(body)) throw new HubApiError(`HTTP_${res.status}`, 'not ready', res.status, body);
    throw new HubApiError(
      `HTTP_${res.status}`,
      `HTTP ${res.status} from ${url} (is this a gmq-hub?)`,
      res.status,
      body,
    );
  }
}

function idem(opts: SendOptions): { headers?: Record<string, string>; signal?: AbortSignal } {
  return {
    ...(opts.idempotencyKey !== undefined ? { headers: { 'idempotency-key': opts.idempotencyKey } } : {}),
    ...(opts.signal ? { signal: opts.signal } : {}),
  };
}

function paging(p: { limit?: number; offset?: number }): string {
  const q = new URLSearchParams();
  if (p.limit !== undefined) q.set('limit', String(p.limit));
  if (p.offset !== undefined) q.set('offset', String(p.offset));
  const s = q.toString();
  return s ? `?${s}` : '';
}

/** `since`/`until` (a Date, an ISO time or ms) and paging as a query string. */
function timeFilter(f: {
  since?: Date | string | number;
  until?: Date | string | number;
  limit?: number;
  offset?: number;
}): string {
  const q = new URLSearchParams(paging(f).slice(1));
  if (f.since !== undefined) q.set('since', instant(f.since));
  if (f.until !== undefined) q.set('until', instant(f.until));
  const s = q.toString();
  return s ? `?${s}` : '';
}

function isReadiness(v: unknown): v is Readiness {
  return typeof v === 'object' && v !== null && typeof (v as Readiness).ready === 'boolean';
}
