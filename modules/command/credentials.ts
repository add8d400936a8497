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

export class CredentialsCache {
  private readonly entries = new Map<string, { at: number; value: ProjectCredentials }>();
  /** Requests in flight, by project: the sends that miss together wait for the same answer. */
  private readonly asking = new Map<string, Promise<ProjectCredentials>>();
  /** Each request's mark, by project: `forget` marks them stale, and a stale answer is used but not kept. */
  private readonly marks = new Map<string, Set<{ stale: boolean }>>();

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
    const inFlight = fresh ? undefined : this.asking.get(projectId);
    if (inFlight) return inFlight;
    const asked = this.ask(projectId, now);
    if (!fresh) {
      this.asking.set(projectId, asked);
      const done = () => {
        if (this.asking.get(projectId) === asked) this.asking.delete(projectId);
      };
      asked.then(done, done);
    }
    return asked;
  }

  private async ask(projectId: string, now: number): Promise<ProjectCredentials> {
    const mark = { stale: false };
    const marks = this.marks.get(projectId) ?? new Set<{ stale: boolean }>();
    this.marks.set(projectId, marks);
    marks.add(mark);
    try {
      const value = await this.request(projectId);
      if (this.ttlMs > 0 && !mark.stale) {
        if (this.entries.size >= MAX_ENTRIES) this.prune(now);
        this.entries.set(projectId, { at: now, value });
      }
      return value;
    } finally {
      marks.delete(mark);
      if (marks.size === 0 && this.marks.get(projectId) === marks) this.marks.delete(projectId);
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
    for (const mark of this.marks.get(projectId) ?? []) mark.stale = true;
    this.entries.delete(projectId);
    // a send from now on asks anew rather than join a request that may predate the change
    this.asking.delete(projectId);
  }

  private prune(now: number): void {
    for (const [k, e] of this.entries) if (now - e.at >= this.ttlMs) this.entries.delete(k);
    if (this.entries.size >= MAX_ENTRIES) this.entries.clear();
  }
}
