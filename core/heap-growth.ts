/**
 * The JS heap's growth between full collections (config `host.heap_growing_percent`).
 *
 * V8 sets the next full collection's trigger at a factor of the heap that survived the last one;
 * for a process allocating fast it picks a large factor, so a hub ingesting thousands of uplinks a
 * second let its heap reach about three times its live objects (the memory suite, 100 000
 * projects and 10 000 agents on Mosquitto: 282 MB resident, a heap of 221 MB for well under 100 MB
 * live). `--heap-growing-percent` replaces that factor with 1 + percent/100: at 50, 204 MB for
 * about 6 % more CPU per heartbeat (README "Memory at the size" has the runs).
 *
 * Node accepts this V8 flag only on its command line (NODE_OPTIONS refuses it), so the host sets
 * it with v8.setFlagsFromString when it starts. V8 reads the flag each time it recomputes its
 * heap limits after a full collection, so a value set now governs every collection from the next
 * one on; it is process-wide (every host and worker thread in the process).
 */
import v8 from 'node:v8';
import type { Logger } from './log.js';

let applied: number | undefined;

export function applyHeapGrowth(percent: number, log: Logger): void {
  if (percent === applied) return;
  // 0 restores V8's own factor (the flag's default)
  v8.setFlagsFromString(`--heap-growing-percent=${percent}`);
  if (applied !== undefined || percent !== 0) log.info({ heap_growing_percent: percent }, 'heap growth set');
  applied = percent;
}
