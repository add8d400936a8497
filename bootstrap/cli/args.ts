/**
 * Command-line parsing for `gmq-hub` on Node's own `util.parseArgs`: the command words are found
 * first (options may come before or after them), then the rest is parsed strictly against that
 * command's options plus the global ones. Help text is generated from the same specs, so every
 * command and group answers `--help`.
 */
import { type ParseArgsConfig, parseArgs } from 'node:util';

/** A mistake in the command line: printed with the usage, exit code 2. */
export class UsageError extends Error {
  constructor(
    message: string,
    /** The command whose usage to show (its words), when known. */
    readonly command?: readonly string[],
  ) {
    super(message);
    this.name = 'UsageError';
  }
}

export interface OptionSpec {
  type: 'string' | 'boolean';
  multiple?: boolean;
  short?: string;
  /** Placeholder shown in help for a string option (`--name <N>`). */
  value?: string;
  description: string;
}

export type Values = Record<string, string | boolean | string[] | boolean[] | undefined>;

export interface Parsed {
  values: Values;
  positionals: string[];
}

export interface CommandSpec<C = unknown> {
  /** The command words: `['projects', 'add']`. */
  path: readonly string[];
  /** Arguments after the words, as shown in help: `<id> [--name N]`. */
  args: string;
  summary: string;
  /** More lines of help. */
  details?: readonly string[];
  options?: Record<string, OptionSpec>;
  /** Positional arguments: at least `min`, at most `max`. */
  positionals: { min: number; max: number };
  /** `--json` prints the API's JSON answer instead of a table. */
  json?: boolean;
  examples: readonly string[];
  /** An exit code, or 'running' when the process now belongs to something else (`start`: the hub). */
  run(parsed: Parsed, ctx: C): Promise<number | 'running'>;
}

export interface GroupSpec {
  name: string;
  summary: string;
  /** The subcommand run when the group is named alone (`modules` → `modules list`). */
  defaultSub?: string;
}

/** Options every command takes. */
export const GLOBAL_OPTIONS: Record<string, OptionSpec> = {
  url: {
    type: 'string',
    value: 'URL',
    description: 'the hub (default $HUB_URL, else http://127.0.0.1:$HUB_HTTP_PORT, port 8080 when unset)',
  },
  token: { type: 'string', value: 'TOKEN', description: 'API bearer token (default $HUB_API_TOKEN)' },
  help: { type: 'boolean', short: 'h', description: 'show this help' },
};

const JSON_OPTION: OptionSpec = { type: 'boolean', description: 'print the API’s JSON answer instead of a table' };

export function optionsOf(spec: CommandSpec<never>): Record<string, OptionSpec> {
  return { ...(spec.options ?? {}), ...(spec.json ? { json: JSON_OPTION } : {}), ...GLOBAL_OPTIONS };
}

export type Resolved<C> =
  | { kind: 'command'; spec: CommandSpec<C>; parsed: Parsed }
  | { kind: 'help'; text: string }
  | { kind: 'version' };

/**
 * Finds the command named by `argv` and parses its options.
 *
 * @example
 *   resolve(['projects', 'add', 'plant-7', '--name', 'Plant 7'], commands, groups)
 *   // → { kind: 'command', spec: <projects add>, parsed: { values: { name: 'Plant 7' }, positionals: ['plant-7'] } }
 */
export function resolve<C>(argv: readonly string[], commands: readonly CommandSpec<C>[], groups: readonly GroupSpec[]) {
  const valueOptions = new Set<string>();
  for (const c of commands) {
    for (const [name, o] of Object.entries(optionsOf(c as CommandSpec<never>))) {
      if (o.type === 'string') {
        valueOptions.add(`--${name}`);
        if (o.short) valueOptions.add(`-${o.short}`);
      }
    }
  }
  // The positional words, with their indexes, skipping options and the values they take.
  const words: Array<{ word: string; index: number }> = [];
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === '--') {
      for (let j = i + 1; j < argv.length; j++) words.push({ word: argv[j], index: j });
      break;
    }
    if (a.startsWith('-') && a.length > 1) {
      if (valueOptions.has(a)) i++;
      continue;
    }
    words.push({ word: a, index: i });
  }
  const wantsHelp = argv.some((a) => a === '--help' || a === '-h');
  const first = words[0]?.word;

  if (first === undefined || first === 'help') {
    const topic = first === 'help' ? words.slice(1).map((w) => w.word) : [];
    if (first === undefined && argv.includes('--version')) return { kind: 'version' } as const;
    if (first === undefined && !wantsHelp) throw new UsageError('no command given');
    return { kind: 'help', text: helpFor(topic, commands, groups) } as const;
  }

  const group = groups.find((g) => g.name === first);
  let spec: CommandSpec<C> | undefined;
  let used = 1;
  if (group) {
    const sub = words[1]?.word;
    spec = commands.find((c) => c.path[0] === first && c.path[1] === sub);
    used = 2;
    if (!spec) {
      if (sub === undefined && wantsHelp) return { kind: 'help', text: groupHelp(group, commands) } as const;
      if (sub === undefined && group.defaultSub) {
        spec = commands.find((c) => c.path[0] === first && c.path[1] === group.defaultSub);
        used = 1;
      } else {
        const which = subsOf(group, commands).join(', ');
        throw new UsageError(
          sub === undefined ? `${first}: which one? (${which})` : `${first}: unknown subcommand "${sub}" (${which})`,
          [first],
        );
      }
    }
  } else {
    spec = commands.find((c) => c.path.length === 1 && c.path[0] === first);
  }
  // the hint "(see: gmq-hub --help)" is the CLI's, printed once under every usage error
  if (!spec) throw new UsageError(`unknown command "${first}"`);

  const skip = new Set(words.slice(0, used).map((w) => w.index));
  const rest = argv.filter((_, i) => !skip.has(i));
  if (wantsHelp) return { kind: 'help', text: commandHelp(spec) } as const;

  let parsed: Parsed;
  try {
    const r = parseArgs({
      args: rest,
      options: optionsOf(spec as CommandSpec<never>) as ParseArgsConfig['options'],
      allowPositionals: true,
      strict: true,
    });
    parsed = { values: r.values as Values, positionals: r.positionals };
  } catch (err) {
    throw new UsageError(parseArgsMessage(err), spec.path);
  }
  const n = parsed.positionals.length;
  if (n < spec.positionals.min) {
    const names = spec.args.replace(/\[--[^\]]*\]/g, '').match(/<[^>]+>/g) ?? [];
    throw new UsageError(`missing ${names[n] ?? 'argument'}`, spec.path);
  }
  if (n > spec.positionals.max) {
    throw new UsageError(`unexpected argument "${parsed.positionals[spec.positionals.max]}"`, spec.path);
  }
  return { kind: 'command', spec, parsed } as const;
}

function parseArgsMessage(err: unknown): string {
  const e = err as { code?: string; message?: string };
  const msg = String(e.message ?? err);
  // node's messages are long and sometimes suggest `--` tricks; keep their first sentence
  if (e.code === 'ERR_PARSE_ARGS_UNKNOWN_OPTION') {
    const m = /Unknown option '([^']+)'/.exec(msg);
    return m ? `unknown option ${m[1]}` : msg;
  }
  if (e.code === 'ERR_PARSE_ARGS_INVALID_OPTION_VALUE') {
    const m = /Option '([^']+)'/.exec(msg);
    const flag = m?.[1].replace(/^-\w, /, '').replace(/ <value>$/, '');
    if (flag && msg.includes('argument missing')) return `${flag} needs a value`;
    if (flag && msg.includes('does not take an argument')) return `${flag} takes no value`;
  }
  return msg.split('\n')[0];
}

function subsOf(group: GroupSpec, commands: readonly CommandSpec<unknown>[]): string[] {
  return commands.filter((c) => c.path[0] === group.name && c.path.length === 2).map((c) => c.path[1]);
}

export function usageLine(spec: CommandSpec<never>): string {
  return `gmq-hub ${spec.path.join(' ')}${spec.args ? ` ${spec.args}` : ''}${spec.json ? ' [--json]' : ''}`;
}

function optionLines(options: Record<string, OptionSpec>): string[] {
  const rows = Object.entries(options).map(([name, o]) => {
    const flag = `${o.short ? `-${o.short}, ` : ''}--${name}${o.type === 'string' ? ` <${o.value ?? 'value'}>` : ''}`;
    return [flag, `${o.description}${o.multiple ? ' (repeatable)' : ''}`];
  });
  const w = Math.max(...rows.map((r) => r[0].length));
  return rows.map(([f, d]) => `  ${f.padEnd(w)}  ${d}`);
}

export function commandHelp(spec: CommandSpec<never>): string {
  const own = { ...(spec.options ?? {}), ...(spec.json ? { json: JSON_OPTION } : {}) };
  return [
    `Usage: ${usageLine(spec)}`,
    '',
    spec.summary,
    ...(spec.details?.length ? ['', ...spec.details] : []),
    ...(Object.keys(own).length ? ['', 'Options:', ...optionLines(own)] : []),
    '',
    'Global options:',
    ...optionLines(GLOBAL_OPTIONS),
    '',
    'Examples:',
    ...spec.examples.map((e) => `  ${e}`),
    '',
  ].join('\n');
}

function groupHelp(group: GroupSpec, commands: readonly CommandSpec<unknown>[]): string {
  const subs = commands.filter((c) => c.path[0] === group.name);
  const w = Math.max(...subs.map((c) => usageLine(c as CommandSpec<never>).length));
  return [
    `Usage: gmq-hub ${group.name} <subcommand> [options]`,
    '',
    group.summary,
    '',
    'Subcommands:',
    ...subs.map((c) => `  ${usageLine(c as CommandSpec<never>).padEnd(w)}  ${c.summary}`),
    '',
    `Run \`gmq-hub ${group.name} <subcommand> --help\` for one of them.`,
    '',
  ].join('\n');
}

const TOP_TAIL = [
  'Environment:',
  '  HUB_URL        the hub’s base URL (default http://127.0.0.1:$HUB_HTTP_PORT)',
  '  HUB_HTTP_PORT  the port of that default (8080 when unset), as `npm start` serves it',
  '  HUB_API_TOKEN  bearer token sent on REST and WebSocket calls',
  '',
  'Exit codes: 0 done · 1 the hub refused (the error code is printed), could not be reached,',
  '            or a --sync command did not complete · 2 a usage error',
  '',
  'Run `gmq-hub <command> --help` for one command.',
  '',
];

export function helpFor(
  topic: readonly string[],
  commands: readonly CommandSpec<unknown>[],
  groups: readonly GroupSpec[],
): string {
  if (topic.length > 0) {
    const spec = commands.find((c) => c.path.join(' ') === topic.join(' '));
    if (spec) return commandHelp(spec as CommandSpec<never>);
    const group = groups.find((g) => g.name === topic[0]);
    if (group && topic.length === 1) return groupHelp(group, commands);
    throw new UsageError(`no help for "${topic.join(' ')}": unknown command`);
  }
  const lines = commands.map((c) => [c.path.join(' '), c.summary]);
  const w = Math.max(...lines.map((l) => l[0].length));
  return [
    'Usage: gmq-hub <command> [options]',
    '',
    'The gmq-hub operator CLI: runs the hub, or talks to a running one over REST and WebSocket.',
    '',
    'Commands:',
    ...lines.map(([u, s]) => `  ${u.padEnd(w)}  ${s}`),
    '',
    'Global options:',
    ...optionLines({ ...GLOBAL_OPTIONS, version: { type: 'boolean', description: 'print the version' } }),
    '',
    ...TOP_TAIL,
  ].join('\n');
}
