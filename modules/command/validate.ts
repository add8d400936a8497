/**
 * Input checks for the command topics. Every error is CMD_ERR_INVALID with `details.field`
 * naming the offending field and a message that starts with it (`timeout_ms: …`), so REST and
 * gRPC can answer 400 with a reason a caller can act on. A send is checked with the domain's one
 * send schema (contract/schemas.ts), bounded by this module's config.
 */
import { HubError } from '../../core/errors.js';
import { instantMs, TIME_MAX, TIME_MIN } from '../shared/contract/instant.js';
import { isUuid, parseOr, shown as show } from '../shared/contract/schemas.js';
import { isProjectPattern, MAX_PROJECT_PATTERNS } from '../shared/project-scope.js';
import { COMMAND_TYPE_RE, isValidProjectId } from '../shared/protocol.js';
import { DEFAULT_JSON_LIMITS, findUnsafeJson } from '../shared/sanitize.js';
import { canonicalJson } from '../shared/signing.js';
import type { CommandConfig } from './config.js';
import { COMMAND_STATUSES, DEFAULT_LIST_LIMIT, MAX_LIST_LIMIT, sendRequestSchema } from './contract/schemas.js';
import type { CommandStatus, ListCommandsRequest, OfflinePolicy } from './contract/topics.js';
import { requestHash } from './idempotency.js';

export function invalid(field: string, reason: string): HubError {
  return new HubError('CMD_ERR_INVALID', `${field}: ${reason}`, { field });
}

function isObject(v: unknown): v is Record<string, unknown> {
  return v !== null && typeof v === 'object' && !Array.isArray(v);
}

function intIn(field: string, v: unknown, min: number, max: number): number {
  if (typeof v !== 'number' || !Number.isInteger(v)) throw invalid(field, `expected an integer, got ${show(v)}`);
  if (v < min || v > max) throw invalid(field, `must be between ${min} and ${max}, got ${v}`);
  return v;
}

/** The send schema bounded by one config (configs are frozen: one schema per config object). */
const sendSchemas = new WeakMap<CommandConfig, ReturnType<typeof sendRequestSchema>>();
function sendSchemaFor(cfg: CommandConfig): ReturnType<typeof sendRequestSchema> {
  let schema = sendSchemas.get(cfg);
  if (!schema) {
    schema = sendRequestSchema({ max_timeout_ms: cfg.max_timeout_ms });
    sendSchemas.set(cfg, schema);
  }
  return schema;
}

/** Optional fields a JSON caller on the bus may send as null: null means left out there. */
const NULL_MEANS_ABSENT = ['module', 'operator_id', 'command_id', 'idempotency_key', 'job_id'] as const;

/** A send request with every default applied. */
export interface CheckedSend {
  project_id: string;
  command_type: string;
  /** The payload as canonical JSON (RFC 8785): stored in the tracker, and what the command is signed around. */
  payload_json: string;
  timeout_ms: number;
  module: string | null;
  operator_id: string | null;
  offline_policy: OfflinePolicy;
  queue_ttl_ms: number;
  command_id: string | null;
  is_sync: boolean;
  /** When a scheduled send starts (ms since the epoch); null: at once (none given, or the time is past). */
  schedule_at: number | null;
  /** The caller's retry key and the hash of what it must repeat (idempotency.ts); null without a key. */
  idempotency: { key: string; hash: string } | null;
  /** The job that sends it (modules/jobs), or null. */
  job_id: string | null;
}

export function checkSend(req: unknown, cfg: CommandConfig, now = Date.now()): CheckedSend {
  if (!isObject(req)) throw invalid('(request)', `expected an object, got ${show(req)}`);
  const given: Record<string, unknown> = { ...req };
  for (const k of NULL_MEANS_ABSENT) if (given[k] === null) delete given[k];
  const r = parseOr(sendSchemaFor(cfg), given, invalid);
  // No payload means an empty object: agents read fields off it.
  const payload = r.payload === undefined ? {} : r.payload;
  // What jsonb cannot hold (NUL, lone surrogates) or what nests past any reader's stack, refused
  // before anything walks it recursively. Every value takes at least one byte of JSON, so a
  // payload within max_payload_bytes never has more values than that: the node bound is the
  // byte limit, checked exactly below.
  const unsafe = findUnsafeJson(payload, {
    maxDepth: DEFAULT_JSON_LIMITS.maxDepth,
    maxNodes: Math.max(DEFAULT_JSON_LIMITS.maxNodes, cfg.max_payload_bytes),
  });
  if (unsafe) {
    // the field is the request's (`payload`); where inside it goes at the end of the message
    throw invalid('payload', unsafe.path ? `${unsafe.problem} (at payload${unsafe.path})` : unsafe.problem);
  }
  let payloadJson: string;
  try {
    payloadJson = canonicalJson(payload);
  } catch (err) {
    throw invalid('payload', `not JSON: ${(err as Error).message}`);
  }
  const bytes = Buffer.byteLength(payloadJson, 'utf8');
  if (bytes > cfg.max_payload_bytes) {
    throw invalid('payload', `${bytes} bytes as JSON, more than the ${cfg.max_payload_bytes} allowed`);
  }
  const policy = r.offline_policy ?? 'fail';
  const module = r.module ?? null;
  const operatorId = r.operator_id ?? null;
  const key = r.idempotency_key ?? null;
  const scheduleAt = r.schedule_at === undefined ? null : Date.parse(r.schedule_at);
  if (scheduleAt !== null) {
    // a sync caller waits for the result on this request: it cannot be asked to wait for days
    if (r.is_sync) throw invalid('schedule_at', 'only an async send can be scheduled (POST /command/send)');
    if (scheduleAt - now > cfg.max_schedule_ahead_ms) {
      throw invalid(
        'schedule_at',
        `${r.schedule_at} is more than ${cfg.max_schedule_ahead_ms} ms (max_schedule_ahead_ms) ahead`,
      );
    }
  }
  return {
    project_id: r.project_id,
    command_type: r.command_type,
    payload_json: payloadJson,
    timeout_ms: r.timeout_ms ?? cfg.default_timeout_ms,
    module,
    operator_id: operatorId,
    offline_policy: policy,
    queue_ttl_ms: r.queue_ttl_ms ?? cfg.default_queue_ttl_ms,
    command_id: r.command_id ? r.command_id.toLowerCase() : null,
    is_sync: r.is_sync ?? false,
    job_id: r.job_id ? r.job_id.toLowerCase() : null,
    // a time already past starts the command at once, as if none were given
    schedule_at: scheduleAt !== null && scheduleAt > now ? scheduleAt : null,
    idempotency: key
      ? {
          key,
          hash: requestHash({
            project_id: r.project_id,
            command_type: r.command_type,
            payload_json: payloadJson,
            timeout_ms: r.timeout_ms ?? null,
            offline_policy: policy,
            queue_ttl_ms: r.queue_ttl_ms ?? null,
            module,
            operator_id: operatorId,
            schedule_at: scheduleAt === null ? null : new Date(scheduleAt).toISOString(),
          }),
        }
      : null,
  };
}

/** `{ command_id }` requests. */
export function checkCommandId(req: unknown): string {
  const id = isObject(req) ? req.command_id : undefined;
  if (!isUuid(id)) throw invalid('command_id', `expected a UUID, got ${show(id)}`);
  return id.toLowerCase();
}

export interface Paging {
  limit: number;
  offset: number;
}

export function checkPaging(r: Record<string, unknown>): Paging {
  const limit = r.limit === undefined ? DEFAULT_LIST_LIMIT : intIn('limit', r.limit, 1, MAX_LIST_LIMIT);
  const offset = r.offset === undefined ? 0 : intIn('offset', r.offset, 0, Number.MAX_SAFE_INTEGER);
  return { limit, offset };
}

/**
 * The times a list filter may name: years 1 to 9999 (TIME_MIN, TIME_MAX). JavaScript dates reach
 * ±275 760 years and PostgreSQL's timestamptz does not (the driver writes years past 9999 in a
 * form the server refuses), so a date outside is a caller's mistake, said as one.
 */
function time(field: string, v: unknown): Date | null {
  if (v === undefined || v === null) return null;
  const t = instantMs(v);
  const d = new Date(t);
  if (Number.isNaN(t) || Number.isNaN(d.getTime())) {
    throw invalid(field, `expected an ISO time or milliseconds since the epoch, got ${show(v)}`);
  }
  if (t < TIME_MIN || t > TIME_MAX) {
    throw invalid(field, `must be between 0001-01-01T00:00:00.000Z and 9999-12-31T23:59:59.999Z, got ${show(v)}`);
  }
  return d;
}

export interface CheckedList extends Paging {
  project_id: string | null;
  project_patterns: string[] | null;
  statuses: CommandStatus[] | null;
  command_type: string | null;
  job_id: string | null;
  since: Date | null;
  until: Date | null;
}

/** `project_patterns` of a list request (the caller's token limit): ids or globs; null when absent. */
export function checkPatterns(v: unknown): string[] | null {
  if (v === undefined || v === null) return null;
  if (!Array.isArray(v) || v.length > MAX_PROJECT_PATTERNS || !v.every(isProjectPattern)) {
    throw invalid('project_patterns', `expected up to ${MAX_PROJECT_PATTERNS} project ids or globs, got ${show(v)}`);
  }
  return v;
}

export function checkList(req: unknown): CheckedList {
  const r = (req ?? {}) as ListCommandsRequest & Record<string, unknown>;
  if (!isObject(r)) throw invalid('(request)', `expected an object, got ${show(req)}`);
  if (r.project_id !== undefined && !isValidProjectId(r.project_id)) {
    throw invalid('project_id', `expected a project id, got ${show(r.project_id)}`);
  }
  let statuses: CommandStatus[] | null = null;
  if (r.status !== undefined) {
    const list = Array.isArray(r.status) ? r.status : String(r.status).split(',');
    if (list.length === 0) throw invalid('status', 'expected at least one status');
    for (const s of list) {
      if (!(COMMAND_STATUSES as readonly string[]).includes(s)) {
        throw invalid('status', `expected one or more of ${COMMAND_STATUSES.join(', ')}, got ${show(s)}`);
      }
    }
    statuses = [...new Set(list as CommandStatus[])];
  }
  if (r.job_id !== undefined && !isUuid(r.job_id)) throw invalid('job_id', `expected a UUID, got ${show(r.job_id)}`);
  if (r.command_type !== undefined && (typeof r.command_type !== 'string' || !COMMAND_TYPE_RE.test(r.command_type))) {
    throw invalid('command_type', `must match ${COMMAND_TYPE_RE}, got ${show(r.command_type)}`);
  }
  return {
    project_id: r.project_id ?? null,
    project_patterns: checkPatterns(r.project_patterns),
    statuses,
    command_type: r.command_type ?? null,
    job_id: r.job_id ? r.job_id.toLowerCase() : null,
    since: time('since', r.since),
    until: time('until', r.until),
    ...checkPaging(r),
  };
}
