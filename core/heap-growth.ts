/**
 * The JS heap's growth between full collections (config `host.heap_growing_percent` and
 * `host.heap_headroom_mb`).
 *
 * V8 sets the next full collection's trigger at a factor of the heap that survived the last one;
 * for a process allocating fast it picks a large factor, so a hub ingesting thousands of uplinks a
 * second let its heap reach about three times its live objects (the memory suite, 100 000
 * projects and 10 000 agents on Mosquitto: 282 MB resident, a heap of 221 MB for well under 100 MB
 * live). `--heap-growing-percent` replaces that factor with 1 + percent/100: at 50, 204 MB for
 * about 6 % more CPU per heartbeat (docs/benchmarks.md "Memory at the issue's size" has the runs).
 *
 * A percentage is headroom in proportion to what lives, and what lives in a hub with the embedded
 * broker is mostly its agents' connections: 10 000 of them, 60 MB of live heap, got 30 MB of
 * headroom more at 50 %, resident for as long as they stay connected. So the headroom is also
 * bounded in megabytes: after each full collection the percent for the next one is
 * `heap_headroom_mb` over the live heap, never more than `heap_growing_percent` and never under
 * 10. A hub whose live heap is under twice the headroom keeps `heap_growing_percent`; above that,
 * full collections come more often (each marks the live heap), which is the price of the memory.
 *
 * Node accepts this V8 flag only on its command line (NODE_OPTIONS refuses it), so the host sets
 * it with v8.setFlagsFromString. V8 reads the flag each time it recomputes its heap limits after
 * a full collection, so a value set now governs every collection from the next one on; it is
 * process-wide (every host and worker thread in the process).
 */
import { constants, PerformanceObserver } from 'node:perf_hooks';
import v8 from 'node:v8';
import type { Logger } from './log.js';

/** The least growth the headroom bound sets: below it a busy heap is collected almost constantly. */
export const MIN_HEAP_GROWING_PERCENT = 10;

/** What the host asks for (config `host`). */
export interface HeapGrowth {
  /** 0 = V8's own factor (and no headroom bound). */
  percent: number;
  /** 0 = no bound in megabytes: `percent` alone. */
  headroomMb: number;
}

const MB = 1024 * 1024;

let asked: HeapGrowth | undefined;
/** The flag's value now (what V8 uses at its next full collection). */
let current: number | undefined;
let observer: PerformanceObserver | undefined;

/** The percent for a heap whose old generation holds `liveBytes` after a full collection. */
export function growingPercentFor(growth: HeapGrowth, liveBytes: number): number {
  if (growth.percent === 0 || growth.headroomMb === 0 || liveBytes <= 0) return growth.percent;
  const bounded = Math.floor((growth.headroomMb * MB * 100) / liveBytes);
  return Math.min(growth.percent, Math.max(MIN_HEAP_GROWING_PERCENT, bounded));
}

function setFlag(percent: number): void {
  if (percent === current) return;
  // 0 restores V8's own factor (the flag's default)
  v8.setFlagsFromString(`--heap-growing-percent=${percent}`);
  current = percent;
}

/** What survived the last full collection, as V8 counts it for its limit: every space but the young ones. */
function oldGenerationBytes(): number {
  let bytes = 0;
  for (const s of v8.getHeapSpaceStatistics()) {
    if (s.space_name !== 'new_space' && s.space_name !== 'new_large_object_space') bytes += s.space_used_size;
  }
  return bytes;
}

function watchFullCollections(): void {
  if (observer) return;
  observer = new PerformanceObserver((list) => {
    if (!asked) return;
    for (const entry of list.getEntries()) {
      const kind = (entry as unknown as { detail?: { kind?: number } }).detail?.kind;
      if (kind === constants.NODE_PERFORMANCE_GC_MAJOR) {
        setFlag(growingPercentFor(asked, oldGenerationBytes()));
        return;
      }
    }
  });
  observer.observe({ entryTypes: ['gc'] });
}

export function applyHeapGrowth(growth: HeapGrowth, log: Logger): void {
  if (asked && asked.percent === growth.percent && asked.headroomMb === growth.headroomMb) return;
  const first = asked === undefined;
  asked = { ...growth };
  setFlag(growingPercentFor(asked, oldGenerationBytes()));
  if (asked.percent > 0 && asked.headroomMb > 0) watchFullCollections();
  else {
    observer?.disconnect();
    observer = undefined;
  }
  if (!first || growth.percent !== 0)
    log.info({ heap_growing_percent: growth.percent, heap_headroom_mb: growth.headroomMb }, 'heap growth set');
}
