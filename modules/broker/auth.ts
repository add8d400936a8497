import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import { LRUCache } from 'lru-cache';
import type { ModuleBus } from '../../core/bus.js';
import { errorCode } from '../../core/errors.js';
import { STATUS } from '../status/contract/topics.js';

/** Who a connection is, decided once at CONNECT. */
export type Identity = { kind: 'hub' } | { kind: 'agent'; projectId: string } | { kind: 'open' };

/** The outcome of checking a CONNECT's credentials; `returnCode` is the CONNACK code [MQTT-3.2.2.3]. */
export type AuthResult =
  | { ok: true; identity: Identity }
  | { ok: false; returnCode: 3 | 4 | 5; reason: string; projectId?: string };

let processHubPassword: string | undefined;

/**
 * The hub's own password when config gives none: made once per process, so a restarted broker
 * and the bridge that fetched it earlier keep agreeing. Never logged.
 */
export function hubPasswordFor(configured: string | undefined): string {
  if (configured) return configured;
  processHubPassword ??= randomBytes(24).toString('base64url');
  return processHubPassword;
}

const sha256 = (s: string): Buffer => createHash('sha256').update(s, 'utf8').digest();

export interface AuthenticatorOptions {
  hubUsername: string;
  hubPassword: string;
  timeoutMs: number;
  cacheMs: number;
  cacheMax: number;
  now: () => number;
}

/**
 * Checks CONNECT credentials: the hub's own (compared in constant time, here), or an agent's
 * (username = project id, password = deriveMqttPassword) through STATUS.authenticate on the bus.
 * Positive answers are reused for `cacheMs`, keyed by a hash of username + password so the cache
 * never holds a password. No answer (no status module, timeout, error) refuses: fail closed.
 */
export class Authenticator {
  private readonly hubUser: string;
  private readonly hubDigest: Buffer;
  /**
   * Accepted logins: an LRU cache (a Map whose oldest key is popped through `keys().next()` walks
   * V8's holes once full: docs/benchmarks.md "Bounded maps that stay fast when full").
   */
  private readonly cache: LRUCache<string, { projectId: string; until: number }>;

  constructor(
    private readonly bus: ModuleBus,
    private readonly opts: AuthenticatorOptions,
    private readonly onUnavailable: (err: unknown) => void,
  ) {
    this.hubUser = opts.hubUsername;
    this.hubDigest = sha256(opts.hubPassword);
    this.cache = new LRUCache({ max: Math.max(1, opts.cacheMax) });
  }

  async check(username: string | undefined, password: Buffer | undefined): Promise<AuthResult> {
    if (!username) return { ok: false, returnCode: 5, reason: 'anonymous' };
    const pw = password ? password.toString('utf8') : '';
    if (username === this.hubUser) {
      // the hub's name never falls through to the project lookup, whatever projects exist
      return timingSafeEqual(sha256(pw), this.hubDigest)
        ? { ok: true, identity: { kind: 'hub' } }
        : { ok: false, returnCode: 4, reason: 'bad_credentials' };
    }
    const key = createHash('sha256').update(username).update('\0').update(pw).digest('base64');
    const now = this.opts.now();
    const hit = this.cache.get(key);
    if (hit && hit.until > now) return { ok: true, identity: { kind: 'agent', projectId: hit.projectId } };
    if (hit) this.cache.delete(key);

    let reply: { ok?: unknown; project_id?: unknown } | undefined;
    try {
      reply = await this.bus.request<{ ok?: unknown; project_id?: unknown }>(
        STATUS.authenticate,
        { username, password: pw },
        { timeoutMs: this.opts.timeoutMs },
      );
    } catch (err) {
      this.onUnavailable(err);
      // CONNACK 3 "server unavailable": the credentials may be fine, the agent should retry later
      return { ok: false, returnCode: 3, reason: `auth_unavailable:${errorCode(err) ?? 'error'}` };
    }
    const projectId = typeof reply?.project_id === 'string' ? reply.project_id : username;
    if (reply?.ok !== true || projectId !== username) {
      return { ok: false, returnCode: 4, reason: 'bad_credentials' };
    }
    // full, the login used longest ago goes first
    if (this.opts.cacheMs > 0) this.cache.set(key, { projectId, until: now + this.opts.cacheMs });
    return { ok: true, identity: { kind: 'agent', projectId } };
  }

  /**
   * Drops every cached login of a project (STATUS.credentialsChanged): a disabled project's
   * password, or a rotated-out one, must not log in from the cache after the change.
   */
  forget(projectId: string): number {
    const keys: string[] = [];
    for (const [key, v] of this.cache.entries()) if (v.projectId === projectId) keys.push(key);
    for (const key of keys) this.cache.delete(key);
    return keys.length;
  }
}

export function sameIdentity(a: Identity | undefined, b: Identity | undefined): boolean {
  if (!a || !b || a.kind !== b.kind) return false;
  return a.kind !== 'agent' || a.projectId === (b as { projectId: string }).projectId;
}
