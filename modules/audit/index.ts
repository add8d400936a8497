/**
 * `audit`: the trail of operator actions (README "Audit trail"). The interface modules (web,
 * grpc) ask `audit/record` after an action and before they answer it; this module writes the
 * row, logs it as one info line (ids only: no payload, no secret) and answers once it is
 * committed. `audit/list` serves REST `GET /audit` and gRPC ListAudit.
 *
 * @example config.yml
 *   audit:
 *     retention_days: 365
 */
import { CONTROL } from '../../core/bus.js';
import { counter, countsBy, metricsTopic } from '../../core/metrics.js';
import type { ModuleContext, ModuleProvider } from '../../core/module.js';
import { type AuditConfig, auditConfigSchema } from './config.js';
import { AUDIT, type AuditEntry } from './contract/topics.js';
import { migrations } from './migrations.js';
import { AuditStore } from './store.js';

/** Records being written at once; past it the mailbox holds the rest (backpressure). */
const RECORDS_IN_FLIGHT = 2048;

export const provider: ModuleProvider<AuditConfig> = {
  name: 'audit',
  description: 'the audit trail of operator actions (who did what, over which interface, with what outcome)',
  schema: auditConfigSchema,
  create: (ctx) => ({ start: () => start(ctx) }),
};

async function start(ctx: ModuleContext<AuditConfig>): Promise<void> {
  const cfg = ctx.config;
  const db = () => ctx.services.db(cfg.database);
  await ctx.services.migrate(migrations, cfg.database);
  const store = new AuditStore(db);
  const written: Record<string, number> = {};
  const refused: Record<string, number> = {};

  ctx.bus.subscribe(
    AUDIT.record,
    async (body): Promise<AuditEntry> => {
      let e: AuditEntry;
      try {
        e = await store.write(body);
      } catch (err) {
        const code = (err as { code?: string }).code ?? 'error';
        refused[code] = (refused[code] ?? 0) + 1;
        throw err;
      }
      written[e.action] = (written[e.action] ?? 0) + 1;
      // the record's one log line: ids, never a payload or a secret
      ctx.log.info(
        {
          audit_id: e.audit_id,
          action: e.action,
          token_id: e.token_id,
          role: e.role,
          interface: e.interface,
          project_id: e.project_id,
          targets: e.targets,
          outcome: e.outcome,
        },
        'audit',
      );
      return e;
    },
    // records wait for their group's commit side by side (group-commit.ts), not one commit each
    // in turn: one at a time, the trail capped every interface's sends at one commit per record
    { concurrency: RECORDS_IN_FLIGHT },
  );
  ctx.bus.subscribe(AUDIT.list, (body) => store.list(body));
  // introspection answers ahead of the data queue (core/mailbox.ts control lane)
  ctx.bus.subscribe(
    metricsTopic(ctx.name),
    () => [
      counter('hub_audit_records_total', 'Audit records written, by action', countsBy('action', written), ['action']),
      counter(
        'hub_audit_refused_total',
        'Audit records the module could not write, by error code',
        countsBy('code', refused),
        ['code'],
      ),
    ],
    CONTROL,
  );

  const retentionMs = cfg.retention_days * 86_400_000;
  let cleaning = false;
  const cleanup = async () => {
    if (cleaning) return;
    cleaning = true;
    try {
      const n = await store.cleanup(ctx.services.clock.now(), retentionMs);
      if (n > 0)
        ctx.log.info({ deleted: n, retention_days: cfg.retention_days }, 'audit records past retention deleted');
    } catch (err) {
      ctx.log.warn({ err }, 'audit cleanup failed; trying again at the next round');
    } finally {
      cleaning = false;
    }
  };
  void cleanup();
  ctx.timers.setInterval(() => void cleanup(), cfg.cleanup_interval_ms);
}
