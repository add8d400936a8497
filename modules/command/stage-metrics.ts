/**
 * The command latencies and final statuses on /metrics (core/metrics.ts), observed from the
 * events this instance's command module sends: queue (created→sent), delivery (sent→acked),
 * execution (the agent's own duration) and total (created→final), each once per command however
 * often its state goes out. Another instance's commands (`remote` events) are that instance's to
 * report.
 */
import { counter, countsBy, Histogram, histogram, type MetricFamily } from '../../core/metrics.js';
import { growingLru } from '../shared/growing-lru.js';
import { TERMINAL_STATUSES } from './contract/schemas.js';
import type { CommandEvent, CommandView } from './contract/topics.js';

const STAGE_BUCKETS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 900, 3600];
/**
 * Commands whose stages were observed, so a repeated event is not counted twice: an LRU cache, the
 * command seen longest ago forgotten first (docs/benchmarks.md "Bounded maps that stay fast when full").
 */
const SEEN_MAX = 50_000;

const Q = 1; // queue observed
const D = 2; // delivery
const E = 4; // execution
const T = 8; // total + final status

const ms = (iso: string | null) => (iso ? Date.parse(iso) : Number.NaN);

export class StageMetrics {
  private readonly stage = new Histogram(STAGE_BUCKETS);
  private readonly finals: Record<string, number> = {};
  private readonly seen = growingLru<string, number>(SEEN_MAX);

  /** Every state or result event the module sends, before it goes out. */
  observe(ev: CommandEvent): void {
    if (!ev || ev.kind === 'log' || ev.remote) return;
    const c = ev.command;
    if (!c?.command_id) return;
    let mask = this.seen.get(c.command_id) ?? 0;
    const before = mask;
    if (ev.kind === 'result') {
      if (!(mask & E) && Number.isFinite(ev.result.duration) && ev.result.duration >= 0) {
        this.stage.observe({ stage: 'execution' }, ev.result.duration / 1000);
        mask |= E;
      }
    } else {
      mask = this.observeState(c, mask);
    }
    if (mask === before) return;
    // A finished command stays too (its mask says what was counted): a copy of its last event is
    // not counted again, and it is never deleted. lru-cache empties itself on the delete of its
    // last entry by filling its whole index (SEEN_MAX slots): at one command in flight that was
    // each command's last event, 110 µs (docs/benchmarks.md "Bounded maps that stay fast when full").
    this.seen.set(c.command_id, mask);
  }

  families(): MetricFamily[] {
    return [
      histogram(
        'hub_command_stage_seconds',
        'Command latency by stage: queue (created→sent), delivery (sent→acked), execution (agent), total (created→final)',
        this.stage,
        ['stage'],
      ),
      counter('hub_commands_final_total', 'Commands that reached a final status', countsBy('status', this.finals), [
        'status',
      ]),
    ];
  }

  private observeState(c: CommandView, mask: number): number {
    const created = ms(c.created_at);
    const sent = ms(c.sent_at);
    const acked = ms(c.acked_at);
    if (!(mask & Q) && sent >= created) {
      this.stage.observe({ stage: 'queue' }, (sent - created) / 1000);
      mask |= Q;
    }
    if (!(mask & D) && acked >= sent) {
      this.stage.observe({ stage: 'delivery' }, (acked - sent) / 1000);
      mask |= D;
    }
    if (!(mask & T) && TERMINAL_STATUSES.has(c.status)) {
      this.finals[c.status] = (this.finals[c.status] ?? 0) + 1;
      const done = ms(c.completed_at);
      if (done >= created) this.stage.observe({ stage: 'total' }, (done - created) / 1000);
      mask |= T;
    }
    return mask;
  }
}
