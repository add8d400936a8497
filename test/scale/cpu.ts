/**
 * CPU time of the processes of a run, read from /proc (Linux): what bounds a throughput figure is
 * told by who used the cores meanwhile. The hub exposes no process CPU series on /metrics (its
 * registry holds only the hub's own series), so the harness reads each child's
 * /proc/<pid>/stat itself, which also covers PostgreSQL and Mosquitto.
 */
import fs from 'node:fs';
import path from 'node:path';

/** USER_HZ: the unit of /proc/<pid>/stat times; 100 on every Linux build that matters. */
const TICKS_PER_S = 100;

interface ProcTimes {
  ppid: number;
  /** utime + stime of the process itself, in seconds. */
  self: number;
  /** cutime + cstime: its children that exited and were waited for, in seconds. */
  children: number;
}

function readStat(pid: number): ProcTimes | undefined {
  let text: string;
  try {
    text = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
  } catch {
    return undefined; // gone
  }
  // the command name (field 2) may hold spaces and parentheses: fields start after the last ')'
  const f = text.slice(text.lastIndexOf(')') + 2).split(' ');
  // f[0] is field 3 (state): ppid is field 4, utime..cstime are fields 14..17
  const n = (i: number) => Number(f[i - 3]);
  return { ppid: n(4), self: (n(14) + n(15)) / TICKS_PER_S, children: (n(16) + n(17)) / TICKS_PER_S };
}

/** CPU seconds of one process (0 when it is gone). */
export function cpuOf(pid: number | undefined): number {
  if (pid === undefined) return 0;
  return readStat(pid)?.self ?? 0;
}

/**
 * CPU seconds of a process and all its descendants, living or exited (a PostgreSQL postmaster
 * and its backends; an agent and the `/bin/sleep` it ran).
 */
export function treeCpuOf(root: number | undefined): number {
  if (root === undefined) return 0;
  const top = readStat(root);
  if (!top) return 0;
  const byParent = new Map<number, number[]>();
  for (const name of fs.readdirSync('/proc')) {
    const pid = Number(name);
    if (!Number.isInteger(pid)) continue;
    const s = readStat(pid);
    if (!s) continue;
    const list = byParent.get(s.ppid) ?? [];
    list.push(pid);
    byParent.set(s.ppid, list);
  }
  let total = top.self + top.children;
  const todo = [...(byParent.get(root) ?? [])];
  while (todo.length > 0) {
    const pid = todo.pop()!;
    const s = readStat(pid);
    if (!s) continue;
    total += s.self + s.children;
    todo.push(...(byParent.get(pid) ?? []));
  }
  return total;
}

/** The postmaster's pid from a PostgreSQL data directory (first line of postmaster.pid). */
export function postmasterPid(dataDir: string): number | undefined {
  try {
    const pid = Number(fs.readFileSync(path.join(dataDir, 'postmaster.pid'), 'utf8').split('\n')[0]);
    return Number.isInteger(pid) && pid > 0 ? pid : undefined;
  } catch {
    return undefined;
  }
}

/** Named CPU readers, sampled together: `delta()` gives the seconds each used since `start()`. */
export class CpuMeter {
  private base = new Map<string, number>();

  constructor(private readonly readers: Record<string, () => number>) {}

  start(): void {
    this.base = new Map(Object.entries(this.readers).map(([k, r]) => [k, r()]));
  }

  delta(): Record<string, number> {
    const out: Record<string, number> = {};
    for (const [k, r] of Object.entries(this.readers)) out[k] = Math.max(0, r() - (this.base.get(k) ?? 0));
    return out;
  }
}
