import type { ModuleBus } from '../../core/bus.js';
import { errorCode } from '../../core/errors.js';
import { HOST_TOPICS } from '../../core/host-topics.js';
import { type CommandMessage, type DataMessage, UPLINK_TYPES, UPLINKS, type UplinkOwner } from '../shared/protocol.js';
import type { DurableReply, UplinkEvent } from './contract/topics.js';
import type { UplinkVerifier, Verdict } from './verify.js';

/**
 * Uplinks that carry state the hub must not lose (`durable` in the uplink table,
 * shared/protocol/uplinks.ts), and the provider of the module that writes each: acknowledged to
 * the broker only after that module answered their bus request, i.e. after the write committed.
 * The others (heartbeat, monitor, alert, log_result) are acknowledged once a mailbox took them: a
 * lost heartbeat is replaced by the next one within seconds, and log chunks are a live stream.
 */
export const DURABLE_OWNERS: ReadonlyMap<string, UplinkOwner> = new Map(
  UPLINK_TYPES.filter((type) => UPLINKS[type].durable).map((type) => [type, UPLINKS[type].owner]),
);

/** How a durable uplink ended: written (acknowledge), refused (acknowledge: dropping is the decision), or withheld. */
export type DurableOutcome =
  | { kind: 'written'; replayKey: string | null }
  | { kind: 'refused'; verdict: Extract<Verdict, { ok: false }> }
  /** Not written by the deadline, or the connection it came on is gone: the broker must deliver it again. */
  | { kind: 'withheld'; reason: 'deadline' | 'connection'; lastError: string };

export interface DurableWriteDeps {
  bus: ModuleBus;
  verifier: UplinkVerifier;
  now: () => number;
  /** From receipt, how long a write may keep failing before the uplink is left to a redelivery. */
  waitMs: number;
  /** Backoff between attempts: first and cap, in ms. */
  retryMs?: { first: number; max: number };
  /** Called before each attempt after the first (counted in the bridge's stats). */
  onRetry?: () => void;
}

/** How long the answer to "is the owner configured?" is reused. */
const OWNERS_TTL_MS = 1_000;

/**
 * Writes one durable uplink through its owner, retrying until it is written or the deadline.
 *
 * A failure here is the hub's, never the agent's: the owner is restarting (a config edit, a crash
 * with backoff: `BUS_ERR_NO_RESPONDER` while it has no subscription, `BUS_ERR_CLOSED` when it
 * stopped under the request), its mailbox is full, the database is down, or the credentials that
 * verify the uplink could not be read (`PROTO_ERR_UNVERIFIABLE`). Acknowledging such an uplink
 * would drop a result or a registration the agent believes delivered; leaving it unacknowledged
 * without trying again would hold one of the broker's in-flight slots for this session until a
 * reconnect (Mosquitto sends at most 20 unacknowledged messages, then queues and finally drops),
 * so after a handful of failures every uplink of every agent stalls. So it is retried here, with
 * backoff, and only after `waitMs` left to the broker's redelivery (the caller reconnects).
 *
 * `BUS_ERR_NO_RESPONDER` is final only when no module of the owner's provider is configured at
 * all (a hub without a command module keeps nothing of a command_ack): the host's module list
 * says which.
 */
export class DurableWriter {
  private owners: { at: number; providers: Set<string> } | null = null;
  private ownersLoading: Promise<Set<string> | null> | null = null;

  constructor(private readonly d: DurableWriteDeps) {}

  /**
   * `current()` says whether the connection the uplink came on is still the bridge's: after a
   * reconnect the broker delivers it again, so this copy stops trying.
   */
  async write(
    type: string,
    busTopic: string,
    ev: UplinkEvent,
    verdict: Verdict,
    current: () => boolean,
  ): Promise<DurableOutcome> {
    const started = this.d.now();
    const first = this.d.retryMs?.first ?? 50;
    const max = this.d.retryMs?.max ?? 2_000;
    let delay = first;
    let lastError = '';
    for (;;) {
      if (verdict.ok) {
        const left = Math.max(1_000, this.d.waitMs - (this.d.now() - started));
        try {
          const reply = await this.d.bus.request(busTopic, ev, { timeoutMs: left });
          if (reply !== null && typeof reply === 'object' && 'written' in reply) await (reply as DurableReply).written;
          return { kind: 'written', replayKey: verdict.replayKey };
        } catch (err) {
          const code = errorCode(err) ?? 'ERROR';
          if (code === 'BUS_ERR_NO_RESPONDER' && !(await this.ownerConfigured(type))) {
            // nobody owns this type: nothing to keep, as with events
            return { kind: 'written', replayKey: verdict.replayKey };
          }
          lastError = `${code}: ${(err as Error)?.message ?? err}`;
        }
      } else if (verdict.code !== 'PROTO_ERR_UNVERIFIABLE') {
        return { kind: 'refused', verdict };
      } else {
        lastError = `${verdict.code}: ${verdict.reason}`;
      }
      if (!current()) return { kind: 'withheld', reason: 'connection', lastError };
      if (this.d.now() - started + delay > this.d.waitMs) return { kind: 'withheld', reason: 'deadline', lastError };
      await sleep(delay);
      delay = Math.min(delay * 2, max);
      this.d.onRetry?.();
      if (!verdict.ok) verdict = await this.d.verifier.verify(kindOf(ev.msg), ev.msg);
    }
  }

  private async ownerConfigured(type: string): Promise<boolean> {
    const owner = DURABLE_OWNERS.get(type);
    if (owner === undefined) return false;
    const now = this.d.now();
    if (this.owners && now - this.owners.at < OWNERS_TTL_MS) return this.owners.providers.has(owner);
    this.ownersLoading ??= this.d.bus
      .request<{ provider?: unknown }[]>(HOST_TOPICS.listModules, {}, { timeoutMs: 1_000 })
      .then(
        (list) => new Set(list.map((m) => String(m.provider))),
        () => null,
      )
      .finally(() => {
        this.ownersLoading = null;
      });
    const providers = await this.ownersLoading;
    // the host did not answer: assume the owner exists, so the uplink is tried again rather than dropped
    if (providers === null) return true;
    this.owners = { at: this.d.now(), providers };
    return providers.has(owner);
  }
}

function kindOf(msg: CommandMessage | DataMessage): 'command' | 'data' {
  return 'command_type' in msg ? 'command' : 'data';
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms).unref?.());
}
