/**
 * How an interface module writes an audit record for an action it is about to answer
 * (README "Audit trail"): after the action, before the answer. Answered `ok` means the row is
 * committed. A refused action's record is best effort (the action changed nothing). An action
 * that was done (`required`: its handler returned, or a sync send was accepted) whose record cannot
 * be written is answered AUDIT_ERR_UNAVAILABLE instead, so no done action is answered without its row. With no audit module configured at all nobody is asked
 * (`skipped`): the hub then runs without an audit trail, and says so once at start.
 */
import type { ModuleBus } from '../../../core/bus.js';
import { errorCode, HubError } from '../../../core/errors.js';
import { AUDIT, type AuditRecord } from './topics.js';

export type TrailOutcome = 'written' | 'skipped';

export async function writeAudit(
  bus: ModuleBus,
  rec: AuditRecord,
  timeoutMs: number,
  required: boolean,
): Promise<TrailOutcome> {
  try {
    await bus.request(AUDIT.record, rec, { timeoutMs });
    return 'written';
  } catch (err) {
    if (errorCode(err) === 'BUS_ERR_NO_RESPONDER') return 'skipped';
    if (!required) return 'skipped';
    throw new HubError(
      'AUDIT_ERR_UNAVAILABLE',
      `${rec.action} was done, but its audit record could not be written (${errorCode(err) ?? 'error'}); ` +
        `targets: ${JSON.stringify(rec.targets)}`,
      { action: rec.action, ...rec.targets },
      { cause: err },
    );
  }
}

/** Who answered, as the interface's token gate admitted them (interface-kit token-gate `Principal`). */
export interface AuditPrincipal {
  readonly token_id: string;
  readonly role: string;
}

/** What an interface declares for one operator action: its name, and the ids to record. */
export interface AuditSpec<I = unknown> {
  action: AuditRecord['action'];
  /**
   * The ids the action was about, from the checked request and, when it succeeded, the answer
   * (a created project's id, a sent command's id). Ids only: never a payload or a secret.
   */
  targets(input: I, answer: unknown): Record<string, string | undefined>;
}

/** Keys of `from` that hold strings, as targets (absent ones left out). */
export function pickIds(from: unknown, keys: readonly string[]): Record<string, string> {
  const out: Record<string, string> = {};
  if (from === null || typeof from !== 'object') return out;
  for (const k of keys) {
    const v = (from as Record<string, unknown>)[k];
    if (typeof v === 'string' && v !== '') out[k] = v;
  }
  return out;
}

/**
 * One operator action being handled, and its record (README "Audit trail"). The handler either
 * declares it `done` before its answer is known (a sync send, once accepted: the record is
 * written from then on, outcome `ok`, beside the wait), or the action ends in `answered` (the
 * record written then, with its outcome) or `failed`. Either way the answer waits for the commit.
 */
export class AuditedAction<I> {
  private early?: Promise<void>;

  constructor(
    private readonly trail: AuditTrail,
    private readonly spec: AuditSpec<I>,
    private readonly who: AuditPrincipal,
    private readonly via: AuditRecord['interface'],
    private readonly input: I,
  ) {}

  /** Done before its answer: the record (ids of `answer`, outcome ok) is written from now on. */
  readonly done = (answer: unknown): void => {
    if (this.early) return;
    this.early = this.trail.record(this.spec, this.who, this.via, this.input, answer, 'ok', true);
    this.early.catch(() => undefined); // awaited in answered/failed; a failure is answered there
  };

  /** Answered with `answer`: resolves once its record is committed (AUDIT_ERR_UNAVAILABLE otherwise). */
  async answered(answer: unknown, outcome: string): Promise<void> {
    if (this.early) await this.early;
    else await this.trail.record(this.spec, this.who, this.via, this.input, answer, outcome, true);
  }

  /**
   * The handler failed with `code`. Done before it: its record stands. Else refused: nothing was
   * done, and its record is best effort and never changes the answer.
   */
  async failed(code: string): Promise<void> {
    if (this.early) await this.early.catch(() => undefined);
    else await this.trail.record(this.spec, this.who, this.via, this.input, undefined, code, false);
  }
}

/**
 * One interface module's audit writer: `record` writes the row for an answered action (see
 * `writeAudit`); with no audit module configured it warns once, then answers unaudited.
 */
export class AuditTrail {
  skipped = 0;
  private warned = false;

  constructor(
    private readonly bus: ModuleBus,
    private readonly log: { warn(obj: object, msg: string): void },
    private readonly now: () => number,
    private readonly timeoutMs: number,
  ) {}

  /** An action about to be handled (see AuditedAction). */
  action<I>(spec: AuditSpec<I>, who: AuditPrincipal, via: AuditRecord['interface'], input: I): AuditedAction<I> {
    return new AuditedAction(this, spec, who, via, input);
  }

  async record<I>(
    spec: AuditSpec<I>,
    who: AuditPrincipal,
    via: AuditRecord['interface'],
    input: I,
    answer: unknown,
    outcome: string,
    required: boolean,
  ): Promise<void> {
    const targets: Record<string, string> = {};
    for (const [k, v] of Object.entries(spec.targets(input, answer)))
      if (typeof v === 'string' && v !== '') targets[k] = v;
    const rec: AuditRecord = {
      action: spec.action,
      token_id: who.token_id,
      role: who.role,
      interface: via,
      project_id: targets.project_id ?? null,
      targets,
      outcome,
      at: this.now(),
    };
    if ((await writeAudit(this.bus, rec, this.timeoutMs, required)) === 'skipped' && required) {
      this.skipped++;
      if (!this.warned) {
        this.warned = true;
        this.log.warn(
          { action: rec.action },
          'no audit module configured: operator actions are answered without an audit record (README "Audit trail")',
        );
      }
    }
  }
}
