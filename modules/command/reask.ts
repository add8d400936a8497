/**
 * Asking again for a result (issue "nothing lost under faults", item 3). The hub learns a result
 * from one copy; if that copy is lost after the broker acknowledged it to the agent (the broker
 * dropped it from a full session queue, an operator wiped the hub's session), nothing would ever
 * send it again. So a command the agent acknowledged, whose result has not come
 * `reask_after_ms` after the ack, is published again every `reask_interval_ms`: the same
 * message_id, re-signed with a fresh timestamp. An agent that already accepted that message_id
 * does not run it again (docs/wire-protocol.md#commands-and-acknowledgements: duplicates are dropped by message_id); this project's agent
 * answers a duplicate with its ack and, when it has one, the result (agent/commands.ts).
 *
 * Only within `reask_horizon_ms` of the command's creation (default 240 s, under the ±300 s
 * clock window): an agent must remember a message_id at least as long as the original copy's
 * timestamp is acceptable, so inside that horizon every conforming agent still knows it and a
 * re-ask can never make it run twice. A result lost later than that is not recovered; the
 * command then ends `timeout` as before.
 *
 * Claimed with FOR UPDATE SKIP LOCKED and stamped `reasked_at` in the same statement, so several
 * hub instances never ask for the same command at once.
 */
import type { ModuleBus } from '../../core/bus.js';
import { errorCode } from '../../core/errors.js';
import { BRIDGE, type MqttPublishRequest } from '../mqtt-bridge/contract/topics.js';
import { signedWireText } from '../shared/signing.js';
import { type Deps, isoAt, query } from './deps.js';

const BATCH = 200;

interface Due {
  command_id: string;
  project_id: string;
  topic: string | null;
  payload: string | null;
}

export class Reasker {
  constructor(
    private readonly d: Deps,
    private readonly bus: ModuleBus,
  ) {}

  /** One pass: claims the commands due for a re-ask and publishes them. Returns how many. */
  async pass(): Promise<number> {
    const { cfg } = this.d;
    if (cfg.reask_after_ms === 0) return 0;
    const now = this.d.clock.now();
    const due = await query<Due>(
      this.d.db,
      `WITH due AS (
         SELECT t.id FROM command_tracker t
          WHERE t.status IN ('acked', 'timeout') AND t.acked_at IS NOT NULL AND t.completed_at IS NULL
            AND t.created_at > ?::timestamptz AND t.acked_at <= ?::timestamptz
            AND (t.reasked_at IS NULL OR t.reasked_at <= ?::timestamptz)
          ORDER BY t.created_at LIMIT ${BATCH} FOR UPDATE SKIP LOCKED
       )
       UPDATE command_tracker t SET reasked_at = ?::timestamptz
         FROM due WHERE t.id = due.id
       RETURNING t.command_id, t.project_id,
                 (SELECT o.topic FROM command_outbox o WHERE o.command_id = t.command_id) AS topic,
                 (SELECT o.payload FROM command_outbox o WHERE o.command_id = t.command_id) AS payload`,
      [
        isoAt(now - cfg.reask_horizon_ms),
        isoAt(now - cfg.reask_after_ms),
        isoAt(now - cfg.reask_interval_ms),
        isoAt(now),
      ],
    );
    let asked = 0;
    await Promise.all(
      due.map(async (row) => {
        if (await this.ask(row, now)) asked++;
      }),
    );
    return asked;
  }

  private async ask(row: Due, now: number): Promise<boolean> {
    if (!row.topic || !row.payload) return false;
    let msg: Record<string, unknown>;
    try {
      msg = JSON.parse(row.payload) as Record<string, unknown>;
    } catch {
      return false;
    }
    try {
      const creds = await this.d.creds.get(row.project_id);
      if (!creds.enabled || creds.secrets.length === 0) return false;
      const { signature: _old, ...unsigned } = msg;
      unsigned.timestamp = now;
      const req: MqttPublishRequest = { topic: row.topic, payload: signedWireText(unsigned, creds.secrets[0]) };
      await this.bus.request(BRIDGE.publish, req, { timeoutMs: this.d.cfg.publish_timeout_ms });
      this.d.counters.reasks++;
      this.d.log.info(
        { command_id: row.command_id, project_id: row.project_id },
        'result not received after the ack; asked the agent again',
      );
      return true;
    } catch (err) {
      this.d.log.debug(
        { command_id: row.command_id, code: errorCode(err) },
        're-ask not published; the next pass tries again',
      );
      return false;
    }
  }
}
