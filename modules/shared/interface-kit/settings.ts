import { z } from 'zod';
import type { TokenEntry } from './token-gate.js';

const ms = (min: number) => z.number().int().min(min);

// config.yml passes `${HUB_API_TOKEN:-}`: unset is '', and an all-digit token re-types as a number.
const tokenText = z.union([z.string(), z.number()]).transform(String);

/**
 * The settings web and grpc share, under one name each with one meaning (zod shape, spread into
 * each module's schema). `max_sync_wait_ms` and `close_grace_ms` have no zod default here: their
 * defaults are applied by `resolveRenamed` (renamed-settings.ts), which must see whether the block
 * set them or their old names.
 */
export const interfaceSettings = {
  /** Accepted bearer tokens (several, so one can be rotated without downtime); none → open API on loopback only. */
  tokens: z.array(z.string().min(1)).default([]),
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
  readonly tokens: readonly string[];
  readonly token?: string;
}

/**
 * The tokens in force: `tokens` plus a non-empty `token` (trimmed), each once, named by its place
 * in the settings (`tokens[0]`, `token`) so a principal says which one matched.
 */
export function tokenEntries(cfg: TokenSettings): TokenEntry[] {
  const out: TokenEntry[] = cfg.tokens.map((token, i) => ({ id: `tokens[${i}]`, token }));
  const one = cfg.token?.trim();
  if (one) out.push({ id: 'token', token: one });
  const seen = new Set<string>();
  return out.filter((e) => !seen.has(e.token) && seen.add(e.token));
}
