/**
 * The one verification step every uplink passes before any module sees it (docs/wire-protocol.md#what-is-verified): the
 * project must be provisioned and enabled, the signature must match one of its valid secrets
 * (always for `register`; for data messages when present, and also when absent if the status
 * module's `require_data_signature` is on), the timestamp must be inside the clock window, and
 * the message_id must not have been seen. A message that passes is handed on with its project
 * verified; one that fails is refused with a code and never reaches a module.
 *
 * What is checked, per type (docs/wire-protocol.md "What is verified"), is its entry in the
 * uplink table (shared/protocol/uplinks.ts): `signature` and `freshness`.
 * - `register` (signature `required`, `window_and_replay`): signature, clock window, replay.
 * - `disconnect` (`none`): signature only (the MQTT last will was composed at connect: old
 *   timestamp, and its id repeats across reconnects).
 * - `command_ack`, `exec_result` (`future_only`): signature; the clock window only against
 *   timestamps from the future, and no replay check. Both are idempotent by command_id (a second
 *   copy changes nothing), and a genuine one may reach the hub long after it was signed: the
 *   broker keeps it for the hub's session while the hub or its database is down. Refusing it as
 *   stale would lose a result the agent will never send again.
 * - every other data type (`window_and_replay`): signature, clock window, replay.
 *
 * Credentials come from the status module (STATUS.credentials) and are kept in a local read
 * model: an uplink of a known project is verified without a bus request; the entry is dropped at
 * once on `STATUS.credentialsChanged` (disable, rotate …), after `credentials_ttl_ms` (another
 * hub instance's change), and when a rotated-out secret's overlap ends.
 *
 * The replay cache records a message_id only after the uplink was handled (`commit`): a copy the
 * broker redelivers because the hub could not write it (database down, hub killed before its
 * PUBACK) must not be refused as a replay of itself.
 */

import type { ModuleBus } from '../../core/bus.js';
import { errorCode } from '../../core/errors.js';
import { type CommandMessage, type DataMessage, uplinkSpec } from '../shared/protocol.js';
import { CLOCK_WINDOW_MS, checkClock, checkSignature, ReplayCache, type SentText } from '../shared/signing.js';
import { type CredentialsChangedEvent, type ProjectCredentials, STATUS } from '../status/contract/topics.js';

/** Codes an uplink can be refused with here (the parser's own codes come before). */
export type VerifyCode =
  | 'PROTO_ERR_UNKNOWN_PROJECT'
  | 'PROTO_ERR_PROJECT_DISABLED'
  | 'PROTO_ERR_SIGNATURE'
  | 'PROTO_ERR_UNSIGNED'
  | 'PROTO_ERR_CLOCK'
  | 'PROTO_ERR_REPLAY'
  | 'PROTO_ERR_UNVERIFIABLE';

export type Verdict = { ok: true; replayKey: string | null } | { ok: false; code: VerifyCode; reason: string };

interface Entry {
  creds: ProjectCredentials | null;
  /** When the entry stops being trusted (TTL, a rotated-out secret's expiry, a short negative TTL). */
  until: number;
}

/** Unknown projects are remembered briefly, so a flood of one unknown id costs one lookup a second. */
const NEGATIVE_TTL_MS = 1_000;
const MAX_ENTRIES = 200_000;
const REQUEST_TIMEOUT_MS = 5_000;

export interface VerifierOptions {
  bus: ModuleBus;
  now: () => number;
  credentialsTtlMs: number;
}

export class UplinkVerifier {
  private readonly entries = new Map<string, Entry>();
  private readonly loading = new Map<string, Promise<Entry>>();
  private readonly replay = new ReplayCache();
  /** Valid signatures by what matched: the text as sent, or a canonical text built again (signing.ts checkSignature). */
  readonly signatures = { as_sent: 0, canonical: 0 };
  /** Bumped by every invalidation, so a lookup that was in flight meanwhile is not cached. */
  private generation = 0;

  constructor(private readonly o: VerifierOptions) {}

  /** The status module said a project's credentials changed: forget it now. */
  onCredentialsChanged = (ev: CredentialsChangedEvent): void => {
    if (typeof ev?.project_id !== 'string') return;
    this.entries.delete(ev.project_id);
    this.generation++;
  };

  get cached(): number {
    return this.entries.size;
  }

  /** Verifies `msg` (`sent`: the parser's text of it, see signing.ts sentText); synchronous when the project is in the read model. Never rejects. */
  verify(kind: 'command' | 'data', msg: CommandMessage | DataMessage, sent?: SentText): Verdict | Promise<Verdict> {
    const hit = this.entries.get(msg.project_id);
    const now = this.o.now();
    if (hit && hit.until > now) return this.check(kind, msg, hit.creds, now, sent);
    return this.load(msg.project_id).then(
      (e) => this.check(kind, msg, e.creds, this.o.now(), sent),
      (err): Verdict => ({
        ok: false,
        code: 'PROTO_ERR_UNVERIFIABLE',
        reason: `could not read the project's credentials (${errorCode(err) ?? (err as Error)?.message ?? err})`,
      }),
    );
  }

  /** Records a handled uplink's message_id (see the file comment: only once it was handled). */
  commit(replayKey: string | null): void {
    if (replayKey !== null) this.replay.seen(replayKey, this.o.now());
  }

  private check(
    kind: 'command' | 'data',
    msg: CommandMessage | DataMessage,
    creds: ProjectCredentials | null,
    now: number,
    sent: SentText | undefined,
  ): Verdict {
    if (!creds) return refuse('PROTO_ERR_UNKNOWN_PROJECT', `project ${msg.project_id} is not provisioned`);
    if (!creds.enabled) return refuse('PROTO_ERR_PROJECT_DISABLED', `project ${msg.project_id} is disabled`);
    const type = kind === 'command' ? (msg as CommandMessage).command_type : (msg as DataMessage).data_type;
    const signed = (msg as { signature?: unknown }).signature !== undefined;
    // commands are always signed (the envelope says so); a data type by its table entry or the project's setting
    const mustSign = kind === 'command' || uplinkSpec(type)?.signature === 'required' || creds.require_data_signature;
    if (!signed && !mustSign) return this.clockAndReplay(type, msg, creds, now);
    if (!signed) return refuse('PROTO_ERR_UNSIGNED', `${type} must be signed`);
    const matched = checkSignature(msg, creds.secrets, sent);
    if (matched === null) return refuse('PROTO_ERR_SIGNATURE', 'signature does not match any secret of the project');
    this.signatures[matched]++;
    return this.clockAndReplay(type, msg, creds, now);
  }

  private clockAndReplay(
    type: string,
    msg: CommandMessage | DataMessage,
    creds: ProjectCredentials,
    now: number,
  ): Verdict {
    const freshness = uplinkSpec(type)?.freshness ?? 'window_and_replay';
    if (freshness === 'none') return { ok: true, replayKey: null };
    const window = creds.clock_window_ms ?? CLOCK_WINDOW_MS;
    const idempotent = freshness === 'future_only';
    const inWindow = idempotent ? msg.timestamp <= now + window : checkClock(msg.timestamp, now, window);
    if (!inWindow) {
      const skew = Number.isFinite(msg.timestamp) ? `${msg.timestamp - now} ms` : 'not a number';
      return refuse('PROTO_ERR_CLOCK', `timestamp is outside the ±${window} ms window (offset ${skew})`);
    }
    if (idempotent) return { ok: true, replayKey: null };
    // ids are per project: another project's agent cannot burn this project's ids (the cache
    // keeps a hash of this key, not the key)
    const key = [msg.project_id, msg.message_id].join('\u0000');
    if (this.replay.has(key, now)) return refuse('PROTO_ERR_REPLAY', `message_id ${msg.message_id} was already seen`);
    return { ok: true, replayKey: key };
  }

  private load(projectId: string): Promise<Entry> {
    const running = this.loading.get(projectId);
    if (running) return running;
    const gen = this.generation;
    const p = this.o.bus
      .request<ProjectCredentials>(STATUS.credentials, { project_id: projectId }, { timeoutMs: REQUEST_TIMEOUT_MS })
      .then(
        (creds): Entry => {
          const now = this.o.now();
          let until = now + this.o.credentialsTtlMs;
          const exp = creds?.prev_secret_expires_at;
          if (typeof exp === 'number' && exp > now) until = Math.min(until, exp);
          return { creds: Array.isArray(creds?.secrets) ? creds : null, until };
        },
        (err): Entry => {
          if (errorCode(err) === 'STATUS_ERR_NOT_FOUND') return { creds: null, until: this.o.now() + NEGATIVE_TTL_MS };
          throw err;
        },
      )
      .then((e) => {
        if (gen === this.generation) {
          if (this.entries.size >= MAX_ENTRIES) this.entries.clear();
          this.entries.set(projectId, e);
        }
        return e;
      })
      .finally(() => this.loading.delete(projectId));
    this.loading.set(projectId, p);
    return p;
  }
}

function refuse(code: VerifyCode, reason: string): Verdict {
  return { ok: false, code, reason };
}
