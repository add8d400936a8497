/**
 * Project credentials and presence from the status module (STATUS.credentials), reused for
 * `credentials_cache_ms` so a burst of sends to one project costs one request. Only answers are
 * cached, never failures. The secrets stay in memory here and are never logged.
 */
import type { ModuleBus } from '../../core/bus.js';
import { errorCode, HubError } from '../../core/errors.js';
import type { Clock } from '../../core/module.js';
import { type ProjectCredentials, STATUS } from '../status/contract/topics.js';

const MAX_ENTRIES = 10_000;
const REQUEST_TIMEOUT_MS = 5_000;

export class CredentialsCache {
  private readonly entries = new Map<string, { at: number; value: ProjectCredentials }>();

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
    if (this.ttlMs > 0) {
      if (this.entries.size >= MAX_ENTRIES) this.prune(now);
      this.entries.set(projectId, { at: now, value });
    }
    return value;
  }

  /** Forgets a project (its state changed: the next send must see the new one). */
  forget(projectId: string): void {
    this.entries.delete(projectId);
  }

  private prune(now: number): void {
    for (const [k, e] of this.entries) if (now - e.at >= this.ttlMs) this.entries.delete(k);
    if (this.entries.size >= MAX_ENTRIES) this.entries.clear();
  }
}
