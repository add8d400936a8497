/**
 * The schema-driven REST fuzzer: reads /openapi.json from a real running hub (web, status,
 * command and the MQTT bridge on PostgreSQL, with an API token) and sends it fast-check
 * generated requests for every documented operation (rest-cases.ts). Properties, per case:
 *
 *  1. never a 5xx (the two documented answers about the world, not about a failure, are
 *     counted apart: a sync call's 504 CMD_ERR_TIMEOUT and /readyz's 503 {ready:false});
 *  2. the answer is documented: when the router still lands on the operation, its status is
 *     listed and its body valid against the schema; otherwise it is a 4xx in the error shape
 *     (or a dashboard file);
 *  3. without the token, nothing but the operations declared public (and dashboard files)
 *     answers 2xx;
 *  4. nothing changes state without the token: every other chunk of cases carries no valid
 *     token, and the database is compared before and after it (projects, secrets, commands,
 *     cancellations, dead-row replays, module restarts).
 *
 * Also counted, not judged: the hub's error-level log lines (the bus logs every failed handler,
 * a caller's mistake included, at error; the first few are kept in `errorSamples`).
 */
import fc from 'fast-check';
import pg from 'pg';
import type { Logger } from '../../core/log.js';
import { createRootLogger } from '../../core/log.js';
import { TEST_DATABASE_URL } from '../helpers/db.js';
import { OpenApiOracle } from '../modules/web/openapi-oracle.js';
import { HUB_TOKEN, type RawResponse, type RealHub, rawRequest, startRealHub } from '../modules/web/real-hub.js';
import { type Case, caseArb, type Pool, type Rendered, render } from './rest-cases.js';

const API = '/api/exchange-hub';

export interface FuzzOptions {
  cases: number;
  seed?: number;
  /** Requests in flight at once. */
  concurrency?: number;
  /** Cases per chunk; chunks alternate between mixed tokens and no valid token (state compared). */
  chunk?: number;
  /** Called after each chunk with the figures so far. */
  progress?: (f: Figures) => void;
}

export interface Violation {
  property: string;
  detail: string;
  request: string;
  status?: number;
  body?: string;
}

export interface Figures {
  cases: number;
  s2xx: number;
  s4xx: number;
  s5xx: number;
  other: number;
  /** Documented 5xx answers that report the world (sync wait ran out, not ready), not failures. */
  documented5xx: number;
  /** Statuses seen, for the report. */
  statuses: Record<string, number>;
  tokenlessChunks: number;
  errorLogs: number;
  errorSamples: string[];
  violations: Violation[];
  durationMs: number;
  seed: number;
}

const describe = (r: Rendered) =>
  `${r.method} ${JSON.stringify(r.path.length > 300 ? `${r.path.slice(0, 300)}…(${r.path.length})` : r.path)} ` +
  `headers=${JSON.stringify(r.headers)} body=${r.body ? JSON.stringify(r.body.subarray(0, 200).toString('utf8')) : '-'}${
    r.body && r.body.length > 200 ? `…(${r.body.length} bytes)` : ''
  }`;

const STATIC_TYPE = /^(text\/html|text\/javascript|text\/css|image\/)/;

/** Why an answer breaks properties 1-3, or null. */
export function judge(
  oracle: OpenApiOracle,
  r: Rendered,
  res: RawResponse,
): { property: string; detail: string } | 'documented5xx' | null {
  const ct = res.headers['content-type'];
  const code = (res.json as { error?: { code?: string } } | undefined)?.error?.code;
  if (res.status >= 500) {
    const syncTimeout = r.keepsRoute && r.op.operationId === 'postCommandSync' && res.status === 504;
    const notReady = r.keepsRoute && r.op.path === '/readyz' && res.status === 503;
    if (
      (syncTimeout && code === 'CMD_ERR_TIMEOUT') ||
      (notReady && (res.json as { ready?: boolean })?.ready === false)
    ) {
      return oracle.check(r.op, res.status, ct, res.body) === null ? 'documented5xx' : null;
    }
    return { property: 'no 5xx', detail: `${res.status} ${res.body.slice(0, 300)}` };
  }
  const staticFile = (r.method === 'GET' || r.method === 'HEAD') && STATIC_TYPE.test(ct ?? '');
  // the operation the router lands on: the generated one, or, when only the method was changed,
  // the operation of the same path with that method (HEAD is its GET), if the document has one
  const lookup = r.method === 'HEAD' ? 'GET' : r.method;
  const target = r.keepsRoute
    ? r.op
    : r.keepsPath
      ? (oracle.operations.find((o) => o.path === r.op.path && o.method === lookup) ?? null)
      : null;
  // a mutation that may change the route may also not (node's parser takes `GET /metrics  HTTP/1.1`):
  // then the answer is the generated operation's
  const candidate = target ?? (r.method === r.op.method ? r.op : null);
  if (!r.authorized && res.status >= 200 && res.status < 300) {
    const open = candidate !== null && !candidate.secured;
    if (!open && !staticFile) {
      return { property: 'tokenless 2xx only on public routes', detail: `${res.status} ${res.body.slice(0, 200)}` };
    }
  }
  // HEAD answers carry no body to check; its status is covered by the rules above
  if (r.method === 'HEAD') return null;
  if (target) {
    const bad = oracle.check(target, res.status, ct, res.body);
    return bad ? { property: 'answer documented', detail: bad } : null;
  }
  if (staticFile && res.status === 200) return null;
  if (candidate && oracle.check(candidate, res.status, ct, res.body) === null) return null;
  if (res.status >= 400 && res.status < 500) {
    const bad = oracle.checkError(ct, res.body);
    return bad ? { property: 'error shape', detail: `${res.status}: ${bad}` } : null;
  }
  return { property: 'answer documented', detail: `unexpected ${res.status} off-route: ${res.body.slice(0, 200)}` };
}

/** Database state that only an authorised request may change; compared around tokenless chunks. */
class StateProbe {
  constructor(
    private readonly db: pg.Client,
    private readonly schema: string,
    private readonly hub: RealHub,
  ) {}

  private t(name: string) {
    return `"${this.schema}".${name}`;
  }

  async take(): Promise<Record<string, number>> {
    await this.db.query('DROP TABLE IF EXISTS fz_p, fz_c, fz_o, fz_j');
    await this.db.query(
      `CREATE TEMP TABLE fz_p AS SELECT project_id, name, secret, prev_secret, prev_secret_expires_at, enabled,
         metadata::text AS metadata, updated_at FROM ${this.t('project')}`,
    );
    await this.db.query(`CREATE TEMP TABLE fz_c AS SELECT command_id, status FROM ${this.t('command_tracker')}`);
    await this.db.query(`CREATE TEMP TABLE fz_j AS SELECT job_id FROM ${this.t('job')}`);
    await this.db.query(
      `CREATE TEMP TABLE fz_o AS SELECT command_id, status, updated_at FROM ${this.t('command_outbox')} WHERE status = 'dead'`,
    );
    return this.restarts();
  }

  /** Problems found, [] when the state only moved the ways the hub moves it on its own. */
  async compare(restartsBefore: Record<string, number>): Promise<string[]> {
    const problems: string[] = [];
    const count = async (what: string, sql: string) => {
      const n = Number((await this.db.query(sql)).rows[0].n);
      if (n > 0) problems.push(`${n} ${what}`);
    };
    const p = this.t('project');
    await count(
      'project rows added or changed',
      `SELECT count(*) AS n FROM (SELECT project_id, name, secret, prev_secret, prev_secret_expires_at, enabled,
         metadata::text, updated_at FROM ${p} EXCEPT SELECT * FROM fz_p) x`,
    );
    await count(
      'project rows removed or changed',
      `SELECT count(*) AS n FROM (SELECT * FROM fz_p EXCEPT SELECT project_id, name, secret, prev_secret,
         prev_secret_expires_at, enabled, metadata::text, updated_at FROM ${p}) x`,
    );
    const c = this.t('command_tracker');
    // a job started before the chunk goes on sending its batches on its own (jobs module): its
    // commands are the hub's doing; a job the chunk started is not
    await count(
      'jobs created',
      `SELECT count(*) AS n FROM ${this.t('job')} j LEFT JOIN fz_j s USING (job_id) WHERE s.job_id IS NULL`,
    );
    await count(
      'commands created (other than by a job started before the chunk)',
      `SELECT count(*) AS n FROM ${c} t LEFT JOIN fz_c s USING (command_id)
        WHERE s.command_id IS NULL AND (t.job_id IS NULL OR t.job_id NOT IN (SELECT job_id FROM fz_j))`,
    );
    await count(
      'commands cancelled, or moved out of a final state',
      `SELECT count(*) AS n FROM fz_c s JOIN ${c} t USING (command_id)
        WHERE (t.status = 'cancelled' AND s.status <> 'cancelled')
           OR (s.status IN ('completed', 'failed', 'timeout', 'cancelled') AND t.status <> s.status)`,
    );
    await count(
      'dead outbox rows replayed or touched',
      `SELECT count(*) AS n FROM fz_o s LEFT JOIN ${this.t('command_outbox')} o USING (command_id)
        WHERE o.status IS DISTINCT FROM 'dead' OR o.updated_at <> s.updated_at`,
    );
    const after = await this.restarts();
    for (const [name, n] of Object.entries(after)) {
      if (n !== restartsBefore[name]) problems.push(`module ${name} restarted (${restartsBefore[name]} → ${n})`);
    }
    return problems;
  }

  private async restarts(): Promise<Record<string, number>> {
    const r = await rawRequest(this.hub.port, 'GET', `${API}/modules`, { authorization: `Bearer ${HUB_TOKEN}` });
    const items = (r.json as { items?: Array<{ name: string; restarts: number }> }).items ?? [];
    return Object.fromEntries(items.map((m) => [m.name, m.restarts]));
  }
}

/** Starts a hub, runs the cases, stops the hub. */
export async function fuzzRest(opts: FuzzOptions): Promise<Figures> {
  const seed = opts.seed ?? Date.now() % 2 ** 31;
  const errorLines: string[] = [];
  const log: Logger = createRootLogger({
    level: 'error',
    destination: {
      write: (s: string) => {
        if (errorLines.length < 20) errorLines.push(s.slice(0, 500));
        else errorLines.push('');
      },
    },
  });
  const hub = await startRealHub({
    log,
    // short waits: a sync call on a queued command answers 504 quickly instead of holding a worker
    web: { default_sync_wait_ms: 100, sync_wait_ms_max: 500, body_limit_bytes: 65_536 },
  });
  const db = new pg.Client({ connectionString: TEST_DATABASE_URL });
  await db.connect();
  try {
    return await run(hub, db, seed, opts, errorLines);
  } finally {
    await db.end().catch(() => undefined);
    await hub.stop();
  }
}

async function run(hub: RealHub, db: pg.Client, seed: number, opts: FuzzOptions, errorLines: string[]) {
  const t0 = performance.now();
  const auth = { authorization: `Bearer ${HUB_TOKEN}`, 'content-type': 'application/json' };
  const oracle = new OpenApiOracle((await rawRequest(hub.port, 'GET', '/openapi.json')).json);
  // Never the real modules: restarting one is a documented 503 window for every other call,
  // and restarting web moves its port. The restart route is fuzzed with names that do not exist.
  const pool: Pool = { projects: [], commands: [], modules: ['nope', 'ghost-module', 'x'] };
  for (let i = 1; i <= 4; i++) {
    const r = await rawRequest(hub.port, 'POST', `${API}/projects`, auth, JSON.stringify({ project_id: `fz-${i}` }));
    if (r.status === 201) pool.projects.push(`fz-${i}`);
  }
  await rawRequest(hub.port, 'POST', `${API}/projects/fz-4/disable`, auth);
  for (const ttl of [1, 3_600_000]) {
    const r = await rawRequest(
      hub.port,
      'POST',
      `${API}/command/send`,
      auth,
      JSON.stringify({ project_id: 'fz-1', command_type: 'seed', offline_policy: 'queue', queue_ttl_ms: ttl }),
    );
    const id = (r.json as { command_id?: string }).command_id;
    if (id) pool.commands.push(id);
  }

  const f: Figures = {
    cases: 0,
    s2xx: 0,
    s4xx: 0,
    s5xx: 0,
    other: 0,
    documented5xx: 0,
    statuses: {},
    tokenlessChunks: 0,
    errorLogs: 0,
    errorSamples: [],
    violations: [],
    durationMs: 0,
    seed,
  };
  const probe = new StateProbe(db, hub.schema, hub);
  const chunk = opts.chunk ?? 250;
  const concurrency = opts.concurrency ?? 8;
  const arbs = { mixed: caseArb(oracle, 'mixed'), tokenless: caseArb(oracle, 'tokenless') };

  for (let n = 0, k = 0; n < opts.cases; k++) {
    const size = Math.min(chunk, opts.cases - n);
    const mode = k % 2 === 1 ? 'tokenless' : 'mixed';
    const cases: Case[] = fc.sample(arbs[mode], { numRuns: size, seed: (seed + k) | 0 });
    const before = mode === 'tokenless' ? await probe.take() : null;
    let next = 0;
    const worker = async () => {
      while (next < cases.length) {
        const c = cases[next++];
        const r = render(c, oracle, pool, HUB_TOKEN);
        let res: RawResponse;
        try {
          res = await rawRequest(hub.port, r.method, r.path, r.headers, r.body);
        } catch (err) {
          f.violations.push({ property: 'an answer', detail: (err as Error).message, request: describe(r) });
          continue;
        }
        f.cases++;
        f.statuses[res.status] = (f.statuses[res.status] ?? 0) + 1;
        if (res.status >= 200 && res.status < 300) f.s2xx++;
        else if (res.status >= 400 && res.status < 500) f.s4xx++;
        else if (res.status >= 500) f.s5xx++;
        else f.other++;
        const v = judge(oracle, r, res);
        if (v === 'documented5xx') f.documented5xx++;
        else if (v) {
          f.violations.push({ ...v, request: describe(r), status: res.status, body: res.body.slice(0, 500) });
        }
        learn(r, res, pool);
      }
    };
    await Promise.all(Array.from({ length: concurrency }, worker));
    n += size;
    if (before) {
      f.tokenlessChunks++;
      for (const problem of await probe.compare(before)) {
        f.violations.push({ property: 'no state change without the token', detail: problem, request: `chunk ${k}` });
      }
    }
    f.errorLogs = errorLines.length;
    f.errorSamples = errorLines.filter(Boolean).slice(0, 5);
    f.durationMs = performance.now() - t0;
    opts.progress?.(f);
  }
  f.durationMs = performance.now() - t0;
  return f;
}

/** Ids from successful answers go into the pool, so later cases reach the handlers with them. */
function learn(r: Rendered, res: RawResponse, pool: Pool): void {
  if (!r.keepsRoute || !r.authorized || res.json === undefined) return;
  const body = res.json as { project_id?: string; command_id?: string };
  if (res.status === 201 && typeof body.project_id === 'string' && pool.projects.length < 2_000) {
    pool.projects.push(body.project_id);
  }
  if (res.status === 202 && typeof body.command_id === 'string' && pool.commands.length < 2_000) {
    pool.commands.push(body.command_id);
  }
}

/** The one figure line: cases, 2xx/4xx/5xx, violations, duration. */
export function figureLine(f: Figures): string {
  const s = (f.durationMs / 1000).toFixed(1);
  return (
    `rest fuzz: ${f.cases} cases in ${s} s (${Math.round(f.cases / (f.durationMs / 1000))}/s), ` +
    `2xx ${f.s2xx}, 4xx ${f.s4xx}, 5xx ${f.s5xx} (documented 504/503 answers: ${f.documented5xx}), ` +
    `${f.tokenlessChunks} tokenless chunks state-checked, error-level log lines ${f.errorLogs}, ` +
    `violations ${f.violations.length}, seed ${f.seed}`
  );
}
