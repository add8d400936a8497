/**
 * The status module's domain events for the outbox service (README "Outbox: domain events"):
 * `project.online` / `project.offline`, written in the transaction that inserts the presence
 * history row of that change (persist.ts writeBatch), keyed by project id, into the module's
 * own table status_event_outbox.
 */
import type { OutboxEvent } from '../../core/services/outbox/service.js';
import { outboxMigration } from '../../core/services/outbox/tables.js';
import type { HistoryRow } from './presence.js';

export const EVENT_TABLE = 'status_event_outbox';
export const STATUS_EVENTS = ['project.online', 'project.offline'] as const;
export const eventOutboxMigration = outboxMigration('003_event_outbox', EVENT_TABLE);

/** The events of a batch's history rows: entering online, entering offline; other moves carry none. */
export function presenceEvents(history: readonly HistoryRow[]): OutboxEvent[] {
  const out: OutboxEvent[] = [];
  for (const h of history) {
    if (h.from_state === h.to_state || (h.to_state !== 'online' && h.to_state !== 'offline')) continue;
    out.push({
      eventType: h.to_state === 'online' ? 'project.online' : 'project.offline',
      key: h.project_id,
      data: {
        project_id: h.project_id,
        state: h.to_state,
        previous: h.from_state,
        reason: h.reason,
        at: new Date(h.at).toISOString(),
      },
    });
  }
  return out;
}
