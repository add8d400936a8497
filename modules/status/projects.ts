import { randomBytes, timingSafeEqual } from 'node:crypto';
import type { Knex } from 'knex';
import { z } from 'zod';
import { HubError } from '../../core/errors.js';
import type { Clock } from '../../core/module.js';
import { inJsonList } from '../../core/services/sql-lists.js';
import { deriveMqttPassword } from '../shared/credentials.js';
import { growingLru } from '../shared/growing-lru.js';
import { isProjectPattern, likeCondition, MAX_PROJECT_PATTERNS } from '../shared/project-scope.js';
import { isValidProjectId } from '../shared/protocol.js';
import { findUnsafeJson, unsafeTextProblem } from '../shared/sanitize.js';
import type { CreatedProject } from './contract/topics.js';

/** A provisioned project as the module keeps it in memory (times in ms since the epoch). */
export interface ProjectRecord {
  readonly project_id: string;
  readonly name: string | null;
  readonly secret: string;
  readonly prev_secret: string | null;
  readonly prev_secret_expires_at: number | null;
  readonly enabled: boolean;
  readonly metadata: Record<string, unknown>;
  readonly created_at: number;
}

/** Made with every field set, so its object keeps one shape and no property array (100 000 of them). */
interface CacheEntry {
  rec: ProjectRecord | null;
  loadedAt: number;
  /** MQTT passwords derived from [secret, prev_secret], computed on first authentication. */
  passwords: string[] | undefined;
}

const CACHE_MAX = 100_000;
/** Unknown ids are remembered briefly, so a flood of bad usernames does not reach the database each time. */
const NEGATIVE_TTL_MAX_MS = 5_000;
const SECRET_BYTES = 32;
/** Projects read per query when refreshing or warming the cache. */
const REFRESH_CHUNK = 5_000;

// Requests are strict: a misspelt `project_id` must not silently provision a random id.
const idOnly = z.object({ project_id: z.string() }).strict();
/** Text PostgreSQL can store: no NUL, no lone surrogate (REST and gRPC both come through here). */
const storableText = z.string().superRefine((s, ctx) => {
  const problem = unsafeTextProblem(s);
  if (problem) ctx.addIssue({ code: 'custom', message: problem });
});
/** Free-form JSON refused at the edge when it cannot be stored or served (shared/sanitize.ts). */
const storableJson = z.record(z.string(), z.unknown()).superRefine((v, ctx) => {
  const bad = findUnsafeJson(v);
  if (bad) ctx.addIssue({ code: 'custom', message: `${bad.path ? `${bad.path} ` : ''}${bad.problem}` });
});
const createSchema = z
  .object({
    project_id: storableText.optional(),
    name: storableText.max(200).optional(),
    metadata: storableJson.optional(),
  })
  .strict();
const listSchema = z
  .object({
    include_disabled: z.boolean().default(false),
    limit: z.number().int().min(1).max(1000).default(100),
    offset: z.number().int().min(0).default(0),
    /** Only projects whose metadata holds every one of these key/value pairs (jsonb containment). */
    metadata: z.record(z.string(), z.unknown()).optional(),
    /** only projects matching one of these ids or globs: the caller's token is limited to them */
    project_patterns: z.array(z.string().refine(isProjectPattern)).max(MAX_PROJECT_PATTERNS).optional(),
  })
  .strict();
const rotateSchema = z
  .object({
    project_id: z.string(),
    overlap_s: z
      .number()
      .int()
      .min(0)
      .max(30 * 86_400)
      .optional(),
  })
  .strict();

/** Validates a bus request body; a bad one becomes STATUS_ERR_INVALID naming the field. */
export function parseRequest<T>(schema: z.ZodType<T>, body: unknown): T {
  const r = schema.safeParse(body ?? {});
  if (r.success) return r.data;
  const issue = r.error.issues[0];
  const where = issue.path.length > 0 ? issue.path.join('.') : '(request)';
  throw new HubError('STATUS_ERR_INVALID', `${where}: ${issue.message}`, { field: where });
}

export const requests = { idOnly, createSchema, listSchema, rotateSchema };

function toMs(v: unknown): number | null {
  if (v === null || v === undefined) return null;
  if (v instanceof Date) return v.getTime();
  const t = new Date(v as string).getTime();
  return Number.isNaN(t) ? null : t;
}

function fromRow(row: Record<string, unknown>): ProjectRecord {
  return Object.freeze({
    project_id: row.project_id as string,
    name: (row.name as string | null) ?? null,
    secret: row.secret as string,
    prev_secret: (row.prev_secret as string | null) ?? null,
    prev_secret_expires_at: toMs(row.prev_secret_expires_at),
    enabled: row.enabled === true,
    metadata: (row.metadata as Record<string, unknown> | null) ?? {},
    created_at: toMs(row.created_at) ?? 0,
  });
}

function newSecret(): string {
  return randomBytes(SECRET_BYTES).toString('hex');
}

function notFound(projectId: string): HubError {
  return new HubError('STATUS_ERR_NOT_FOUND', `no project ${JSON.stringify(projectId)}`, { project_id: projectId });
}

/**
 * The `project` table behind an in-memory cache. Credentials and broker authentication are hot
 * (every signed message, every MQTT connect), so lookups are answered from memory: synchronously
 * when cached, else from one database read shared by every miss of the same moment (load). This module's own
 * changes invalidate the entry at once; other hub instances' changes show after `cacheTtlMs`.
 */
export class ProjectStore {
  /**
   * Least recently used first out past CACHE_MAX: an LRU cache, not a Map popped through
   * `keys().next()`, which walks V8's holes once full (docs/benchmarks.md "Bounded maps that stay fast when
   * full"): a fleet of more projects than that, or a flood of unknown ids, would pay it per miss.
   */
  private readonly cache = growingLru<string, CacheEntry>(CACHE_MAX);
  private readonly loading = new Map<string, Promise<ProjectRecord | null>>();
  /** Provisioned projects whose entry outlived the TTL, to be re-read together. */
  private readonly expired = new Set<string>();
  private refreshing = false;
  /** Uncached ids asked for since the last batched read (load), with who waits for each. */
  private readonly misses = new Map<string, { resolve(rec: ProjectRecord | null): void; reject(err: unknown): void }>();
  private missesScheduled = false;

  constructor(
    private readonly db: () => Knex,
    private readonly clock: Clock,
    private readonly cacheTtlMs: number,
  ) {}

  get cachedCount(): number {
    return this.cache.size;
  }

  /** Secrets that verify right now: the current one, then a rotated-out one while its overlap lasts. */
  validSecrets(rec: ProjectRecord, now = this.clock.now()): string[] {
    const out = [rec.secret];
    if (rec.prev_secret && rec.prev_secret_expires_at !== null && rec.prev_secret_expires_at > now) {
      out.push(rec.prev_secret);
    }
    return out;
  }

  /**
   * The project, or null when it is not provisioned: a value when cached, else a promise.
   * A provisioned project whose entry is older than the TTL is still answered from memory, and
   * re-read in the background with the other expired ones in one query (refreshExpired): with
   * 100 000 projects heartbeating, expiring entries one database read at a time on the hot path
   * was the status module's bound (bench `heartbeat`). This module's own changes update the
   * entry at once; another instance's show within the TTL plus one refresh.
   */
  lookup(projectId: string): ProjectRecord | null | Promise<ProjectRecord | null> {
    const hit = this.fresh(projectId);
    if (hit) return hit.rec;
    return this.load(projectId);
  }

  private fresh(projectId: string): CacheEntry | undefined {
    const e = this.cache.get(projectId);
    if (!e) return undefined;
    const ttl = e.rec ? this.cacheTtlMs : Math.min(this.cacheTtlMs, NEGATIVE_TTL_MAX_MS);
    const age = this.clock.now() - e.loadedAt;
    if (age >= 0 && age < ttl) return e;
    if (e.rec && ttl > 0 && age >= 0) {
      this.scheduleRefresh(projectId);
      return e;
    }
    this.cache.delete(projectId);
    return undefined;
  }

  private scheduleRefresh(projectId: string): void {
    this.expired.add(projectId);
    if (this.refreshing) return;
    this.refreshing = true;
    setImmediate(() => {
      this.refreshExpired()
        .catch(() => undefined) // entries stay as they were; the next lookup schedules them again
        .finally(() => {
          this.refreshing = false;
          if (this.expired.size > 0) this.scheduleRefresh(this.expired.values().next().value as string);
        });
    });
  }

  /** Re-reads expired entries, REFRESH_CHUNK per query; ids no longer in the table become unknown. */
  private async refreshExpired(): Promise<void> {
    while (this.expired.size > 0) {
      const ids: string[] = [];
      for (const id of this.expired) {
        ids.push(id);
        this.expired.delete(id);
        if (ids.length >= REFRESH_CHUNK) break;
      }
      const found = await this.readMany(ids);
      for (const id of ids) this.remember(id, found.get(id) ?? null);
    }
  }

  /**
   * Fills the cache with the projects whose presence the module continues at start (not
   * offline): after a restart their agents all heartbeat within seconds, and each first lookup
   * would otherwise be one database read, one after another in the status mailbox.
   */
  async warm(projectIds: string[]): Promise<number> {
    let n = 0;
    for (let i = 0; i < projectIds.length && this.cache.size < CACHE_MAX; i += REFRESH_CHUNK) {
      const found = await this.readMany(projectIds.slice(i, i + REFRESH_CHUNK));
      for (const [id, rec] of found) {
        if (this.cache.has(id)) continue; // a fresher answer arrived meanwhile
        this.remember(id, rec);
        n++;
      }
    }
    return n;
  }

  /**
   * Misses are read together: the ids asked for while the event loop turns are gathered and
   * read in one query at the next turn (REFRESH_CHUNK per query). Ten thousand agents
   * connecting at once used to mean ten thousand single-row reads, one after another; on PGlite
   * the broker's authentication requests waited behind them past their deadline (bench `memory`).
   */
  private load(projectId: string): Promise<ProjectRecord | null> {
    if (!isValidProjectId(projectId)) return Promise.resolve(null);
    let p = this.loading.get(projectId);
    if (p) return p;
    p = new Promise<ProjectRecord | null>((resolve, reject) => this.misses.set(projectId, { resolve, reject }));
    this.loading.set(projectId, p);
    if (!this.missesScheduled) {
      this.missesScheduled = true;
      setImmediate(() => void this.readMisses());
    }
    return p;
  }

  private async readMisses(): Promise<void> {
    this.missesScheduled = false;
    const waiting = [...this.misses];
    this.misses.clear();
    for (let i = 0; i < waiting.length; i += REFRESH_CHUNK) {
      const part = waiting.slice(i, i + REFRESH_CHUNK);
      let found: Map<string, ProjectRecord>;
      try {
        found = await this.readMany(part.map(([id]) => id));
      } catch (err) {
        for (const [id, waiter] of part) {
          this.loading.delete(id);
          waiter.reject(err);
        }
        continue;
      }
      for (const [id, waiter] of part) {
        const rec = found.get(id) ?? null;
        this.remember(id, rec);
        this.loading.delete(id);
        waiter.resolve(rec);
      }
    }
  }

  /** The provisioned projects among `ids`, in one query. */
  private async readMany(ids: string[]): Promise<Map<string, ProjectRecord>> {
    const rows: Record<string, unknown>[] = await this.db()('project').whereRaw(inJsonList('project_id'), [
      JSON.stringify(ids),
    ]);
    return new Map(rows.map((row) => [row.project_id as string, fromRow(row)]));
  }

  private remember(projectId: string, rec: ProjectRecord | null): void {
    this.cache.set(projectId, { rec, loadedAt: this.clock.now(), passwords: undefined });
  }

  /** The project or STATUS_ERR_NOT_FOUND. */
  async require(projectId: string): Promise<ProjectRecord> {
    const rec = await this.lookup(projectId);
    if (!rec) throw notFound(projectId);
    return rec;
  }

  /** Provisions a project; the secret is returned here and never again. */
  async create(body: unknown): Promise<{ rec: ProjectRecord; created: CreatedProject }> {
    const req = parseRequest(createSchema, body);
    const projectId = req.project_id ?? `p-${randomBytes(6).toString('hex')}`;
    if (!isValidProjectId(projectId)) {
      throw new HubError(
        'STATUS_ERR_INVALID',
        'project_id: must be 1-128 bytes without "/", "+", "#", control characters or a leading "$"',
        { field: 'project_id' },
      );
    }
    const secret = newSecret();
    const now = new Date(this.clock.now());
    const rows = await this.db()('project')
      .insert({
        project_id: projectId,
        name: req.name ?? null,
        secret,
        enabled: true,
        metadata: JSON.stringify(req.metadata ?? {}),
        created_at: now,
        updated_at: now,
      })
      .onConflict('project_id')
      .ignore()
      .returning('*');
    if (rows.length === 0) {
      throw new HubError('STATUS_ERR_EXISTS', `project ${JSON.stringify(projectId)} already exists`, {
        project_id: projectId,
      });
    }
    const rec = fromRow(rows[0]);
    this.remember(projectId, rec);
    return { rec, created: credentialsOf(rec) };
  }

  async list(body: unknown): Promise<{ items: ProjectRecord[]; total: number }> {
    const req = parseRequest(listSchema, body);
    const limit = likeCondition('project_id', req.project_patterns);
    const scope = (q: Knex.QueryBuilder) => {
      const enabled = req.include_disabled ? q : q.where({ enabled: true });
      const inScope = limit ? enabled.whereRaw(limit.sql, limit.args) : enabled;
      return req.metadata ? inScope.whereRaw('metadata @> ?::jsonb', [JSON.stringify(req.metadata)]) : inScope;
    };
    const [rows, count] = await Promise.all([
      scope(this.db()('project'))
        .select('*')
        .orderBy([
          { column: 'created_at', order: 'asc' },
          { column: 'project_id', order: 'asc' },
        ])
        .limit(req.limit)
        .offset(req.offset),
      scope(this.db()('project')).count<{ n: string | number }[]>({ n: '*' }),
    ]);
    return { items: rows.map(fromRow), total: Number(count[0]?.n ?? 0) };
  }

  /** Every project, disabled ones included (hub_projects counts them all). */
  async count(): Promise<number> {
    const rows = await this.db()('project').count<{ n: string | number }[]>({ n: '*' });
    return Number(rows[0]?.n ?? 0);
  }

  async setEnabled(projectId: string, enabled: boolean): Promise<ProjectRecord> {
    const rows = await this.db()('project')
      .where({ project_id: projectId })
      .update({ enabled, updated_at: new Date(this.clock.now()) })
      .returning('*');
    if (rows.length === 0) throw notFound(projectId);
    const rec = fromRow(rows[0]);
    this.remember(projectId, rec);
    return rec;
  }

  /** A new secret; the old one keeps working for `overlapS` seconds (both verify meanwhile). */
  async rotate(projectId: string, overlapS: number): Promise<{ rec: ProjectRecord; created: CreatedProject }> {
    const secret = newSecret();
    const now = this.clock.now();
    const rec = await this.db().transaction(async (trx) => {
      const row = await trx('project').where({ project_id: projectId }).forUpdate().first();
      if (!row) throw notFound(projectId);
      const updated = await trx('project')
        .where({ project_id: projectId })
        .update({
          secret,
          prev_secret: row.secret,
          prev_secret_expires_at: new Date(now + overlapS * 1000),
          updated_at: new Date(now),
        })
        .returning('*');
      return fromRow(updated[0]);
    });
    this.remember(projectId, rec);
    return { rec, created: credentialsOf(rec) };
  }

  /**
   * Broker authentication: username = project id, password = deriveMqttPassword(id, secret) for
   * any secret valid now. Disabled and unknown projects are refused. Compared in constant time.
   */
  authenticate(
    username: unknown,
    password: unknown,
  ): { ok: boolean; project_id?: string } | Promise<{ ok: boolean; project_id?: string }> {
    if (typeof username !== 'string' || typeof password !== 'string' || !isValidProjectId(username))
      return { ok: false };
    const decide = (rec: ProjectRecord | null) => this.check(rec, password);
    const r = this.lookup(username);
    return r instanceof Promise ? r.then(decide) : decide(r);
  }

  private check(rec: ProjectRecord | null, password: string): { ok: boolean; project_id?: string } {
    if (!rec?.enabled) return { ok: false };
    const entry = this.cache.get(rec.project_id);
    let derived = entry?.rec === rec ? entry.passwords : undefined;
    if (!derived) {
      derived = [rec.secret, rec.prev_secret ?? ''].map((s) => (s ? deriveMqttPassword(rec.project_id, s) : ''));
      if (entry?.rec === rec) entry.passwords = derived;
    }
    const valid = this.validSecrets(rec).length;
    const given = Buffer.from(password, 'utf8');
    let ok = false;
    // Every candidate is compared (no early exit), so timing does not tell which one matched.
    for (let i = 0; i < valid; i++) {
      const want = Buffer.from(derived[i], 'utf8');
      if (want.length === given.length && timingSafeEqual(want, given)) ok = true;
    }
    return ok ? { ok: true, project_id: rec.project_id } : { ok: false };
  }
}

function credentialsOf(rec: ProjectRecord): CreatedProject {
  return {
    project_id: rec.project_id,
    secret: rec.secret,
    mqtt_username: rec.project_id,
    mqtt_password: deriveMqttPassword(rec.project_id, rec.secret),
  };
}
