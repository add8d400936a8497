/**
 * `gmq-hub jobs create|list|show|cancel`: jobs (one command to many projects) over REST, as
 * README "Jobs: one command to many projects" describes them. The shapes are the documented REST answers (JobView).
 */

import type { JobView } from '../../modules/jobs/contract/topics.js';
import type { GroupSpec } from './args.js';
import { UsageError } from './args.js';
import { API } from './client.js';
import { allPages, type CliContext, enc, positiveInt, printJson, type Spec, show } from './commands.js';
import { block, cell, table, when } from './format.js';

export const JOBS_GROUP: GroupSpec = {
  name: 'jobs',
  summary: 'Jobs: one command to many projects, with rollout limits, abort threshold and schedule.',
  defaultSub: 'list',
};

const c = (j: JobView) => j.counts;
const progress = (j: JobView) =>
  `${c(j).completed + c(j).failed + c(j).timeout + c(j).cancelled}/${c(j).total} done (${c(j).completed} ok, ${c(j).failed} failed, ${c(j).timeout} timeout, ${c(j).cancelled} cancelled, ${c(j).in_flight} in flight, ${c(j).pending} pending)`;

function jobBlock(j: JobView): string {
  return block([
    ['job', j.job_id],
    ['status', j.status],
    ['command', j.command_type],
    ['targets', JSON.stringify(j.targets)],
    ['progress', progress(j)],
    ['rollout', `max_in_flight ${j.rollout.max_in_flight}, max_per_minute ${j.rollout.max_per_minute ?? '-'}`],
    ['abort', j.abort ? `failure_ratio ${j.abort.failure_ratio} after ${j.abort.min_done} done` : '-'],
    ['scheduled', when(j.schedule_at)],
    ['created', when(j.created_at)],
    ['started', when(j.started_at)],
    ['finished', when(j.finished_at)],
    ['reason', cell(j.reason)],
  ]);
}

function parseJson(name: string, v: string, path: readonly string[]): unknown {
  try {
    return JSON.parse(v);
  } catch (err) {
    throw new UsageError(`${name}: not valid JSON (${(err as Error).message})`, path);
  }
}

export const JOB_COMMANDS: Spec[] = [
  {
    path: ['jobs', 'create'],
    args: '(--project P ... | --all | --metadata JSON) <command-type> [json-payload]',
    summary: 'Create a job: one command to many projects, rolled out within its limits',
    details: [
      'Targets: --project (repeat it), --all (every enabled project) or --metadata (every enabled',
      'project whose metadata holds these pairs). Each target gets an ordinary command carrying the',
      'job id (`gmq-hub commands --job <id>` lists them). --max-in-flight and --max-per-minute bound',
      'the rollout; --abort-ratio (with --min-done) aborts it when (failed + timeout) / done reaches',
      'the ratio; --at schedules it. With --idempotency-key the same command line run again gets',
      'the job the first run made (CMD_ERR_IDEMPOTENCY_MISMATCH for another job with that key).',
    ],
    options: {
      project: { type: 'string', multiple: true, value: 'P', description: 'a target project' },
      all: { type: 'boolean', description: 'every enabled project' },
      metadata: { type: 'string', value: 'JSON', description: 'projects whose metadata holds these pairs' },
      'timeout-ms': { type: 'string', value: 'N', description: 'each command’s execution timeout' },
      queue: { type: 'boolean', description: 'queue commands for offline projects (offline_policy queue)' },
      'max-in-flight': { type: 'string', value: 'N', description: 'commands not terminal at once' },
      'max-per-minute': { type: 'string', value: 'N', description: 'commands sent in any 60 s' },
      'abort-ratio': { type: 'string', value: 'R', description: 'abort at this failure ratio (0 < R ≤ 1)' },
      'min-done': { type: 'string', value: 'N', description: 'targets done before the ratio counts (default 1)' },
      at: { type: 'string', value: 'T', description: 'start at this ISO time (the job waits as scheduled)' },
      'idempotency-key': {
        type: 'string',
        value: 'K',
        description: 'retry key: the same key and job give the first run’s job',
      },
    },
    positionals: { min: 1, max: 2 },
    json: true,
    examples: [
      'gmq-hub jobs create --all --max-in-flight 50 echo \'{"hello":"fleet"}\'',
      'gmq-hub jobs create --metadata \'{"region":"eu"}\' --abort-ratio 0.2 --min-done 20 deploy \'{"v":"1.4"}\'',
      'gmq-hub jobs create --project plant-7 --project plant-8 --at 2030-01-01T03:00:00Z reboot',
    ],
    async run({ values, positionals }, ctx) {
      const path = ['jobs', 'create'];
      const projects = (values.project as string[] | undefined) ?? [];
      const chosen = [projects.length > 0, values.all === true, values.metadata !== undefined].filter(Boolean).length;
      if (chosen !== 1) throw new UsageError('give exactly one of --project, --all, --metadata', path);
      const targets =
        projects.length > 0
          ? { project_ids: projects }
          : values.all === true
            ? { all: true }
            : { metadata: parseJson('--metadata', String(values.metadata), path) };
      const [type, rawPayload] = positionals;
      const ratio = values['abort-ratio'] as string | undefined;
      const minDone = positiveInt('min-done', values['min-done'] as string | undefined, path);
      if (minDone !== undefined && ratio === undefined) throw new UsageError('--min-done needs --abort-ratio', path);
      if (ratio !== undefined && !Number.isFinite(Number(ratio))) {
        throw new UsageError(`--abort-ratio: expected a number, got "${ratio}"`, path);
      }
      const timeout = positiveInt('timeout-ms', values['timeout-ms'] as string | undefined, path);
      const maxInFlight = positiveInt('max-in-flight', values['max-in-flight'] as string | undefined, path);
      const perMinute = positiveInt('max-per-minute', values['max-per-minute'] as string | undefined, path);
      const at = values.at as string | undefined;
      const body = {
        targets,
        command_type: type,
        ...(rawPayload !== undefined ? { payload: parseJson('json-payload', rawPayload, path) } : {}),
        ...(timeout !== undefined ? { timeout_ms: timeout } : {}),
        ...(values.queue === true ? { offline_policy: 'queue' } : {}),
        ...(maxInFlight !== undefined || perMinute !== undefined
          ? {
              rollout: {
                ...(maxInFlight !== undefined ? { max_in_flight: maxInFlight } : {}),
                ...(perMinute !== undefined ? { max_per_minute: perMinute } : {}),
              },
            }
          : {}),
        ...(ratio !== undefined
          ? { abort: { failure_ratio: Number(ratio), ...(minDone !== undefined ? { min_done: minDone } : {}) } }
          : {}),
        ...(at !== undefined ? { schedule_at: at } : {}),
      };
      const key = values['idempotency-key'] as string | undefined;
      const r = await ctx.client().call<JobView>('POST', `${API}/jobs`, {
        body,
        ...(key !== undefined ? { headers: { 'idempotency-key': key } } : {}),
      });
      if (r.headers.get('idempotent-replayed') === 'true') {
        ctx.err(`gmq-hub: the idempotency key names job ${r.body.job_id}, created before: this is that job`);
      }
      show(ctx, r.body, () => jobBlock(r.body));
      return 0;
    },
  },
  {
    path: ['jobs', 'list'],
    args: '[--status S ...]',
    summary: 'Jobs, newest first, with their progress (also: `gmq-hub jobs`)',
    options: {
      status: {
        type: 'string',
        multiple: true,
        value: 'S',
        description: 'only jobs in this status: scheduled, running, completed, aborted, cancelled',
      },
    },
    positionals: { min: 0, max: 0 },
    json: true,
    examples: ['gmq-hub jobs', 'gmq-hub jobs list --status running --json'],
    async run({ values }, ctx) {
      const statuses = (values.status as string[] | undefined) ?? [];
      const query = new URLSearchParams(statuses.length > 0 ? { status: statuses.join(',') } : {});
      const { items, total } = await allPages<JobView>(ctx, '/jobs', query, 500);
      if (ctx.json) {
        printJson(ctx, { items, total });
        return 0;
      }
      if (items.length === 0) {
        ctx.err('gmq-hub: no jobs');
        return 0;
      }
      ctx.out(
        table(
          [
            'JOB',
            'STATUS',
            'COMMAND',
            'TOTAL',
            'OK',
            'FAILED',
            'TIMEOUT',
            'CANCELLED',
            'IN FLIGHT',
            'PENDING',
            'CREATED',
          ],
          items.map((j) => [
            j.job_id,
            j.status,
            j.command_type,
            String(c(j).total),
            String(c(j).completed),
            String(c(j).failed),
            String(c(j).timeout),
            String(c(j).cancelled),
            String(c(j).in_flight),
            String(c(j).pending),
            when(j.created_at),
          ]),
        ),
      );
      return 0;
    },
  },
  {
    path: ['jobs', 'show'],
    args: '<job-id>',
    summary: 'A job with its status, progress and why it ended',
    positionals: { min: 1, max: 1 },
    json: true,
    examples: ['gmq-hub jobs show 0b8f7a52-7a0e-4e0b-9d3c-2f1f6c1f9e11'],
    async run({ positionals }, ctx) {
      const r = await ctx.client().call<JobView>('GET', `${API}/jobs/${enc(positionals[0])}`);
      show(ctx, r.body, () => jobBlock(r.body));
      return 0;
    },
  },
  {
    path: ['jobs', 'cancel'],
    args: '<job-id>',
    summary: 'Cancel a scheduled or running job: targets not sent yet are never sent',
    positionals: { min: 1, max: 1 },
    json: true,
    examples: ['gmq-hub jobs cancel 0b8f7a52-7a0e-4e0b-9d3c-2f1f6c1f9e11'],
    async run({ positionals }, ctx: CliContext) {
      const r = await ctx.client().call<JobView>('POST', `${API}/jobs/${enc(positionals[0])}/cancel`, { body: {} });
      show(ctx, r.body, () => jobBlock(r.body));
      return 0;
    },
  },
];
