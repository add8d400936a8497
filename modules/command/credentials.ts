/**
 * Project credentials and presence from the status module (STATUS.credentials), reused for
 * `credentials_cache_ms` so a burst of sends to one project costs one request: sends that miss
 * at the same moment share the request in flight. Only answers are cached, never failures, and
 * never an answer asked for before a `forget` (status answers several requests at once, so an
 * answer read before a rotation can arrive after the rotation's event). The secrets stay in
 * memory here and are never logged.
 */
import type { ModuleBus } from '../../core/bus.js';
import { errorCode, HubError } from '../../core/errors.js';
import type { Clock } from '../../core/module.js';
import { type ProjectCredentials, STATUS } from '../status/contract/topics.js';

const MAX_ENTRIES = 10_000;
const REQUEST_TIMEOUT_MS = 5_000;

/** One STATUS.credentials request in flight. */
interface Asking {
  /** A send that misses may wait for it (false: asked with `fresh`, for its caller alone). */
  shared: boolean;
  /** Asked before a `forget`: its answer is not kept. */
  stale: boolean;
  answer: Promise<ProjectCredentials>;
}

export class CredentialsCache {
  private readonly entries = new Map<string, { at: number; value: ProjectCredentials }>();
  /**
   * Requests in flight, by project. A send that misses joins one not marked stale (`fresh`
   * ones are never joined); `forget` marks them all stale, and a stale answer serves the sends
   * that asked for it but is not kept.
   */
  private readonly asking = new Map<string, Set<Asking>>();

  constructor(
    private readonly bus: ModuleBus,
    private readonly clock: Clock,
    private readonly ttlMs: number,
  ) {}

  /** The project's credentials; CMD_ERR_UNKNOWN_PROJECT when status does not know it. */
  async get(projectId: string, fresh = false): Promise<ProjectCredentials> {
    const now = this.clock.now();
    const hit = this.entries.get(projectId);
    if (!fresh && hit && now - hit.at < this.ttlMs) return hit.value;
    const inFlight = this.asking.get(projectId) ?? new Set<Asking>();
    if (!fresh) for (const a of inFlight) if (a.shared && !a.stale) return a.answer;
    // answer is set before anything can look at it: ask() first yields at its request
    const a = { shared: !fresh, stale: false } as Asking;
    this.asking.set(projectId, inFlight.add(a));
    a.answer = this.ask(projectId, now, a, inFlight);
    return a.answer;
  }

  private async ask(projectId: string, now: number, a: Asking, inFlight: Set<Asking>): Promise<ProjectCredentials> {
    try {
      const value = await this.request(projectId);
      if (this.ttlMs > 0 && !a.stale) {
        if (this.entries.size >= MAX_ENTRIES) this.prune(now);
        this.entries.set(projectId, { at: now, value });
      }
      return value;
    } finally {
      inFlight.delete(a);
      if (inFlight.size === 0 && this.asking.get(projectId) === inFlight) this.asking.delete(projectId);
    }
  }

  private async request(projectId: string): Promise<ProjectCredentials> {
    let value: ProjectCredentials;
    try {
      value = await this.bus.request<ProjectCredentials>(
        STATUS.credentials,
        { project_id: projectId },
        { timeoutMs: REQUEST_TIMEOUT_MS },
      );
    } catch (err) {
      if (errorCode(err) === 'STATUS_ERR_NOT_FOUND') {
        this.entries.delete(projectId);
        throw new HubError('CMD_ERR_UNKNOWN_PROJECT', `project_id: unknown project ${projectId}`, {
          field: 'project_id',
          project_id: projectId,
        });
      }
      throw err;
    }
    if (!value || typeof value !== 'object' || !Array.isArray(value.secrets)) {
      throw new HubError('CMD_ERR_UNKNOWN_PROJECT', `project_id: no credentials for project ${projectId}`, {
        field: 'project_id',
        project_id: projectId,
      });
    }
    return value;
  }

  /** Forgets a project (its state changed: the next send must see the new one). */
  forget(projectId: string): void {
    // a send from now on asks anew rather than join a request that may predate the change
    for (const a of this.asking.get(projectId) ?? []) a.stale = true;
    this.entries.delete(projectId);
  }

  private prune(now: number): void {
    for (const [k, e] of this.entries) if (now - e.at >= this.ttlMs) this.entries.delete(k);
    if (this.entries.size >= MAX_ENTRIES) this.entries.clear();
  }
}
