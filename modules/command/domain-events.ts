/**
 * The command module's domain events for the outbox service (README "Outbox: domain events"):
 * a command that becomes terminal writes `command.completed|failed|timeout` in the same
 * transaction that makes it so, keyed by project id (a project's command events reach a route
 * in commit order). They live in the module's own table, command_event_outbox.
 */
import type { OutboxEvent } from '../../core/services/outbox/service.js';
import { outboxMigration } from '../../core/services/outbox/tables.js';
import type { CommandResultView } from './contract/topics.js';
import { type TrackerRow, timings, toView } from './rows.js';

export const EVENT_TABLE = 'command_event_outbox';
export const COMMAND_EVENTS = ['command.completed', 'command.failed', 'command.timeout'] as const;
export const eventOutboxMigration = outboxMigration('004_event_outbox', EVENT_TABLE);

const TYPE_OF: Partial<Record<string, (typeof COMMAND_EVENTS)[number]>> = {
  completed: 'command.completed',
  failed: 'command.failed',
  timeout: 'command.timeout',
};

/** The event of a row that just became terminal (null for any other status). */
export function terminalEvent(row: TrackerRow, result: CommandResultView | null): OutboxEvent | null {
  const eventType = TYPE_OF[row.status];
  if (!eventType) return null;
  return {
    eventType,
    key: row.project_id,
    data: { command: toView(row), result, timings: timings(row, result) },
  };
}
