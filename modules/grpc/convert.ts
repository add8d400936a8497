/**
 * Between the proto messages (exchange_hub.proto, loaded with keepCase so field names are the
 * bus's own) and the bus types of the command and status contracts. A proto message leaves unset strings
 * empty: they become absent fields. A send is then checked with the command domain's send schema
 * (the one REST uses); other requests as far as the gRPC shape needs (JSON text fields, project
 * ids before they reach a topic), and the owning module validates the rest. Errors name the field.
 */
import type { z } from 'zod';
import type { DeadEvent } from '../../core/services/outbox/contract.js';
import { sendRequestSchema } from '../command/contract/schemas.js';
import type {
  CommandDetail,
  CommandView,
  ListCommandsRequest,
  SendCommandRequest,
} from '../command/contract/topics.js';
import type { JobView } from '../jobs/contract/topics.js';
import { parseOr, projectId, shown as show, uuid } from '../shared/contract/schemas.js';
import type { FeedEvent, FeedFilter } from '../shared/interface-kit/event-feed.js';
import type { CreateProjectRequest, ProjectView } from '../status/contract/topics.js';
import { invalidArg } from './errors.js';

/** Request messages as proto-loader hands them over: unset `optional` fields are absent. */
export interface SendCommandMsg {
  project_id: string;
  command_type: string;
  payload_json: string;
  timeout_ms?: number;
  module: string;
  operator_id: string;
  offline_policy: string;
  queue_ttl_ms?: number;
  command_id: string;
  idempotency_key: string;
  /** SendCommand only (SendSyncCommand has no such field: undefined there). */
  schedule_at?: string;
}
export interface SendSyncCommandMsg extends SendCommandMsg {
  wait_ms?: number;
}
export interface ListCommandsMsg {
  project_id: string;
  status: string[];
  command_type: string;
  since: string;
  until: string;
  limit?: number;
  offset?: number;
  job_id: string;
}
export interface ListProjectsMsg {
  include_disabled: boolean;
  limit?: number;
  offset?: number;
}
export interface CreateProjectMsg {
  project_id: string;
  name: string;
  metadata_json: string;
}
export interface RotateProjectSecretMsg {
  project_id: string;
  overlap_s?: number;
}
export interface PagingMsg {
  limit?: number;
  offset?: number;
}
export interface WatchEventsMsg {
  all: boolean;
  projects: string[];
  commands: string[];
  resume_epoch: string;
  last_event_id?: number;
}

/** `v` checked with `schema`; its error names `field` (a proto field, or a list item `projects[2]`). */
function checked<S extends z.ZodType>(schema: S, field: string, v: string): z.output<S> {
  return parseOr(schema, v === '' ? undefined : v, (_, reason) => invalidArg(field, reason));
}

export function checkProjectId(field: string, v: string): string {
  return checked(projectId, field, v);
}

export function checkCommandId(field: string, v: string): string {
  return checked(uuid, field, v).toLowerCase();
}

/** The REST route's rule for a module name (modules/web/schemas.ts moduleNameParams). */
const MODULE_NAME_RE = /^[a-z][a-z0-9_-]{0,63}$/;

export function checkModuleName(field: string, v: string): string {
  if (!MODULE_NAME_RE.test(v)) {
    throw invalidArg(
      field,
      v === '' ? 'required' : `expected a module name (${MODULE_NAME_RE.source}), got ${show(v)}`,
    );
  }
  return v;
}

function parseJson(field: string, text: string): unknown {
  try {
    return JSON.parse(text);
  } catch (err) {
    throw invalidArg(field, `not JSON: ${(err as Error).message}`);
  }
}

/** The send schema without the command module's config: its own bounds are checked there. */
const sendSchema = sendRequestSchema();
/** SendCommand's string fields: empty is unset. */
const SEND_TEXT_FIELDS = [
  'project_id',
  'command_type',
  'module',
  'operator_id',
  'offline_policy',
  'command_id',
  'idempotency_key',
  'schedule_at',
] as const;

export function toSendRequest(m: SendCommandMsg): SendCommandRequest {
  const req: Record<string, unknown> = {};
  for (const k of SEND_TEXT_FIELDS) if (m[k] !== '' && m[k] !== undefined) req[k] = m[k];
  if (m.timeout_ms !== undefined) req.timeout_ms = m.timeout_ms;
  if (m.queue_ttl_ms !== undefined) req.queue_ttl_ms = m.queue_ttl_ms;
  const out: SendCommandRequest = parseOr(sendSchema, req, invalidArg);
  // free-form JSON travels as text; any JSON value is a payload, so it is parsed after the fields
  if (m.payload_json !== '') out.payload = parseJson('payload_json', m.payload_json);
  if (out.command_id !== undefined) out.command_id = out.command_id.toLowerCase();
  return out;
}

export function toListCommands(m: ListCommandsMsg): ListCommandsRequest {
  const req: ListCommandsRequest = {};
  if (m.project_id !== '') req.project_id = checkProjectId('project_id', m.project_id);
  if (m.status.length > 0) req.status = m.status as ListCommandsRequest['status'];
  if (m.command_type !== '') req.command_type = m.command_type;
  if (m.job_id !== undefined && m.job_id !== '') req.job_id = checkCommandId('job_id', m.job_id);
  if (m.since !== '') req.since = m.since;
  if (m.until !== '') req.until = m.until;
  if (m.limit !== undefined) req.limit = m.limit;
  if (m.offset !== undefined) req.offset = m.offset;
  return req;
}

export function toListProjects(m: ListProjectsMsg): Record<string, unknown> {
  return {
    include_disabled: m.include_disabled,
    ...(m.limit !== undefined ? { limit: m.limit } : {}),
    ...(m.offset !== undefined ? { offset: m.offset } : {}),
  };
}

export function toRotate(m: RotateProjectSecretMsg): { project_id: string; overlap_s?: number } {
  return {
    project_id: checkProjectId('project_id', m.project_id),
    ...(m.overlap_s !== undefined ? { overlap_s: m.overlap_s } : {}),
  };
}

export function toPaging(m: PagingMsg): { limit?: number; offset?: number } {
  return {
    ...(m.limit !== undefined ? { limit: m.limit } : {}),
    ...(m.offset !== undefined ? { offset: m.offset } : {}),
  };
}

export function toCreateProject(m: CreateProjectMsg): CreateProjectRequest {
  const req: CreateProjectRequest = {};
  if (m.project_id !== '') req.project_id = checkProjectId('project_id', m.project_id);
  if (m.name !== '') req.name = m.name;
  if (m.metadata_json !== '') {
    const meta = parseJson('metadata_json', m.metadata_json);
    if (meta === null || typeof meta !== 'object' || Array.isArray(meta)) {
      throw invalidArg('metadata_json', 'expected a JSON object');
    }
    req.metadata = meta as Record<string, unknown>;
  }
  return req;
}

export function toFilter(m: WatchEventsMsg): FeedFilter {
  const projects = m.projects.map((p, i) => checkProjectId(`projects[${i}]`, p));
  const commands = m.commands.map((c, i) => checkCommandId(`commands[${i}]`, c));
  if (!m.all && projects.length === 0 && commands.length === 0) {
    throw invalidArg('all', 'set all, or name projects and/or commands to watch');
  }
  return { all: m.all, projects, commands };
}

// ─── replies ─────────────────────────────────────────────────────────────────────────────
// protobufjs skips null and unknown keys when it encodes, so bus objects go out almost as they are.

export function commandDetail(d: CommandDetail): Record<string, unknown> {
  return {
    command: d,
    payload_json: JSON.stringify(d.payload ?? {}),
    result: d.result ?? undefined,
    timings: d.timings,
  };
}

export function projectView(p: ProjectView): Record<string, unknown> {
  return {
    ...p,
    metrics_json: p.metrics ? JSON.stringify(p.metrics) : '',
    last_alert_json: p.last_alert ? JSON.stringify(p.last_alert) : '',
    registration_json: p.registration ? JSON.stringify(p.registration) : '',
    last_rejected_json: p.last_rejected ? JSON.stringify(p.last_rejected) : '',
  };
}

export function projectList(r: { items: ProjectView[]; total?: number }): Record<string, unknown> {
  return { items: r.items.map(projectView), total: r.total ?? r.items.length };
}

/** COMMAND.deadList's rows are a CommandView plus the outbox's last_error: DeadCommand nests them. */
export function deadList(r: {
  items: (CommandView & { last_error?: string | null })[];
  total: number;
  limit?: number;
  offset?: number;
}): Record<string, unknown> {
  return {
    items: r.items.map(({ last_error, ...command }) => ({ command, last_error: last_error ?? undefined })),
    total: r.total,
    limit: r.limit,
    offset: r.offset,
  };
}

/** The proto form of a feed event; `epoch` is the feed's. */
export function feedEvent(ev: FeedEvent | ResyncEvent, epoch: string): Record<string, unknown> {
  return {
    id: ev.id,
    epoch,
    type: ev.type,
    project_id: ev.project_id,
    command_id: ev.command_id,
    job_id: 'job_id' in ev ? ev.job_id : undefined,
    at: ev.at,
    data_json: JSON.stringify(ev.data ?? null),
  };
}

/** The one event a stream starts with when it cannot resume. */
export interface ResyncEvent {
  id: number;
  type: 'resync';
  project_id: '';
  command_id?: undefined;
  at: number;
  data: { reason: string; oldest: number | null };
}

export interface ListDeadEventsMsg {
  route?: string;
  limit?: number;
  offset?: number;
}

const ROUTE_RE = /^[a-z][a-z0-9_-]{0,63}$/;

/** The REST query's rules (modules/web/schemas.ts outboxDeadQuery). */
export function toDeadEventsQuery(m: ListDeadEventsMsg): { route?: string; limit?: number; offset?: number } {
  if (m.route !== undefined && !ROUTE_RE.test(m.route))
    throw invalidArg('route', `expected a route name matching ${ROUTE_RE}, got ${show(m.route)}`);
  if (m.limit !== undefined && (m.limit < 1 || m.limit > 500)) throw invalidArg('limit', 'expected 1-500');
  return { ...(m.route !== undefined ? { route: m.route } : {}), ...toPaging(m) };
}

/** DeadEvent's envelope travels as JSON text (the proto's convention for free-form JSON). */
export function deadEvents(r: { items: DeadEvent[]; total: number }): unknown {
  return {
    total: r.total,
    items: r.items.map(({ envelope, last_error, ...rest }) => ({
      ...rest,
      ...(last_error !== null ? { last_error } : {}),
      envelope_json: JSON.stringify(envelope),
    })),
  };
}

// ─── jobs ────────────────────────────────────────────────────────────────────────────────

export interface CreateJobMsg {
  targets?: { project_ids: string[]; all: boolean; metadata_json: string };
  command_type: string;
  payload_json: string;
  timeout_ms?: number;
  offline_policy: string;
  max_in_flight?: number;
  max_per_minute?: number;
  failure_ratio?: number;
  min_done?: number;
  schedule_at: string;
  idempotency_key: string;
}

/**
 * The proto form onto the jobs domain's request (jobs/contract/schemas.ts): unset fields are
 * left out, and the jobs module checks the whole with the schema REST uses.
 */
export function toCreateJob(m: CreateJobMsg): Record<string, unknown> {
  const t = m.targets ?? { project_ids: [], all: false, metadata_json: '' };
  const targets: Record<string, unknown> = {};
  if (t.project_ids.length > 0) targets.project_ids = t.project_ids;
  if (t.all) targets.all = true;
  if (t.metadata_json !== '') targets.metadata = parseJson('targets.metadata_json', t.metadata_json);
  const req: Record<string, unknown> = { targets, command_type: m.command_type };
  if (m.payload_json !== '') req.payload = parseJson('payload_json', m.payload_json);
  if (m.timeout_ms !== undefined) req.timeout_ms = m.timeout_ms;
  if (m.offline_policy !== '') req.offline_policy = m.offline_policy;
  if (m.max_in_flight !== undefined || m.max_per_minute !== undefined) {
    req.rollout = {
      ...(m.max_in_flight !== undefined ? { max_in_flight: m.max_in_flight } : {}),
      ...(m.max_per_minute !== undefined ? { max_per_minute: m.max_per_minute } : {}),
    };
  }
  if (m.failure_ratio !== undefined) {
    req.abort = { failure_ratio: m.failure_ratio, ...(m.min_done !== undefined ? { min_done: m.min_done } : {}) };
  } else if (m.min_done !== undefined) throw invalidArg('min_done', 'only with failure_ratio');
  if (m.schedule_at !== '') req.schedule_at = m.schedule_at;
  if (m.idempotency_key !== '') req.idempotency_key = m.idempotency_key;
  return req;
}

export function toListJobs(m: { status: string[]; limit?: number; offset?: number }): Record<string, unknown> {
  return { ...(m.status.length > 0 ? { status: m.status } : {}), ...toPaging(m) };
}

/** A JobView in its proto form: free-form JSON as text, the rollout and abort settings flat. */
export function jobView(v: JobView): Record<string, unknown> {
  return {
    job_id: v.job_id,
    status: v.status,
    counts: v.counts,
    targets_json: JSON.stringify(v.targets),
    command_type: v.command_type,
    payload_json: JSON.stringify(v.payload ?? {}),
    timeout_ms: v.timeout_ms ?? undefined,
    offline_policy: v.offline_policy ?? undefined,
    max_in_flight: v.rollout.max_in_flight,
    max_per_minute: v.rollout.max_per_minute ?? undefined,
    failure_ratio: v.abort?.failure_ratio,
    min_done: v.abort?.min_done,
    schedule_at: v.schedule_at ?? undefined,
    reason: v.reason ?? undefined,
    created_at: v.created_at,
    started_at: v.started_at ?? undefined,
    finished_at: v.finished_at ?? undefined,
  };
}
