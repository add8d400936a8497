/**
 * The REST API as data: each route's method, path, schemas, documented answers and handler.
 * server.ts registers these with fastify and validates with their schemas; openapi.ts builds
 * /openapi.json from the same table. Handlers only ask the bus: the web module owns no data.
 */
import { z } from 'zod';
import type { ModuleBus } from '../../core/bus.js';
import type { ErrorCode } from '../../core/errors.js';
import { HOST_TOPICS } from '../../core/host-topics.js';
import { OUTBOX_TOPICS } from '../../core/services/outbox/contract.js';
import { AUDIT } from '../audit/contract/topics.js';
import { type AuditSpec, pickIds } from '../audit/contract/trail.js';
import { COMMAND, type CommandDetail, type SendCommandRequest, type SentCommand } from '../command/contract/topics.js';
import { type CreatedJob, type CreateJobRequest, JOBS } from '../jobs/contract/topics.js';
import type { CommandWaiter } from '../shared/interface-kit/command-waiter.js';
import {
  type Access,
  listScope,
  requireNewProject,
  requireProject,
  requireWholeHub,
  seesProject,
} from '../shared/interface-kit/permissions.js';
import { syncWait } from '../shared/interface-kit/sync-wait.js';
import type { Principal } from '../shared/interface-kit/token-gate.js';
import { STATUS_HISTORY } from '../status/contract/history-topics.js';
import { type ProjectView, STATUS } from '../status/contract/topics.js';
import type { WebConfig } from './config.js';
import { auditEntrySchema, auditQuery, historyQuery, presenceChangeSchema } from './history-schemas.js';
import {
  commandDetailSchema,
  commandIdParams,
  commandViewSchema,
  createdProjectSchema,
  createJobBody,
  createProjectBody,
  deadCommandSchema,
  deadEventSchema,
  emptyBody,
  eventIdParams,
  IDEMPOTENT_REPLAYED,
  idempotencyHeaders,
  itemsOf,
  jobIdParams,
  jobViewSchema,
  listCommandsQuery,
  listJobsQuery,
  listProjectsQuery,
  moduleInfoSchema,
  moduleNameParams,
  outboxDeadQuery,
  outboxReplayBody,
  pageOf,
  pagingQuery,
  projectIdParams,
  projectViewSchema,
  replayedEventSchema,
  rotateBody,
  sendBodySchema,
  syncBodySchema,
  syncTimeoutSchema,
} from './schemas.js';

export const API = '/api/exchange-hub';

/** A handler's answer when it is not a plain 200/`status` JSON body. */
export class Answer {
  constructor(
    readonly status: number,
    readonly body: unknown,
    /** Runs once the response is written (e.g. restarting this very module). */
    readonly after?: () => void,
    /** Response headers beside the usual ones (e.g. Idempotent-Replayed). */
    readonly headers?: Record<string, string>,
  ) {}
}

export interface RouteInput<P, Q, B, H = unknown> {
  params: P;
  query: Q;
  body: B;
  /** The request headers the route's `headers` schema names, validated (lower-case names). */
  headers: H;
  /** Aborted when the client goes away or the module is stopping. */
  signal: AbortSignal;
  /** Who is calling (the gate admitted them and their role grants the route's `access`). */
  principal: Principal;
  /**
   * For an audited route whose action is done before its answer is known (a sync send, once its
   * command is accepted): the record is written from this call on, with outcome `ok` and the ids
   * of `answer`, beside the rest of the handler; the answer still waits for its commit (server.ts).
   */
  done(answer: unknown): void;
}

type Schema = z.ZodType | undefined;
type Out<S extends Schema> = S extends z.ZodType ? z.output<S> : undefined;

export interface RouteSpec<
  P extends Schema = Schema,
  Q extends Schema = Schema,
  B extends Schema = Schema,
  H extends Schema = Schema,
> {
  method: 'GET' | 'POST';
  /** fastify pattern (`:name` params), under API unless it starts with another root */
  url: string;
  summary: string;
  tag: 'commands' | 'projects' | 'jobs' | 'outbox' | 'system';
  /** The OpenAPI operationId when the one derived from the path would repeat another route's. */
  operationId?: string;
  /**
   * Who may call it (permissions.ts): `public` without the token (health probes), else a token
   * whose role grants the action (`read`, `operate`, `admin`). Mandatory: the server refuses to
   * start with a route that declares none. The server's one auth gate reads it off the route the
   * router matched (auth.ts `admitRequest`, server.ts onRequest).
   */
  access: Access;
  /** Code of a validation failure on this route (400). */
  invalid: ErrorCode;
  params?: P;
  query?: Q;
  body?: B;
  /** Request headers the route reads (lower-case names; others pass unchecked). */
  headers?: H;
  /** Documented response headers of the success answer: name → description. */
  responseHeaders?: Record<string, string>;
  /** The body may be left out entirely (POSTs that take none or only optional fields). */
  bodyOptional?: boolean;
  /** Success status (default 200) and its documented shape. */
  status?: number;
  response: z.ZodType | null;
  /** Other documented answers: status → [description, schema?]. Error bodies default to the Error schema. */
  answers?: Record<number, string | [string, z.ZodType]>;
  /**
   * An operator action: audited after the handler and before the answer (README "Audit trail").
   * Adding an audited route: this one line (and the action's name in the audit contract).
   */
  audit?: AuditSpec<RouteInput<Out<P>, Out<Q>, Out<B>, Out<H>>>;
  handler(input: RouteInput<Out<P>, Out<Q>, Out<B>, Out<H>>): Promise<unknown>;
}

/** The body of a handler's answer (an Answer's, or the value itself). */
const bodyOf = (out: unknown): unknown => (out instanceof Answer ? out.body : out);

/** An audit spec whose targets are these keys, looked up in the body, the path parameters and the answer. */
function audit<I extends { params?: unknown; body?: unknown }>(
  action: AuditSpec['action'],
  keys: string[],
): AuditSpec<I> {
  return {
    action,
    targets: (input, out) => {
      const answer = bodyOf(out);
      // the answer last: it holds the ids as stored (a command id lower-cased)
      return {
        ...pickIds(input.body, keys),
        ...pickIds(input.params, keys),
        ...pickIds((answer as { command?: unknown } | null)?.command, keys),
        ...pickIds(answer, keys),
      };
    },
  };
}

// biome-ignore lint/suspicious/noExplicitAny: a table of routes of different schemas
export type AnyRoute = RouteSpec<any, any, any, any>;

const route = <P extends Schema, Q extends Schema, B extends Schema, H extends Schema>(
  r: RouteSpec<P, Q, B, H>,
): AnyRoute => r as AnyRoute;

/** The bus request of a send, with the caller's Idempotency-Key when it gave one. */
const withKey = (req: SendCommandRequest, key: string | undefined): SendCommandRequest =>
  key === undefined ? req : { ...req, idempotency_key: key };
/** Response headers of an answer an idempotency key replayed. */
const REPLAYED = { [IDEMPOTENT_REPLAYED]: 'true' };

export interface RouteDeps {
  name: string;
  cfg: WebConfig;
  bus: ModuleBus;
  waiter: CommandWaiter;
  ready(): Promise<{ ready: boolean; checks: Record<string, { ok: boolean; reason?: string }> }>;
}

export function buildRoutes(d: RouteDeps): AnyRoute[] {
  const ask = <R = unknown>(topic: string, payload: unknown) =>
    d.bus.request<R>(topic, payload, { timeoutMs: d.cfg.request_timeout_ms });
  const send = sendBodySchema(d.cfg);
  const sync = syncBodySchema(d.cfg);
  const C = 'CMD_ERR_INVALID' as const;
  const S = 'STATUS_ERR_INVALID' as const;
  const W = 'WEB_ERR_INVALID' as const;
  const O = 'OUTBOX_ERR_INVALID' as const;
  const J = 'JOB_ERR_INVALID' as const;
  /**
   * A token limited to some projects acts on a command only when it is one of theirs: the
   * command is read first (its project is not in the request). Unlimited tokens skip the read.
   */
  const requireCommand = async (who: Principal, commandId: string) => {
    if (who.projects === null) return;
    const cmd = await ask<CommandDetail>(COMMAND.get, { command_id: commandId });
    requireProject(who, cmd.project_id);
  };

  return [
    route({
      method: 'POST',
      url: `${API}/command/send`,
      summary: 'Send a command; answers at once with its id (the outbox delivers it)',
      tag: 'commands',
      access: 'operate',
      invalid: C,
      body: send,
      headers: idempotencyHeaders,
      status: 202,
      response: commandViewSchema,
      responseHeaders: {
        [IDEMPOTENT_REPLAYED]:
          '`true` when the Idempotency-Key named a command sent before: this is that command, as it is now (same status 202)',
      },
      answers: {
        404: 'Unknown project',
        409:
          'Project not online (offline_policy fail) or disabled; or the Idempotency-Key was used before with a ' +
          'different body (CMD_ERR_IDEMPOTENCY_MISMATCH)',
      },
      audit: audit('command.sent', ['command_id', 'project_id']),
      handler: async ({ body, headers, principal }) => {
        requireProject(principal, body.project_id);
        const { idempotent_replayed, ...view } = await ask<SentCommand>(
          COMMAND.send,
          withKey(body satisfies SendCommandRequest, headers['idempotency-key']),
        );
        return idempotent_replayed ? new Answer(202, view, undefined, REPLAYED) : view;
      },
    }),
    route({
      method: 'POST',
      url: `${API}/command/sync`,
      summary: 'Send a command and wait for its result',
      tag: 'commands',
      access: 'operate',
      invalid: C,
      body: sync,
      headers: idempotencyHeaders,
      response: commandDetailSchema,
      responseHeaders: {
        [IDEMPOTENT_REPLAYED]:
          '`true` when the Idempotency-Key named a command sent before: the answer is that command’s result (also on 504)',
      },
      answers: {
        404: 'Unknown project',
        409:
          'Project not online (offline_policy fail); or the Idempotency-Key was used before with a different body ' +
          '(CMD_ERR_IDEMPOTENCY_MISMATCH)',
        503: ['The wait was cut short: the hub is stopping; the command goes on', syncTimeoutSchema],
        504: ['The wait ran out; the command goes on (follow it by command_id)', syncTimeoutSchema],
      },
      audit: audit('command.sent', ['command_id', 'project_id']),
      handler: async ({ body, headers, signal, principal, done }) => {
        requireProject(principal, body.project_id);
        const { wait_ms, ...req } = body;
        const wait = syncWait(d.cfg, { wait_ms, timeout_ms: req.timeout_ms });
        // the send is the audited action: its record is written while the result is waited for
        const out = await d.waiter.sendAndWait(withKey(req, headers['idempotency-key']), wait, {
          signal,
          onSent: done,
        });
        const replayed = out.replayed ? REPLAYED : undefined;
        if (out.done) return replayed ? new Answer(200, out.command, undefined, replayed) : out.command;
        const follow = `GET ${API}/command/${out.command_id}`;
        if (signal.aborted) {
          return new Answer(
            503,
            {
              error: { code: 'HOST_ERR_STOPPING', message: `the wait was cut short; the command goes on: ${follow}` },
              command_id: out.command_id,
              command: out.command,
            },
            undefined,
            replayed,
          );
        }
        return new Answer(
          504,
          {
            error: { code: 'CMD_ERR_TIMEOUT', message: `no result within ${wait} ms; the command goes on: ${follow}` },
            command_id: out.command_id,
            command: out.command satisfies CommandDetail | null,
          },
          undefined,
          replayed,
        );
      },
    }),
    route({
      method: 'GET',
      url: `${API}/command/:command_id`,
      summary: 'A command with its tracker, result and timings',
      tag: 'commands',
      invalid: C,
      access: 'read',
      params: commandIdParams,
      response: commandDetailSchema,
      answers: { 404: 'No such command' },
      handler: async ({ params, principal }) => {
        const cmd = await ask<CommandDetail>(COMMAND.get, { command_id: params.command_id });
        requireProject(principal, cmd.project_id);
        return cmd;
      },
    }),
    route({
      method: 'POST',
      url: `${API}/command/:command_id/cancel`,
      summary: 'Cancel a command that was not delivered yet',
      tag: 'commands',
      invalid: C,
      params: commandIdParams,
      body: emptyBody,
      bodyOptional: true,
      response: commandViewSchema,
      access: 'operate',
      answers: { 404: 'No such command', 409: 'Already delivered or final' },
      audit: audit('command.cancelled', ['command_id', 'project_id']),
      handler: async ({ params, principal }) => {
        await requireCommand(principal, params.command_id);
        return ask(COMMAND.cancel, { command_id: params.command_id });
      },
    }),
    route({
      method: 'GET',
      url: `${API}/commands`,
      summary: 'Commands, newest first, with filters',
      tag: 'commands',
      invalid: C,
      access: 'read',
      query: listCommandsQuery,
      response: pageOf(commandViewSchema),
      handler: ({ query, principal }) => {
        if (query.project_id !== undefined) requireProject(principal, query.project_id);
        return ask(COMMAND.list, {
          ...query,
          ...(query.status ? { status: query.status.split(',') } : {}),
          ...listScope(principal),
        });
      },
    }),
    route({
      method: 'GET',
      url: `${API}/commands/dead`,
      summary: 'Commands whose outbox row went dead (never acked after max attempts)',
      tag: 'commands',
      invalid: C,
      access: 'read',
      query: pagingQuery,
      response: pageOf(deadCommandSchema),
      handler: ({ query, principal }) => ask(COMMAND.deadList, { ...query, ...listScope(principal) }),
    }),
    route({
      method: 'POST',
      url: `${API}/commands/dead/:command_id/replay`,
      summary: 'Put a dead command back into the outbox',
      tag: 'commands',
      invalid: C,
      params: commandIdParams,
      body: emptyBody,
      bodyOptional: true,
      response: commandViewSchema,
      access: 'operate',
      answers: { 404: 'No such command' },
      audit: audit('command.replayed', ['command_id', 'project_id']),
      handler: async ({ params, principal }) => {
        await requireCommand(principal, params.command_id);
        return ask(COMMAND.deadReplay, { command_id: params.command_id });
      },
    }),
    route({
      method: 'POST',
      url: `${API}/jobs`,
      summary: 'Create a job: one command to many projects, rolled out within its limits',
      tag: 'jobs',
      invalid: J,
      body: createJobBody,
      headers: idempotencyHeaders,
      status: 201,
      response: jobViewSchema,
      responseHeaders: {
        [IDEMPOTENT_REPLAYED]:
          '`true` when the Idempotency-Key named a job created before: this is that job, as it is now',
      },
      answers: {
        404: 'A project named in targets.project_ids does not exist (JOB_ERR_UNKNOWN_PROJECT)',
        409:
          'The targets match no project now (JOB_ERR_NO_TARGETS); or the Idempotency-Key was used before with a ' +
          'different body (CMD_ERR_IDEMPOTENCY_MISMATCH)',
      },
      access: 'operate',
      audit: audit('job.created', ['job_id']),
      handler: async ({ body, headers, principal }) => {
        // a job may reach any project (`all`, metadata): jobs are for tokens of the whole hub
        requireWholeHub(principal, 'create a job');
        const key = headers['idempotency-key'];
        const req: CreateJobRequest = key === undefined ? body : { ...body, idempotency_key: key };
        const { idempotent_replayed, ...view } = await ask<CreatedJob>(JOBS.create, req);
        return new Answer(201, view, undefined, idempotent_replayed ? REPLAYED : undefined);
      },
    }),
    route({
      method: 'GET',
      url: `${API}/jobs`,
      summary: 'Jobs, newest first, with their counts',
      tag: 'jobs',
      invalid: J,
      query: listJobsQuery,
      response: pageOf(jobViewSchema),
      access: 'read',
      handler: ({ query, principal }) => {
        requireWholeHub(principal, 'list jobs');
        return ask(JOBS.list, { ...query, ...(query.status ? { status: query.status.split(',') } : {}) });
      },
    }),
    route({
      method: 'GET',
      url: `${API}/jobs/:job_id`,
      operationId: 'getJob',
      summary: 'A job with its status and counts',
      tag: 'jobs',
      invalid: J,
      params: jobIdParams,
      response: jobViewSchema,
      answers: { 404: 'No such job' },
      access: 'read',
      handler: ({ params, principal }) => {
        requireWholeHub(principal, 'read a job');
        return ask(JOBS.get, { job_id: params.job_id });
      },
    }),
    route({
      method: 'POST',
      url: `${API}/jobs/:job_id/cancel`,
      summary: 'Cancel a scheduled or running job: targets not sent yet are never sent',
      tag: 'jobs',
      invalid: J,
      params: jobIdParams,
      body: emptyBody,
      bodyOptional: true,
      response: jobViewSchema,
      answers: { 404: 'No such job', 409: 'The job has finished (JOB_ERR_NOT_CANCELLABLE)' },
      access: 'operate',
      audit: audit('job.cancelled', ['job_id']),
      handler: ({ params, principal }) => {
        requireWholeHub(principal, 'cancel a job');
        return ask(JOBS.cancel, { job_id: params.job_id });
      },
    }),
    route({
      method: 'GET',
      url: `${API}/project/:project_id/status`,
      summary: 'A project with its presence state',
      tag: 'projects',
      invalid: S,
      params: projectIdParams,
      response: projectViewSchema,
      access: 'read',
      answers: { 404: 'No such project' },
      handler: ({ params, principal }) => {
        requireProject(principal, params.project_id);
        return ask(STATUS.get, { project_id: params.project_id });
      },
    }),
    route({
      method: 'GET',
      url: `${API}/project/:project_id/history`,
      summary: 'A project’s presence changes with their reasons, newest first',
      tag: 'projects',
      invalid: S,
      params: projectIdParams,
      query: historyQuery,
      response: pageOf(presenceChangeSchema),
      answers: { 404: 'No such project' },
      access: 'read',
      handler: ({ params, query, principal }) => {
        requireProject(principal, params.project_id);
        return ask(STATUS_HISTORY.list, { project_id: params.project_id, ...query });
      },
    }),
    route({
      method: 'GET',
      url: `${API}/audit`,
      summary: 'The audit trail of operator actions, newest first, with filters',
      tag: 'system',
      invalid: 'AUDIT_ERR_INVALID',
      query: auditQuery,
      response: pageOf(auditEntrySchema),
      answers: { 503: 'No audit module configured (BUS_ERR_NO_RESPONDER)' },
      // who did what across the hub: token ids and every project's actions
      access: 'admin',
      handler: ({ query, principal }) => {
        requireWholeHub(principal, 'read the audit trail');
        return ask(AUDIT.list, query);
      },
    }),
    route({
      method: 'GET',
      url: `${API}/projects/online`,
      summary: 'Projects online now',
      tag: 'projects',
      invalid: S,
      access: 'read',
      response: itemsOf(projectViewSchema),
      handler: async ({ principal }) => {
        const all = await ask<{ items: ProjectView[] }>(STATUS.online, {});
        if (principal.projects === null) return all;
        return { ...all, items: all.items.filter((p) => seesProject(principal, p.project_id)) };
      },
    }),
    route({
      method: 'GET',
      url: `${API}/projects`,
      summary: 'Provisioned projects',
      tag: 'projects',
      invalid: S,
      access: 'read',
      query: listProjectsQuery,
      response: pageOf(projectViewSchema),
      handler: ({ query, principal }) =>
        ask(STATUS.list, {
          ...(query.limit !== undefined ? { limit: query.limit } : {}),
          ...(query.offset !== undefined ? { offset: query.offset } : {}),
          include_disabled: query.include_disabled === 'true',
          ...listScope(principal),
        }),
    }),
    route({
      method: 'POST',
      url: `${API}/projects`,
      summary: 'Provision a project; the answer holds its secret, shown this once',
      tag: 'projects',
      invalid: S,
      body: createProjectBody,
      bodyOptional: true,
      status: 201,
      response: createdProjectSchema,
      access: 'admin',
      answers: { 409: 'A project with this id exists' },
      audit: audit('project.created', ['project_id']),
      handler: ({ body, principal }) => {
        requireNewProject(principal, body?.project_id);
        return ask(STATUS.create, body ?? {});
      },
    }),
    ...(['disable', 'enable'] as const).map((op) =>
      route({
        method: 'POST',
        url: `${API}/projects/:project_id/${op}`,
        summary: op === 'disable' ? 'Disable a project (its agent is refused)' : 'Enable a project',
        tag: 'projects',
        invalid: S,
        params: projectIdParams,
        body: emptyBody,
        bodyOptional: true,
        response: projectViewSchema,
        access: 'admin',
        answers: { 404: 'No such project' },
        audit: audit(op === 'disable' ? 'project.disabled' : 'project.enabled', ['project_id']),
        handler: ({ params, principal }) => {
          requireProject(principal, params.project_id);
          return ask(STATUS[op], { project_id: params.project_id });
        },
      }),
    ),
    route({
      method: 'POST',
      url: `${API}/projects/:project_id/rotate`,
      summary: 'New secret for a project; the old one keeps working for overlap_s',
      tag: 'projects',
      invalid: S,
      params: projectIdParams,
      body: rotateBody,
      bodyOptional: true,
      response: createdProjectSchema,
      access: 'admin',
      answers: { 404: 'No such project' },
      audit: audit('project.rotated', ['project_id']),
      handler: ({ params, body, principal }) => {
        requireProject(principal, params.project_id);
        return ask(STATUS.rotate, { project_id: params.project_id, ...(body ?? {}) });
      },
    }),
    route({
      method: 'GET',
      url: `${API}/outbox/dead`,
      summary: 'Domain events that went dead on a route (every attempt failed), oldest first',
      tag: 'outbox',
      invalid: O,
      query: outboxDeadQuery,
      response: pageOf(deadEventSchema),
      access: 'admin',
      answers: { 404: 'No such route' },
      handler: ({ query, principal }) => {
        requireWholeHub(principal, 'read the outbox of every domain');
        return ask(OUTBOX_TOPICS.deadList, query);
      },
    }),
    route({
      method: 'POST',
      url: `${API}/outbox/dead/:event_id/replay`,
      summary: 'Put a dead domain event back to pending with fresh attempts (consumers dedupe on its event_id)',
      tag: 'outbox',
      invalid: O,
      params: eventIdParams,
      body: outboxReplayBody,
      bodyOptional: true,
      response: replayedEventSchema,
      answers: { 404: 'No dead event with that id (on that route), or no such route' },
      audit: audit('outbox.event_replayed', ['event_id', 'route']),
      access: 'admin',
      handler: ({ params, body, principal }) => {
        requireWholeHub(principal, 'replay an outbox event');
        return ask(OUTBOX_TOPICS.deadReplay, { event_id: params.event_id, ...(body ?? {}) });
      },
    }),
    route({
      method: 'GET',
      url: `${API}/modules`,
      summary: 'The host’s modules with their state and mailbox counters',
      tag: 'system',
      invalid: W,
      access: 'read',
      response: itemsOf(moduleInfoSchema),
      handler: async () => ({ items: await ask(HOST_TOPICS.listModules, {}) }),
    }),
    route({
      method: 'POST',
      url: `${API}/modules/:name/restart`,
      summary: 'Restart one module (its mailbox keeps the events meanwhile)',
      tag: 'system',
      invalid: W,
      params: moduleNameParams,
      body: emptyBody,
      bodyOptional: true,
      response: moduleInfoSchema,
      answers: { 202: 'Restarting this web module itself: it goes once this answer is sent', 404: 'No such module' },
      audit: { action: 'module.restarted', targets: ({ params }) => ({ module: params.name }) },
      access: 'admin',
      handler: async ({ params, principal }) => {
        requireWholeHub(principal, 'restart a module');
        if (params.name === d.name) {
          // Restarting ourselves: answer first, or the stop would wait on this very request.
          return new Answer(202, { name: d.name, state: 'restarting' }, () => {
            d.bus.request(HOST_TOPICS.restartModule, { name: d.name }, { timeoutMs: 60_000 }).catch(() => undefined);
          });
        }
        return d.bus.request(HOST_TOPICS.restartModule, { name: params.name }, { timeoutMs: 60_000 });
      },
    }),
    route({
      method: 'GET',
      url: '/healthz',
      summary: 'The process is alive',
      tag: 'system',
      access: 'public',
      invalid: W,
      response: z.object({ ok: z.literal(true) }),
      handler: async () => ({ ok: true }),
    }),
    route({
      method: 'GET',
      url: '/readyz',
      summary: 'Ready: the database and the MQTT bridge are reachable',
      tag: 'system',
      access: 'public',
      invalid: W,
      response: z.object({ ready: z.boolean(), checks: z.record(z.string(), z.unknown()) }),
      answers: { 503: ['Not ready, with the reasons', z.object({ ready: z.literal(false), checks: z.unknown() })] },
      handler: async () => {
        const r = await d.ready();
        return r.ready ? r : new Answer(503, r);
      },
    }),
  ];
}
