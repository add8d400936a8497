/**
 * A job's targets resolved against the status module's projects, over the bus (never its
 * tables): `project_ids` as named (each must exist when the job is created), `all` = every
 * enabled project, `metadata` = every enabled project whose metadata holds the given pairs.
 * Each target gets the command id it will be sent under, derived from the job id and the
 * project id, so whichever driver sends it, and however often, it is one command.
 */
import { createHash } from 'node:crypto';
import type { ModuleBus } from '../../core/bus.js';
import { errorCode, HubError } from '../../core/errors.js';
import { type ProjectView, STATUS } from '../status/contract/topics.js';
import { MAX_TARGETS } from './contract/schemas.js';
import type { JobTargets } from './contract/topics.js';

/** Projects asked for at once when checking a list of ids. */
const CHECK_PARALLEL = 32;
const PAGE = 1000;

/**
 * The command id of one target: a UUID (version 8, RFC 9562 §5.8: custom) from SHA-256 of the
 * job and project ids. Deterministic, so a second driver sends the id the first one did.
 */
export function targetCommandId(jobId: string, projectId: string): string {
  const h = createHash('sha256').update(`${jobId}\0${projectId}`, 'utf8').digest();
  h[6] = (h[6] & 0x0f) | 0x80;
  h[8] = (h[8] & 0x3f) | 0x80;
  const x = h.subarray(0, 16).toString('hex');
  return `${x.slice(0, 8)}-${x.slice(8, 12)}-${x.slice(12, 16)}-${x.slice(16, 20)}-${x.slice(20, 32)}`;
}

export class TargetResolver {
  constructor(
    private readonly bus: ModuleBus,
    private readonly timeoutMs: number,
  ) {}

  /**
   * The project ids a selector names now, in a stable order. `checkIds`: a `project_ids` list is
   * checked against the projects (at creation); at a scheduled start an id gone meanwhile is kept
   * and its send fails (counted as a failed target).
   */
  async resolve(t: JobTargets, checkIds: boolean): Promise<string[]> {
    if (t.project_ids !== undefined) {
      const ids = [...new Set(t.project_ids)];
      if (checkIds) await this.checkExist(ids);
      return ids;
    }
    const filter = t.metadata !== undefined ? { metadata: t.metadata } : {};
    const ids: string[] = [];
    for (let offset = 0; ; offset += PAGE) {
      const page = await this.bus.request<{ items: ProjectView[]; total: number }>(
        STATUS.list,
        { ...filter, limit: PAGE, offset },
        { timeoutMs: this.timeoutMs },
      );
      for (const p of page.items) ids.push(p.project_id);
      if (ids.length > MAX_TARGETS) {
        throw new HubError(
          'JOB_ERR_INVALID',
          `targets: match ${page.total} projects, more than the ${MAX_TARGETS} one job may have; narrow them by metadata`,
          { field: 'targets' },
        );
      }
      if (page.items.length < PAGE || offset + PAGE >= page.total) break;
    }
    return ids;
  }

  private async checkExist(ids: string[]): Promise<void> {
    for (let i = 0; i < ids.length; i += CHECK_PARALLEL) {
      const chunk = ids.slice(i, i + CHECK_PARALLEL);
      const found = await Promise.all(
        chunk.map((project_id) =>
          this.bus.request(STATUS.get, { project_id }, { timeoutMs: this.timeoutMs }).then(
            () => true,
            (err: unknown) => {
              if (errorCode(err) === 'STATUS_ERR_NOT_FOUND') return false;
              throw err;
            },
          ),
        ),
      );
      const missing = chunk.find((_, j) => !found[j]);
      if (missing !== undefined) {
        throw new HubError('JOB_ERR_UNKNOWN_PROJECT', `targets.project_ids: unknown project ${missing}`, {
          field: 'targets.project_ids',
          project_id: missing,
        });
      }
    }
  }
}
