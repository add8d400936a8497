import { z } from 'zod';
import { isProjectPattern, MAX_PROJECT_PATTERNS } from '../project-scope.js';
import { ROLES, type Role } from './permissions.js';
import type { TokenEntry } from './token-gate.js';

const ms = (min: number) => z.number().int().min(min);

// config.yml passes `${HUB_API_TOKEN:-}`: unset is '', and an all-digit token re-types as a number.
const tokenText = z.union([z.string(), z.number()]).transform(String);

/** A project id or a glob of them (`*` any run, `?` one character; project-scope.ts). */
const projectPattern = z.string().min(1).max(128).refine(isProjectPattern, {
  error: 'a project id or glob (`*`, `?`): no `/`, `+`, `#`, NUL or control characters',
});

/** A token with a role (and optionally the projects it is limited to). */
const roleToken = z
  .object({
    token: tokenText.pipe(z.string().min(1)),
    role: z.enum(ROLES as [Role, ...Role[]]),
    projects: z.array(projectPattern).min(1).max(MAX_PROJECT_PATTERNS).optional(),
  })
  .strict();

/**
 * `replay_idle_s` of both feeds (web's `ws.replay_idle_s`, grpc's `replay_idle_s`): seconds the
 * replay buffer goes on keeping events after the last client left; null keeps them always, with
 * or without clients (README "WebSocket", its resume). The feed takes it as `idleMsOf(…)`.
 */
export const replayIdleSeconds = ms(0).max(86_400).nullable().default(600);

/**
 * The settings web and grpc share, under one name each with one meaning (zod shape, spread into
 * each module's schema). `max_sync_wait_ms` and `close_grace_ms` have no zod default here: their
 * defaults are applied by `resolveRenamed` (renamed-settings.ts), which must see whether the block
 * set them or their old names.
 */
export const interfaceSettings = {
  /**
   * Accepted bearer tokens (several, so one can be rotated without downtime); none → open API on
   * loopback only. A plain string is an `admin` token; `{token, role, projects?}` gives a role
   * (viewer, operator, admin) and optionally limits the token to some projects (ids or globs).
   */
  tokens: z.array(z.union([z.string().min(1), roleToken])).default([]),
  /** One more token, as the default config.yml passes it (`${HUB_API_TOKEN:-}`); '' means none. */
  token: tokenText.optional(),
  /** A sync call's wait when it gives no `wait_ms` (or its `timeout_ms` when that is longer). */
  default_sync_wait_ms: ms(1).default(30_000),
  /** Longest wait a sync call may have (bounds the server-side resources of one call). */
  max_sync_wait_ms: ms(1).optional(),
  /**
   * A waiting sync call re-reads its command from the database this often: the safety net for a
   * result event that never came (its own instance's or, announced, another's).
   */
  sync_poll_ms: ms(1).default(1_000),
  /** How long a call waits for the module that answers it over the bus. */
  request_timeout_ms: ms(1).default(10_000),
  /** On stop: how long running calls may finish before their connections are cut. */
  close_grace_ms: ms(0).optional(),
};

/** The token settings as read from the config (`token` filled from HUB_API_TOKEN by the default config.yml). */
export interface TokenSettings {
  readonly tokens: ReadonlyArray<string | { token: string; role: Role; projects?: readonly string[] }>;
  readonly token?: string;
}

/**
 * The tokens in force: `tokens` plus a non-empty `token` (trimmed), each once, named by its place
 * in the settings (`tokens[0]`, `token`) so a principal says which one matched. Plain strings and
 * `token` are `admin` on every project, as every token was before roles.
 */
export function tokenEntries(cfg: TokenSettings): TokenEntry[] {
  const out: TokenEntry[] = cfg.tokens.map((t, i) =>
    typeof t === 'string'
      ? { id: `tokens[${i}]`, token: t, role: 'admin', projects: null }
      : { id: `tokens[${i}]`, token: t.token, role: t.role, projects: t.projects ? [...t.projects] : null },
  );
  const one = cfg.token?.trim();
  if (one) out.push({ id: 'token', token: one, role: 'admin', projects: null });
  const seen = new Set<string>();
  return out.filter((e) => !seen.has(e.token) && seen.add(e.token));
}

/**
 * A config edit the interfaces take in place (ModuleInstance.reconfigure): only `tokens` / `token`
 * changed, and tokens stay configured or stay absent (the listen address depends on that). The
 * new table, or null when the module must restart instead.
 */
export function tokenOnlyEdit<C extends TokenSettings>(prev: C, next: C, gateEnabled: boolean): TokenEntry[] | null {
  const rest = (c: C) => JSON.stringify({ ...c, tokens: null, token: null });
  if (rest(prev) !== rest(next)) return null;
  const entries = tokenEntries(next);
  return entries.length > 0 === gateEnabled ? entries : null;
}
