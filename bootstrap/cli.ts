#!/usr/bin/env node
/**
 * `gmq-hub`: the operator CLI (package.json `bin`). `gmq-hub start` runs the hub as `npm start`
 * does; every other command talks to a running hub over REST and its WebSocket (bootstrap/cli/).
 *
 * Exit codes: 0 done; 1 the hub answered with an error (its code is printed), could not be
 * reached, or a `send --sync` command did not complete; 2 a usage error.
 *
 * @example
 *   gmq-hub projects add plant-7 --name "Plant 7"
 *   HUB_URL=http://hub:8080 HUB_API_TOKEN=… gmq-hub send --sync plant-7 echo '{"hi":1}'
 */
import { readFileSync } from 'node:fs';
import { helpFor, resolve, UsageError, usageLine } from './cli/args.js';
import { ApiError, defaultUrl, HubClient, normaliseBase, UnreachableError } from './cli/client.js';
import { COMMANDS as BASE_COMMANDS, GROUPS as BASE_GROUPS, type CliContext } from './cli/commands.js';
import { HISTORY_COMMANDS } from './cli/history-commands.js';
import { JOB_COMMANDS, JOBS_GROUP } from './cli/jobs.js';

// each command file imports commands.ts for its helpers; the list is put together here, so none imports back
const COMMANDS = [...BASE_COMMANDS, ...HISTORY_COMMANDS, ...JOB_COMMANDS];
const GROUPS = [...BASE_GROUPS, JOBS_GROUP];

/** Runs one command line; resolves to the exit code, or 'running' when `start` now owns the process. */
async function cli(argv: readonly string[], env: NodeJS.ProcessEnv = process.env): Promise<number | 'running'> {
  const out = (text: string) => {
    process.stdout.write(text);
  };
  const err = (line: string) => {
    process.stderr.write(`${line}\n`);
  };
  try {
    const r = resolve(argv, COMMANDS, GROUPS);
    if (r.kind === 'help') {
      out(r.text);
      return 0;
    }
    if (r.kind === 'version') {
      out(`${version()}\n`);
      return 0;
    }
    const { values } = r.parsed;
    const url = (values.url as string | undefined) ?? defaultUrl(env);
    const token = (values.token as string | undefined) ?? env.HUB_API_TOKEN;
    let client: HubClient | undefined;
    let interrupt: AbortController | undefined;
    const ctx: CliContext = {
      client() {
        if (client) return client;
        const base = normaliseBase(url);
        const from = values.url !== undefined ? '--url' : 'HUB_URL';
        if (!base) throw new UsageError(`${from}: "${url}" is not an http:// or https:// URL`, r.spec.path);
        client = new HubClient(base, token?.trim() || undefined);
        return client;
      },
      json: values.json === true,
      out,
      err,
      interrupted() {
        // Only a command that asks gets Ctrl-C as a signal to end cleanly (watch); the others
        // keep Node's default (SIGINT ends the process at once). A second Ctrl-C always does.
        if (interrupt) return interrupt.signal;
        const ac = new AbortController();
        interrupt = ac;
        const onSignal = () => {
          if (ac.signal.aborted) process.exit(130);
          ac.abort();
        };
        process.on('SIGINT', onSignal);
        process.on('SIGTERM', onSignal);
        return ac.signal;
      },
    };
    return await r.spec.run(r.parsed, ctx);
  } catch (e) {
    if (e instanceof UsageError) {
      err(`gmq-hub: ${e.message}`);
      const spec = e.command && COMMANDS.find((c) => c.path.join(' ') === e.command?.join(' '));
      if (!e.command && argv.filter((a) => !a.startsWith('-')).length === 0) err(helpFor([], COMMANDS, GROUPS));
      else if (spec) err(`usage: ${usageLine(spec as never)}\n(see: gmq-hub ${spec.path.join(' ')} --help)`);
      else err(`(see: gmq-hub ${e.command?.length ? `${e.command.join(' ')} ` : ''}--help)`);
      return 2;
    }
    if (e instanceof ApiError) {
      err(`gmq-hub: ${e.code}: ${e.message}${HINTS[e.code] ?? ''}`);
      return 1;
    }
    if (e instanceof UnreachableError) {
      err(`gmq-hub: ${e.message}`);
      return 1;
    }
    err(`gmq-hub: unexpected error: ${(e as Error)?.stack ?? String(e)}`);
    return 1;
  }
}

/** What to do next, for the errors an operator meets most (the message itself is the hub's). */
const HINTS: Record<string, string> = {
  AUTH_ERR_TOKEN: ' (set --token or HUB_API_TOKEN)',
  AUTH_ERR_FORBIDDEN: ' (the token is valid, but its role or projects in the hub’s web.tokens do not allow this)',
  CMD_ERR_PROJECT_OFFLINE: ' (with the CLI: --queue-until T)',
};

function version(): string {
  try {
    const pkg = JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version: string };
    return pkg.version;
  } catch {
    return 'unknown';
  }
}

/** Exits once what was written has reached stdout and stderr (pipes may be asynchronous). */
async function exit(code: number): Promise<never> {
  await new Promise<void>((r) => process.stdout.write('', () => r()));
  await new Promise<void>((r) => process.stderr.write('', () => r()));
  process.exit(code);
}

// `head` closing our stdout is not an error worth a stack trace
process.stdout.on('error', (e: NodeJS.ErrnoException) => {
  if (e.code === 'EPIPE') process.exit(0);
});

const result = await cli(process.argv.slice(2));
if (result !== 'running') await exit(result);
