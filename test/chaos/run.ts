/**
 * `npm run chaos`: the fault suite (issue 9). Private PostgreSQL and Mosquitto, a hub and N agents
 * as processes, one scenario after another; one figure line each, then the totals. Exits 1 when
 * any scenario lost a command or ran one twice (or could not run).
 *
 *   npm run chaos                                  # every scenario, 10 000 commands each
 *   npm run chaos -- --scenario hub-kill,pg-stop --commands 1000
 *   CHAOS_SCENARIO=sigterm CHAOS_COMMANDS=300 npm run chaos
 *
 * Flags (env): --scenario NAME[,NAME] (CHAOS_SCENARIO, default all), --commands N (CHAOS_COMMANDS,
 * 10000), --agents N (CHAOS_AGENTS, 20), --pause-s S (CHAOS_PAUSE_S, 60), --outage-s S
 * (CHAOS_OUTAGE_S, 8), --stall-s S (CHAOS_STALL_S, 90: the settle gives up after this long
 * without progress), --log-dir DIR (CHAOS_LOG_DIR: logs of scenarios that lost something).
 */
import fs from 'node:fs';
import { parseArgs } from 'node:util';
import type { Figures } from './ledger.js';
import { type ChaosOptions, DEFAULT_LOG_DIR, figureLine, runScenario, SCENARIOS } from './scenarios.js';
import { PrivatePostgres } from './servers.js';

export function chaosOptions(argv: string[], env: NodeJS.ProcessEnv): { scenarios: string[]; opts: ChaosOptions } {
  const { values } = parseArgs({
    args: argv,
    options: {
      scenario: { type: 'string' },
      commands: { type: 'string' },
      agents: { type: 'string' },
      'pause-s': { type: 'string' },
      'outage-s': { type: 'string' },
      'stall-s': { type: 'string' },
      'log-dir': { type: 'string' },
      help: { type: 'boolean' },
    },
    strict: true,
  });
  if (values.help) {
    console.log('npm run chaos -- [--scenario NAME[,NAME]] [--commands N] [--agents N] [--pause-s S] [--outage-s S]');
    for (const [name, s] of Object.entries(SCENARIOS)) console.log(`  ${name.padEnd(12)} ${s.what}`);
    process.exit(0);
  }
  const num = (v: string | undefined, e: string | undefined, dflt: number, what: string) => {
    const raw = v ?? e;
    if (raw === undefined || raw === '') return dflt;
    const n = Number(raw);
    if (!Number.isFinite(n) || n <= 0) throw new Error(`${what} must be a positive number (got ${raw})`);
    return n;
  };
  const which = values.scenario ?? env.CHAOS_SCENARIO ?? 'all';
  const scenarios = which === 'all' ? Object.keys(SCENARIOS) : which.split(',').map((s) => s.trim());
  for (const s of scenarios) {
    if (!SCENARIOS[s]) throw new Error(`unknown scenario ${s} (known: ${Object.keys(SCENARIOS).join(', ')}, all)`);
  }
  return {
    scenarios,
    opts: {
      commands: Math.floor(num(values.commands, env.CHAOS_COMMANDS, 10_000, '--commands')),
      agents: Math.floor(num(values.agents, env.CHAOS_AGENTS, 20, '--agents')),
      pauseMs: num(values['pause-s'], env.CHAOS_PAUSE_S, 60, '--pause-s') * 1000,
      outageMs: num(values['outage-s'], env.CHAOS_OUTAGE_S, 8, '--outage-s') * 1000,
      stallMs: num(values['stall-s'], env.CHAOS_STALL_S, 90, '--stall-s') * 1000,
      logDir: values['log-dir'] ?? env.CHAOS_LOG_DIR ?? DEFAULT_LOG_DIR,
      log: (line) => console.log(line),
    },
  };
}

/** Runs the scenarios one after another on one private PostgreSQL cluster. */
export async function runChaos(scenarios: string[], opts: ChaosOptions): Promise<Figures[]> {
  fs.mkdirSync(opts.logDir, { recursive: true });
  const pgs = await PrivatePostgres.create();
  const out: Figures[] = [];
  try {
    for (const name of scenarios) {
      let f: Figures;
      try {
        f = await runScenario(name, pgs, opts);
      } catch (err) {
        // a scenario that could not run (a process that never started) fails, the others still run
        opts.log(`${name}: could not run: ${(err as Error).message.split('\n')[0]}`);
        out.push(failedRun(name));
        continue;
      }
      opts.log(figureLine(f));
      opts.log(`  ${JSON.stringify(f.notes)}`);
      if (f.lostSamples.length > 0) opts.log(`  lost, e.g.: ${JSON.stringify(f.lostSamples.slice(0, 2))}`);
      out.push(f);
    }
  } finally {
    await pgs.destroy();
  }
  return out;
}

function failedRun(scenario: string): Figures {
  return {
    scenario,
    accepted: 0,
    terminal: 0,
    executed: 0,
    stored: 0,
    lost: 0,
    twice: 0,
    http5xx: 0,
    http4xx: 0,
    connErrors: 0,
    durationMs: 0,
    notes: { error: true },
    lostSamples: [],
    notRun: {},
  };
}

export function totalsLine(figs: Figures[]): string {
  const sum = (k: 'accepted' | 'terminal' | 'stored' | 'executed' | 'lost' | 'twice' | 'http5xx') =>
    figs.reduce((n, f) => n + f[k], 0);
  const s = (figs.reduce((n, f) => n + f.durationMs, 0) / 1000).toFixed(1);
  return (
    `total: accepted ${sum('accepted')}, terminal ${sum('terminal')}, results stored ${sum('stored')} / executed ` +
    `${sum('executed')}, lost ${sum('lost')}, executed twice ${sum('twice')}, 5xx ${sum('http5xx')}, duration ${s} s`
  );
}

async function main(): Promise<void> {
  const { scenarios, opts } = chaosOptions(process.argv.slice(2), process.env);
  console.log(`chaos: ${scenarios.join(', ')}; ${opts.commands} commands each, ${opts.agents} agents`);
  const figs = await runChaos(scenarios, opts);
  console.log(totalsLine(figs));
  const bad = figs.filter((f) => f.lost > 0 || f.twice > 0 || f.notes.error).map((f) => f.scenario);
  if (bad.length > 0) {
    console.log(`FAILED: ${bad.join(', ')} lost or ran commands twice, or could not run`);
    process.exitCode = 1;
  }
}

// run as the entry point only (chaos.test.ts imports runChaos)
if (process.argv[1] && import.meta.url === new URL(`file://${process.argv[1]}`).href) {
  main().catch((err: unknown) => {
    console.error(err);
    process.exit(1);
  });
}
