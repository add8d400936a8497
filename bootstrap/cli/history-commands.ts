/**
 * `gmq-hub history <project_id>` (a project's presence changes) and `gmq-hub audit` (the trail of
 * operator actions): REST `GET /project/:project_id/history` and `GET /audit`, every page up to
 * --limit, as a table or with --json.
 */
import { UsageError } from './args.js';
import { allPages, type CliContext, pastInstant, printJson, type Spec } from './commands.js';
import { cell, table, when } from './format.js';

interface PresenceChange {
  project_id: string;
  from_state: string;
  to_state: string;
  reason: string;
  at: string;
}

interface AuditEntry {
  audit_id: string;
  at: string;
  action: string;
  token_id: string;
  role: string;
  interface: string;
  project_id: string | null;
  targets: Record<string, string>;
  outcome: string;
}

function limitOf(v: unknown, path: string[]): number {
  if (v === undefined) return 50;
  if (typeof v !== 'string' || !/^[1-9]\d{0,6}$/.test(v)) {
    throw new UsageError(`--limit: expected a positive whole number, got "${String(v)}"`, path);
  }
  return Number(v);
}

function timeFilters(values: Record<string, unknown>, q: URLSearchParams, path: string[]): void {
  for (const k of ['since', 'until'] as const) {
    const v = values[k] as string | undefined;
    if (v !== undefined) q.set(k, pastInstant(k, v, Date.now(), path));
  }
}

const TIME_DETAILS = [
  '--since and --until take an ISO time, ms since the epoch, or a duration back from now',
  '(90s, 10m, 2h, 1d: `--since 1h` is the last hour); both bounds are inclusive.',
];
const timeOptions = {
  since: { type: 'string', value: 'T', description: 'at or after T' },
  until: { type: 'string', value: 'T', description: 'at or before T' },
  limit: { type: 'string', value: 'N', description: 'at most N rows (default 50)' },
} as const;

function printed(ctx: CliContext, items: unknown[], total: number, none: string, render: () => string): number {
  if (ctx.json) {
    printJson(ctx, { items, total });
    return 0;
  }
  if (items.length === 0) {
    ctx.err(`gmq-hub: ${none}`);
    return 0;
  }
  ctx.out(render());
  if (total > items.length) ctx.err(`gmq-hub: ${items.length} of ${total} shown (--limit N for more)`);
  return 0;
}

export const HISTORY_COMMANDS: Spec[] = [
  {
    path: ['history'],
    args: '<project_id> [--since T] [--until T] [--limit N]',
    summary: 'A project’s presence changes with their reasons, newest first',
    details: [
      'GET /api/exchange-hub/project/{project_id}/history, every page up to --limit (default 50).',
      ...TIME_DETAILS,
    ],
    options: { ...timeOptions },
    positionals: { min: 1, max: 1 },
    json: true,
    examples: ['gmq-hub history plant-7', 'gmq-hub history plant-7 --since 1d --json'],
    async run({ values, positionals }, ctx) {
      const path = ['history'];
      const limit = limitOf(values.limit, path);
      const q = new URLSearchParams();
      timeFilters(values, q, path);
      const { items, total } = await allPages<PresenceChange>(
        ctx,
        `/project/${encodeURIComponent(positionals[0])}/history`,
        q,
        500,
        limit,
      );
      return printed(ctx, items, total, 'no presence changes match', () =>
        table(
          ['AT', 'FROM', 'TO', 'REASON'],
          items.map((h) => [when(h.at), h.from_state, h.to_state, h.reason]),
        ),
      );
    },
  },
  {
    path: ['audit'],
    args: '[--action A] [--project P] [--token-id T] [--since T] [--until T] [--limit N]',
    summary: 'The audit trail of operator actions, newest first, with filters',
    details: [
      'GET /api/exchange-hub/audit, every page up to --limit (default 50). Actions: command.sent,',
      'command.cancelled, command.replayed, project.created, project.disabled, project.enabled,',
      'project.rotated, outbox.event_replayed, module.restarted.',
      ...TIME_DETAILS,
    ],
    options: {
      action: { type: 'string', value: 'A', description: 'only this action' },
      project: { type: 'string', value: 'P', description: 'only actions about this project' },
      'token-id': { type: 'string', value: 'T', description: 'only actions by this token id (tokens[0], token …)' },
      ...timeOptions,
    },
    positionals: { min: 0, max: 0 },
    json: true,
    examples: [
      'gmq-hub audit',
      'gmq-hub audit --action project.rotated --since 7d',
      'gmq-hub audit --project plant-7 --json',
    ],
    async run({ values }, ctx) {
      const path = ['audit'];
      const limit = limitOf(values.limit, path);
      const q = new URLSearchParams();
      if (values.action !== undefined) q.set('action', values.action as string);
      if (values.project !== undefined) q.set('project_id', values.project as string);
      if (values['token-id'] !== undefined) q.set('token_id', values['token-id'] as string);
      timeFilters(values, q, path);
      const { items, total } = await allPages<AuditEntry>(ctx, '/audit', q, 500, limit);
      return printed(ctx, items, total, 'no audit records match', () =>
        table(
          ['AT', 'ACTION', 'TOKEN', 'ROLE', 'VIA', 'TARGETS', 'OUTCOME'],
          items.map((a) => [
            when(a.at),
            a.action,
            a.token_id,
            a.role,
            a.interface,
            cell(
              Object.entries(a.targets)
                .map(([k, v]) => `${k}=${v}`)
                .join(' ') || null,
            ),
            a.outcome,
          ]),
        ),
      );
    },
  },
];
