/**
 * Every `gmq-hub` command: its words, options, help and what it does. All but `start` talk to a
 * running hub over REST (and `watch` over the WebSocket); none imports a module, so the CLI
 * works against any hub it can reach. The shapes below are the documented REST answers
 * (GET /api/exchange-hub/openapi.json), restated here with only the fields the CLI prints.
 */
import { COMMAND_STATUSES } from '../../modules/command/contract/topics.js';
import { type CommandSpec, type GroupSpec, UsageError } from './args.js';
import { API, ApiError, type HubClient } from './client.js';
import { block, cell, ms, table, when } from './format.js';

export interface CliContext {
  /** The REST client (base URL and token from --url/--token or the environment). */
  client(): HubClient;
  json: boolean;
  out(text: string): void;
  err(line: string): void;
  /** Takes over SIGINT/SIGTERM: the signal is aborted on the first one (a second exits 130). */
  interrupted(): AbortSignal;
}

interface ProjectView {
  project_id: string;
  name: string | null;
  enabled: boolean;
  state: string;
  state_since: string | null;
  last_heartbeat_at: string | null;
  instance_id: string | null;
  agent_version: string | null;
  metrics: Record<string, unknown> | null;
  last_alert: { level: string; message: string } | null;
  created_at: string;
}

interface CreatedProject {
  project_id: string;
  secret: string;
  mqtt_username: string;
  mqtt_password: string;
}

interface CommandDetail {
  command_id: string;
  project_id: string;
  command_type: string;
  status: string;
  is_sync: boolean;
  offline_policy: string;
  attempts: number;
  created_at: string;
  sent_at: string | null;
  acked_at: string | null;
  completed_at: string | null;
  timeout_at: string;
  schedule_at?: string | null;
  late_result: boolean;
  error: string | null;
  payload?: unknown;
  result?: {
    status: string;
    exit_code: number;
    output: string;
    error: string;
  } | null;
  timings?: {
    queue_ms: number | null;
    delivery_ms: number | null;
    execution_ms: number | null;
    total_ms: number | null;
  };
}

/** GET /outbox/dead's items (core/services/outbox/contract.ts DeadEvent). */
interface DeadEvent {
  event_id: string;
  route: string;
  event_type: string;
  key: string;
  attempts: number;
  last_error: string | null;
  dead_at: string;
}

interface ModuleInfo {
  name: string;
  type: string;
  state: string;
  started_at: string | null;
  restarts: number;
  failures: number;
  last_error: string | null;
  mailbox: { queued: number; handled: number; dropped: number; rejected?: number; errors?: number } | null;
}

export type Spec = CommandSpec<CliContext>;

export const enc = encodeURIComponent;

/**
 * Every page of a list endpoint (`{items, total}`), `pageSize` at a time, up to `max` items:
 * an operator asking for a list wants all of it (or the `--limit` they gave).
 */
export async function allPages<T>(
  ctx: CliContext,
  path: string,
  query: URLSearchParams,
  pageSize: number,
  max = Number.POSITIVE_INFINITY,
  start = 0,
): Promise<{ items: T[]; total: number }> {
  const items: T[] = [];
  let total = 0;
  do {
    const page = new URLSearchParams(query);
    page.set('limit', String(Math.min(pageSize, max - items.length)));
    page.set('offset', String(start + items.length));
    const r = await ctx.client().call<{ items: T[]; total: number }>('GET', `${API}${path}?${page}`);
    items.push(...r.body.items);
    total = r.body.total;
    if (r.body.items.length === 0) break;
  } while (items.length < Math.min(max, total - start));
  return { items, total };
}

export function printJson(ctx: CliContext, v: unknown): void {
  ctx.out(`${JSON.stringify(v, null, 2)}\n`);
}

/** The API's answer as JSON with --json, else as the text `human` makes of it. */
export function show(ctx: CliContext, body: unknown, human: () => string): void {
  if (ctx.json) printJson(ctx, body);
  else ctx.out(human());
}

/** `--offset`: how many to skip, 0 or more. */
function nonNegativeInt(name: string, v: string | undefined, path: readonly string[]): number | undefined {
  if (v === undefined) return undefined;
  if (!/^\d+$/.test(v) || !Number.isSafeInteger(Number(v))) {
    throw new UsageError(`--${name}: expected a whole number, 0 or more, got "${v}"`, path);
  }
  return Number(v);
}

export function positiveInt(name: string, v: string | undefined, path: readonly string[]): number | undefined {
  if (v === undefined) return undefined;
  if (!/^\d+$/.test(v) || Number(v) < 1 || !Number.isSafeInteger(Number(v))) {
    throw new UsageError(`--${name}: expected a positive whole number, got "${v}"`, path);
  }
  return Number(v);
}

/**
 * `--queue-until`: an ISO 8601 time, ms since the epoch, or a duration from now (`+90s`, `+10m`,
 * `+2h`, `+1d`, `+500` ms). Returns the queue TTL in ms.
 */
export function queueTtl(v: string, now: number, path: readonly string[]): number {
  let at: number;
  const rel = /^\+(\d+)(ms|s|m|h|d)?$/.exec(v);
  if (rel) {
    const unit = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 }[(rel[2] ?? 'ms') as 'ms'];
    at = now + Number(rel[1]) * unit;
  } else if (/^\d+$/.test(v)) {
    at = Number(v);
  } else {
    at = Date.parse(v);
    if (Number.isNaN(at)) {
      throw new UsageError(
        `--queue-until: expected an ISO time, ms since the epoch or +duration (+90s, +10m), got "${v}"`,
        path,
      );
    }
  }
  if (at <= now) throw new UsageError(`--queue-until: ${new Date(at).toISOString()} is not in the future`, path);
  return Math.ceil(at - now);
}

/**
 * `--at`: when a scheduled send starts. A duration from now (`+90s`, `+10m`, `+2h`, `+1d`) becomes
 * an ISO time here; anything else goes to the hub as written, which wants ISO 8601 with a zone
 * and says so when it is not.
 */
export function scheduleAt(v: string, now: number): string {
  const rel = /^\+(\d+)(ms|s|m|h|d)?$/.exec(v);
  if (!rel) return v;
  const unit = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 }[(rel[2] ?? 'ms') as 'ms'];
  return new Date(now + Number(rel[1]) * unit).toISOString();
}

/**
 * `--since` / `--until`: an ISO 8601 time, ms since the epoch, or a duration back from now
 * (`90s`, `10m`, `2h`, `1d`; `-2h` too, written `--since=-2h`, as a leading dash reads as an
 * option). Returns what the REST filter takes: an ISO time.
 */
export function pastInstant(name: string, v: string, now: number, path: readonly string[]): string {
  const rel = /^-?(\d+)(ms|s|m|h|d)$/.exec(v);
  let at: number;
  if (rel) {
    const unit = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 }[rel[2] as 'ms'];
    at = now - Number(rel[1]) * unit;
  } else if (/^\d+$/.test(v)) {
    at = Number(v);
  } else {
    at = Date.parse(v);
  }
  if (!Number.isFinite(at) || Number.isNaN(new Date(at).getTime())) {
    throw new UsageError(
      `--${name}: expected an ISO time, ms since the epoch or a duration ago (90s, 2h, 1d), got "${v}"`,
      path,
    );
  }
  return new Date(at).toISOString();
}

function projectBlock(p: ProjectView): string {
  return block([
    ['project', p.project_id],
    ['name', cell(p.name)],
    ['enabled', p.enabled ? 'yes' : 'no'],
    ['state', `${p.state} since ${when(p.state_since)}`],
    ['last heartbeat', when(p.last_heartbeat_at)],
    ['instance', cell(p.instance_id)],
    ['agent version', cell(p.agent_version)],
    ['metrics', cell(p.metrics)],
    ['last alert', p.last_alert ? `${p.last_alert.level}: ${p.last_alert.message}` : '-'],
    ['created', when(p.created_at)],
  ]);
}

function secretBlock(c: CreatedProject, verb: string): string {
  const pairs = block([
    ['project_id', c.project_id],
    ['secret', c.secret],
    ['mqtt_username', c.mqtt_username],
    ['mqtt_password', c.mqtt_password],
  ]);
  return `${pairs}\nThe secret is shown this once (${verb}): store it now; the agent signs with it.\n`;
}

function commandBlock(c: CommandDetail): string {
  const pairs: Array<[string, string]> = [
    ['command_id', c.command_id],
    ['project', c.project_id],
    ['type', c.command_type],
    ['status', `${c.status}${c.late_result ? ' (late result: it came after the timeout)' : ''}`],
    ['created', when(c.created_at)],
    ...(c.schedule_at ? ([['scheduled for', when(c.schedule_at)]] as Array<[string, string]>) : []),
    ['sent', when(c.sent_at)],
    ['acked', when(c.acked_at)],
    ['completed', when(c.completed_at)],
    ['timeout at', when(c.timeout_at)],
  ];
  if (c.error) pairs.push(['error', c.error]);
  if (c.result) {
    pairs.push(['result', `${c.result.status} (exit ${c.result.exit_code})`]);
    pairs.push(['output', c.result.output === '' ? '-' : c.result.output]);
    if (c.result.error && c.result.error !== c.error) pairs.push(['stderr', c.result.error]);
  }
  if (c.timings) {
    const t = c.timings;
    pairs.push([
      'timings',
      `queue ${ms(t.queue_ms)} · delivery ${ms(t.delivery_ms)} · execution ${ms(t.execution_ms)} · total ${ms(t.total_ms)}`,
    ]);
  }
  return block(pairs);
}

function moduleRow(m: ModuleInfo): string[] {
  const box = m.mailbox;
  return [
    m.name,
    m.type,
    m.state,
    String(m.restarts),
    String(m.failures),
    box ? String(box.queued) : '-',
    box ? String(box.handled) : '-',
    box ? String(box.dropped + (box.rejected ?? 0)) : '-',
    box ? String(box.errors ?? 0) : '-',
    cell(m.last_error),
  ];
}

const MODULE_HEADERS = [
  'MODULE',
  'TYPE',
  'STATE',
  'RESTARTS',
  'FAILURES',
  'QUEUED',
  'HANDLED',
  'DROPPED',
  'ERRORS',
  'LAST ERROR',
];

/** The final statuses a `--sync` send can come back with, and whether that is a success. */
const FINAL_OK: Record<string, boolean> = { completed: true, failed: false, timeout: false, cancelled: false };

export const GROUPS: GroupSpec[] = [
  { name: 'projects', summary: 'Provision projects (agents) and manage their secrets.' },
  { name: 'modules', summary: 'The hub’s modules: state, restarts, mailbox counters.', defaultSub: 'list' },
  { name: 'outbox', summary: 'Domain events that went dead on a route, and their replay.', defaultSub: 'dead' },
];

export const COMMANDS: Spec[] = [
  {
    path: ['start'],
    args: '[--config FILE]',
    summary: 'Run the hub in this process, exactly as `npm start` does',
    details: [
      'Reads config.yml (or $HUB_CONFIG, or --config), starts every enabled module and runs until',
      'SIGTERM or SIGINT (graceful stop; a second signal exits at once). SIGHUP reloads the config.',
      'A start that fails prints one line (`gmq-hub: CODE: message`) and exits 1.',
    ],
    options: {
      config: { type: 'string', value: 'FILE', description: 'config file (default $HUB_CONFIG or ./config.yml)' },
    },
    positionals: { min: 0, max: 0 },
    examples: ['gmq-hub start', 'HUB_HTTP_PORT=9090 gmq-hub start --config /etc/gmq-hub/config.yml'],
    async run({ values }) {
      // Loaded only here: every other command stays a small REST client.
      const { runHub } = await import('../hub.js');
      await runHub({ configFile: values.config as string | undefined });
      return 'running';
    },
  },
  {
    path: ['projects', 'add'],
    args: '<id> [--name N]',
    summary: 'Provision a project; prints its secret, shown this once',
    options: { name: { type: 'string', value: 'N', description: 'display name' } },
    positionals: { min: 1, max: 1 },
    json: true,
    examples: ['gmq-hub projects add plant-7 --name "Plant 7"', 'gmq-hub projects add plant-8 --json | jq -r .secret'],
    async run({ values, positionals }, ctx) {
      const body = { project_id: positionals[0], ...(values.name !== undefined ? { name: values.name } : {}) };
      const r = await ctx.client().call<CreatedProject>('POST', `${API}/projects`, { body });
      show(ctx, r.body, () => secretBlock(r.body, 'new project'));
      return 0;
    },
  },
  {
    path: ['projects', 'list'],
    args: '[--all]',
    summary: 'Provisioned projects with their presence state',
    options: { all: { type: 'boolean', description: 'include disabled projects' } },
    positionals: { min: 0, max: 0 },
    json: true,
    examples: ['gmq-hub projects list', 'gmq-hub projects list --all --json'],
    async run({ values }, ctx) {
      const query = new URLSearchParams(values.all ? { include_disabled: 'true' } : {});
      const { items, total } = await allPages<ProjectView>(ctx, '/projects', query, 1000);
      if (ctx.json) {
        printJson(ctx, { items, total });
        return 0;
      }
      if (items.length === 0) {
        ctx.err('gmq-hub: no projects (add one with `gmq-hub projects add <id>`)');
        return 0;
      }
      ctx.out(
        table(
          ['PROJECT', 'NAME', 'STATE', 'SINCE', 'LAST HEARTBEAT', 'ENABLED', 'AGENT'],
          items.map((p) => [
            p.project_id,
            cell(p.name),
            p.state,
            when(p.state_since),
            when(p.last_heartbeat_at),
            p.enabled ? 'yes' : 'no',
            cell(p.agent_version),
          ]),
        ),
      );
      return 0;
    },
  },
  {
    path: ['projects', 'rotate'],
    args: '<id> [--overlap-s N]',
    summary: 'Give a project a new secret; the old one keeps working for the overlap',
    options: {
      'overlap-s': {
        type: 'string',
        value: 'N',
        description: 'seconds the old secret stays valid (hub default when left out)',
      },
    },
    positionals: { min: 1, max: 1 },
    json: true,
    examples: ['gmq-hub projects rotate plant-7 --overlap-s 3600'],
    async run({ values, positionals }, ctx) {
      const raw = values['overlap-s'] as string | undefined;
      if (raw !== undefined && !/^\d+$/.test(raw)) {
        throw new UsageError(`--overlap-s: expected whole seconds, got "${raw}"`, ['projects', 'rotate']);
      }
      const body = raw === undefined ? {} : { overlap_s: Number(raw) };
      const r = await ctx
        .client()
        .call<CreatedProject>('POST', `${API}/projects/${enc(positionals[0])}/rotate`, { body });
      show(ctx, r.body, () => secretBlock(r.body, 'rotated'));
      return 0;
    },
  },
  ...(['disable', 'enable'] as const).map(
    (op): Spec => ({
      path: ['projects', op],
      args: '<id>',
      summary: op === 'disable' ? 'Disable a project: its agent is refused' : 'Enable a disabled project again',
      positionals: { min: 1, max: 1 },
      json: true,
      examples: [`gmq-hub projects ${op} plant-7`],
      async run({ positionals }, ctx) {
        const r = await ctx.client().call<ProjectView>('POST', `${API}/projects/${enc(positionals[0])}/${op}`);
        show(ctx, r.body, () => projectBlock(r.body));
        return 0;
      },
    }),
  ),
  {
    path: ['send'],
    args: '[--sync] [--timeout-ms N] [--wait-ms N] [--queue-until T] [--at T] [--idempotency-key K] <project> <type> [json-payload]',
    summary: 'Send a command to a project’s agent',
    details: [
      'Without --sync the hub answers at once with the command id (the outbox delivers it).',
      'With --sync the CLI waits for the agent’s result: exit 0 when the command completed, 1 when',
      'it failed or timed out, or when the wait ran out (the command goes on: follow it with',
      '`gmq-hub command <id>` or `gmq-hub watch --command <id>`).',
      'A project that is not online refuses the command (CMD_ERR_PROJECT_OFFLINE) unless',
      '--queue-until says how long it may wait for the project to come online.',
      'The payload is JSON (default {}); quote it for the shell.',
      'With --at the command is stored now as `scheduled` and starts at T (cancel it until then with',
      '`gmq-hub cancel <id>`); whether its project is online counts then, and --queue-until is measured',
      'from T. Not with --sync.',
      'With --idempotency-key the same command line run again (a retry after a lost answer) gets the',
      'command the first run made instead of a second one; the key with another command is refused',
      '(CMD_ERR_IDEMPOTENCY_MISMATCH). Keys are kept at least 24 h.',
    ],
    options: {
      sync: { type: 'boolean', description: 'wait for the result' },
      'timeout-ms': { type: 'string', value: 'N', description: 'execution timeout (default: the hub’s)' },
      'wait-ms': {
        type: 'string',
        value: 'N',
        description: 'with --sync: how long to wait (default: the hub’s, or --timeout-ms when longer)',
      },
      'queue-until': {
        type: 'string',
        value: 'T',
        description: 'queue while the project is offline, until T: ISO time, ms since the epoch, or +90s/+10m/+2h',
      },
      at: {
        type: 'string',
        value: 'T',
        description: 'start at T: ISO 8601 time with zone (2026-12-24T18:00:00Z) or +90s/+10m/+2h/+1d',
      },
      'idempotency-key': {
        type: 'string',
        value: 'K',
        description: 'retry key (1-255 printable ASCII): the same key and command give the first run’s command',
      },
    },
    positionals: { min: 2, max: 3 },
    json: true,
    examples: [
      'gmq-hub send plant-7 echo \'{"hello":"agent"}\'',
      // what examples/agent/config.yml allows: `uptime` by name, args as an array
      'gmq-hub send --sync --timeout-ms 10000 plant-7 host_exec \'{"command":"uptime","args":[]}\'',
      'gmq-hub send --queue-until +30m plant-7 reboot',
      'gmq-hub send --at 2026-12-24T18:00:00Z plant-7 reboot',
      'gmq-hub send --idempotency-key deploy-2024-05-01 plant-7 deploy \'{"version":"1.4.2"}\'',
    ],
    async run({ values, positionals }, ctx) {
      const path = ['send'];
      const [project, type, rawPayload] = positionals;
      let payload: unknown;
      if (rawPayload !== undefined) {
        try {
          payload = JSON.parse(rawPayload);
        } catch (err) {
          throw new UsageError(`json-payload: not valid JSON (${(err as Error).message})`, path);
        }
      }
      const timeout = positiveInt('timeout-ms', values['timeout-ms'] as string | undefined, path);
      const wait = positiveInt('wait-ms', values['wait-ms'] as string | undefined, path);
      if (wait !== undefined && !values.sync) throw new UsageError('--wait-ms needs --sync', path);
      const until = values['queue-until'] as string | undefined;
      const now = Date.now();
      const atArg = values.at as string | undefined;
      if (atArg !== undefined && values.sync) throw new UsageError('--at cannot be used with --sync', path);
      const at = atArg === undefined ? undefined : scheduleAt(atArg, now);
      // the queued wait begins when the command starts, so --queue-until counts from --at
      const start = at === undefined ? now : Math.max(now, Date.parse(at) || now);
      const body = {
        project_id: project,
        command_type: type,
        ...(payload !== undefined ? { payload } : {}),
        ...(timeout !== undefined ? { timeout_ms: timeout } : {}),
        ...(until !== undefined ? { offline_policy: 'queue', queue_ttl_ms: queueTtl(until, start, path) } : {}),
        ...(at !== undefined ? { schedule_at: at } : {}),
        ...(wait !== undefined ? { wait_ms: wait } : {}),
      };
      const key = values['idempotency-key'] as string | undefined;
      const headers = key !== undefined ? { 'idempotency-key': key } : undefined;
      const replayed = (h: Headers, id: string) => {
        if (h.get('idempotent-replayed') === 'true') {
          ctx.err(`gmq-hub: the idempotency key names command ${id}, sent before: this is that command`);
        }
      };
      if (!values.sync) {
        const r = await ctx.client().call<CommandDetail>('POST', `${API}/command/send`, { body, headers });
        replayed(r.headers, r.body.command_id);
        show(ctx, r.body, () => commandBlock(r.body));
        return 0;
      }
      let r: { body: CommandDetail; headers: Headers };
      try {
        // the hub bounds the wait (max_sync_wait_ms); the CLI waits as long as it does
        r = await ctx.client().call<CommandDetail>('POST', `${API}/command/sync`, { body, timeoutMs: null, headers });
      } catch (err) {
        if (err instanceof ApiError && err.code === 'CMD_ERR_TIMEOUT') {
          const b = err.body as { command_id?: string; command?: CommandDetail | null };
          if (ctx.json) printJson(ctx, err.body);
          ctx.err(
            `gmq-hub: CMD_ERR_TIMEOUT: no result within the wait; command ${b.command_id} is ` +
              `${b.command?.status ?? 'unknown'} and goes on (gmq-hub command ${b.command_id})`,
          );
          return 1;
        }
        throw err;
      }
      replayed(r.headers, r.body.command_id);
      show(ctx, r.body, () => commandBlock(r.body));
      if (FINAL_OK[r.body.status] === false) {
        const why = r.body.error ?? r.body.result?.error ?? '';
        ctx.err(`gmq-hub: command ${r.body.command_id} ${r.body.status}${why ? `: ${why}` : ''}`);
        return 1;
      }
      return 0;
    },
  },
  {
    path: ['status'],
    args: '<project>',
    summary: 'A project’s presence state, last heartbeat and agent',
    positionals: { min: 1, max: 1 },
    json: true,
    examples: ['gmq-hub status plant-7'],
    async run({ positionals }, ctx) {
      const r = await ctx.client().call<ProjectView>('GET', `${API}/project/${enc(positionals[0])}/status`);
      show(ctx, r.body, () => projectBlock(r.body));
      return 0;
    },
  },
  {
    path: ['command'],
    args: '<command-id>',
    summary: 'One command with its state, result and timings',
    positionals: { min: 1, max: 1 },
    json: true,
    examples: ['gmq-hub command 0b8f7a52-7a0e-4e0b-9d3c-2f1f6c1f9e11'],
    async run({ positionals }, ctx) {
      const r = await ctx.client().call<CommandDetail>('GET', `${API}/command/${enc(positionals[0])}`);
      show(ctx, r.body, () => commandBlock(r.body));
      return 0;
    },
  },
  {
    path: ['cancel'],
    args: '<command-id>',
    summary: 'Cancel a command not delivered yet (scheduled, or pending before any delivery)',
    details: [
      'POST /api/exchange-hub/command/<id>/cancel. A command the agent may already have is refused',
      '(CMD_ERR_NOT_CANCELLABLE, exit 1).',
    ],
    positionals: { min: 1, max: 1 },
    json: true,
    examples: ['gmq-hub cancel 0b8f7a52-7a0e-4e0b-9d3c-2f1f6c1f9e11'],
    async run({ positionals }, ctx) {
      const r = await ctx
        .client()
        .call<CommandDetail>('POST', `${API}/command/${enc(positionals[0])}/cancel`, { body: {} });
      show(ctx, r.body, () => commandBlock(r.body));
      return 0;
    },
  },
  {
    path: ['commands'],
    args: '[--project P] [--status S,...] [--type T] [--since T] [--until T] [--limit N] [--offset N]',
    summary: 'Commands, newest first, with filters',
    details: [
      'GET /api/exchange-hub/commands, every page up to --limit (default 50), after skipping --offset',
      '(default 0): `--limit 50 --offset 50` is the second page of fifty.',
      '--status takes one status or a comma list: scheduled, pending, sent, acked, completed, failed, timeout,',
      'cancelled.',
      '--since and --until take an ISO time, ms since the epoch, or a duration back from now',
      '(90s, 10m, 2h, 1d: `--since 1h` is the last hour); --since is inclusive, --until exclusive,',
      'on the command’s creation.',
    ],
    options: {
      project: { type: 'string', value: 'P', description: 'only this project’s commands' },
      status: { type: 'string', value: 'S', description: 'a status or a comma list of them' },
      type: { type: 'string', value: 'T', description: 'only this command type' },
      job: { type: 'string', value: 'ID', description: 'only the commands of this job' },
      since: { type: 'string', value: 'T', description: 'created at or after T' },
      until: { type: 'string', value: 'T', description: 'created before T' },
      limit: { type: 'string', value: 'N', description: 'at most N commands (default 50)' },
      offset: { type: 'string', value: 'N', description: 'skip the N newest that match (default 0)' },
    },
    positionals: { min: 0, max: 0 },
    json: true,
    examples: [
      'gmq-hub commands',
      'gmq-hub commands --project plant-7 --status failed,timeout --since 1h',
      'gmq-hub commands --since 2026-03-01T00:00:00Z --until 2026-03-02T00:00:00Z --limit 500 --json',
      'gmq-hub commands --project plant-7 --limit 50 --offset 50',
    ],
    async run({ values }, ctx) {
      const path = ['commands'];
      const limit = positiveInt('limit', values.limit as string | undefined, path) ?? 50;
      const offset = nonNegativeInt('offset', values.offset as string | undefined, path) ?? 0;
      const status = values.status as string | undefined;
      if (status !== undefined) {
        const bad = status.split(',').filter((x) => !(COMMAND_STATUSES as readonly string[]).includes(x));
        if (bad.length || status === '') {
          throw new UsageError(`--status: unknown status "${bad[0] ?? ''}" (${COMMAND_STATUSES.join(', ')})`, path);
        }
      }
      const q = new URLSearchParams();
      if (values.project !== undefined) q.set('project_id', values.project as string);
      if (status !== undefined) q.set('status', status);
      if (values.type !== undefined) q.set('command_type', values.type as string);
      if (values.job !== undefined) q.set('job_id', values.job as string);
      for (const k of ['since', 'until'] as const) {
        const v = values[k] as string | undefined;
        if (v !== undefined) q.set(k, pastInstant(k, v, Date.now(), path));
      }
      const { items, total } = await allPages<CommandDetail>(ctx, '/commands', q, 500, limit, offset);
      if (ctx.json) {
        printJson(ctx, { items, total, offset });
        return 0;
      }
      if (items.length === 0) {
        ctx.err(
          offset > 0 && total > 0
            ? `gmq-hub: ${total} match, none after --offset ${offset}`
            : 'gmq-hub: no commands match',
        );
        return 0;
      }
      ctx.out(
        table(
          ['CREATED', 'COMMAND ID', 'PROJECT', 'TYPE', 'STATUS', 'TOTAL', 'ERROR'],
          items.map((c) => [
            when(c.created_at),
            c.command_id,
            c.project_id,
            c.command_type,
            `${c.status}${c.late_result ? ' (late result)' : ''}`,
            c.completed_at ? ms(Date.parse(c.completed_at) - Date.parse(c.created_at)) : '-',
            cell(c.error),
          ]),
        ),
      );
      if (total > items.length) {
        const range = offset > 0 ? `${offset + 1}–${offset + items.length}` : `${items.length}`;
        const next = offset + items.length < total ? ` (--offset ${offset + items.length} for the next)` : '';
        ctx.err(`gmq-hub: ${range} of ${total} shown${next}`);
      }
      return 0;
    },
  },
  {
    path: ['watch'],
    args: '[--project P ...] [--command ID ...]',
    summary: 'Live events (command states, logs, results, project status), one JSON per line',
    details: [
      'Streams /api/exchange-hub/ws: every event of the given projects and commands, or all events',
      'when none is given. Each line is {id, type, project_id, command_id?, at, data}; type is one',
      'of command.state, command.log, command.result, project.status.',
      'A lost connection is redialled and resumed from the last event id printed, so no event is',
      'missed or repeated while the hub still holds the gap (else a warning on stderr).',
      'Status lines go to stderr. Ctrl-C stops it with exit code 0.',
    ],
    options: {
      project: { type: 'string', multiple: true, value: 'P', description: 'a project to follow' },
      command: { type: 'string', multiple: true, value: 'ID', description: 'a command to follow' },
    },
    positionals: { min: 0, max: 0 },
    examples: [
      'gmq-hub watch',
      'gmq-hub watch --project plant-7 --project plant-8',
      'gmq-hub watch --command 0b8f7a52-7a0e-4e0b-9d3c-2f1f6c1f9e11 | jq .data.status',
    ],
    async run({ values }, ctx) {
      const client = ctx.client();
      const { watch } = await import('./watch.js'); // `ws` is loaded by the one command that needs it
      return watch({
        base: client.base,
        token: client.token,
        projects: (values.project as string[] | undefined) ?? [],
        commands: (values.command as string[] | undefined) ?? [],
        out: (line) => ctx.out(`${line}\n`),
        note: (line) => ctx.err(line),
        signal: ctx.interrupted(),
      });
    },
  },
  {
    path: ['modules', 'list'],
    args: '',
    summary: 'The hub’s modules with state, restarts and mailbox counters (also: `gmq-hub modules`)',
    details: ['DROPPED counts events dropped or rejected by the module’s full mailbox.'],
    positionals: { min: 0, max: 0 },
    json: true,
    examples: ['gmq-hub modules', 'gmq-hub modules --json'],
    async run(_p, ctx) {
      const r = await ctx.client().call<{ items: ModuleInfo[] }>('GET', `${API}/modules`);
      show(ctx, r.body, () => table(MODULE_HEADERS, r.body.items.map(moduleRow)));
      return 0;
    },
  },
  {
    path: ['modules', 'restart'],
    args: '<name>',
    summary: 'Restart one module; events addressed to it wait in its mailbox meanwhile',
    positionals: { min: 1, max: 1 },
    json: true,
    examples: ['gmq-hub modules restart command'],
    async run({ positionals }, ctx) {
      const r = await ctx
        .client()
        .call<ModuleInfo | { name: string; state: string }>('POST', `${API}/modules/${enc(positionals[0])}/restart`, {
          timeoutMs: 90_000,
        });
      if (ctx.json) printJson(ctx, r.body);
      else if (r.status === 202)
        ctx.out(`${r.body.name}: restarting (the web module answers before it restarts itself)\n`);
      else ctx.out(table(MODULE_HEADERS, [moduleRow(r.body as ModuleInfo)]));
      return 0;
    },
  },
  {
    path: ['outbox', 'dead'],
    args: '[--route R]',
    summary: 'Domain events dead on their route (every attempt failed), oldest first (also: `gmq-hub outbox`)',
    details: ['Replay one with `gmq-hub outbox replay <event-id>`; consumers deduplicate on its event id.'],
    options: { route: { type: 'string', value: 'R', description: 'only this route (a key under outbox.routes)' } },
    positionals: { min: 0, max: 0 },
    json: true,
    examples: ['gmq-hub outbox dead', 'gmq-hub outbox dead --route ticketing --json'],
    async run({ values }, ctx) {
      const query = new URLSearchParams(values.route === undefined ? {} : { route: String(values.route) });
      const { items, total } = await allPages<DeadEvent>(ctx, '/outbox/dead', query, 500);
      if (ctx.json) {
        printJson(ctx, { items, total });
        return 0;
      }
      if (items.length === 0) {
        ctx.err('gmq-hub: no dead events');
        return 0;
      }
      ctx.out(
        table(
          ['EVENT', 'ROUTE', 'TYPE', 'KEY', 'ATTEMPTS', 'DEAD', 'LAST ERROR'],
          items.map((e) => [
            e.event_id,
            e.route,
            e.event_type,
            e.key,
            String(e.attempts),
            when(e.dead_at),
            cell(e.last_error),
          ]),
        ),
      );
      return 0;
    },
  },
  {
    path: ['outbox', 'replay'],
    args: '<event-id> [--route R]',
    summary: 'Put a dead domain event back to pending with fresh attempts',
    options: {
      route: { type: 'string', value: 'R', description: 'only on this route (default: every route it died on)' },
    },
    positionals: { min: 1, max: 1 },
    json: true,
    examples: ['gmq-hub outbox replay 0b8f7a52-7a0e-4e0b-9d3c-2f1f6c1f9e11'],
    async run({ positionals, values }, ctx) {
      const body = values.route === undefined ? {} : { route: String(values.route) };
      const r = await ctx
        .client()
        .call<{ event_id: string; routes: string[] }>('POST', `${API}/outbox/dead/${enc(positionals[0])}/replay`, {
          body,
        });
      show(ctx, r.body, () => `${r.body.event_id}: pending again on ${r.body.routes.join(', ')}\n`);
      return 0;
    },
  },
];
