/**
 * A hub in its own process for the benchmarks: what `node dist/bootstrap/main.js` does (config
 * from HUB_CONFIG, the built-in providers, a pino root logger on stdout), plus an IPC channel
 * through which the bench process can make bus requests (status, broker and bridge counters,
 * WEB.info for the port) and ask for a graceful stop.
 *
 * Why a child process and not an in-process Host: on a 2-core machine the load generator
 * (simulated agents, HTTP callers, signing) would otherwise share the hub's event loop, and every
 * millisecond it spends would show up as hub latency; and the memory suite needs the hub's own
 * RSS, not the RSS of hub + generator. The IPC shim adds one listener and nothing on a hot path.
 *
 * Parent → child: { op: 'request', id, topic, payload, timeout_ms } | { op: 'memory', id, snapshot? } | { op: 'stop' }
 * Child → parent: { op: 'ready' } | { op: 'reply', id, value?, error? } | { op: 'start-failed', error }
 *
 * `memory` answers process.memoryUsage() (where the RSS goes: JS heap, external, array buffers)
 * and, with `snapshot` (a file path), writes a V8 heap snapshot there first (BENCH_HEAP_SNAPSHOT).
 */
import fs from 'node:fs';
import { Session } from 'node:inspector';
import path from 'node:path';
import v8 from 'node:v8';
import { errorCode, serializeError } from '../core/errors.js';
import { Host } from '../core/host.js';
import { createRootLogger } from '../core/log.js';
import { builtinProviders } from '../modules/index.js';

interface RequestMsg {
  op: 'request';
  id: number;
  topic: string;
  payload: unknown;
  timeout_ms?: number;
}
type ParentMsg = RequestMsg | { op: 'memory'; id: number; snapshot?: string } | { op: 'stop' };

const send = (m: unknown) => process.send?.(m);
const log = createRootLogger();
const configFile = path.resolve(process.env.HUB_CONFIG ?? './config.yml');
const host = new Host({ configFile, registry: builtinProviders(), log, watch: false });

/**
 * BENCH_HUB_ALLOC_PROF=file: V8's sampling heap profiler from ready to stop, counting every
 * sampled allocation (also those the collector freed since: where the garbage comes from, not
 * only what stays), written to that file at stop (a .heapprofile for DevTools or a script).
 * `%p` in the name becomes the hub's pid: suites that start several hubs write one file each.
 */
const allocProfFile = process.env.BENCH_HUB_ALLOC_PROF?.replaceAll('%p', String(process.pid));
let allocSession: Session | undefined;
function post(session: Session, method: string, params?: object): Promise<unknown> {
  return new Promise((resolve, reject) =>
    session.post(method, params, (err, res) => (err ? reject(err) : resolve(res))),
  );
}
async function startAllocProf(): Promise<void> {
  if (!allocProfFile) return;
  allocSession = new Session();
  allocSession.connect();
  await post(allocSession, 'HeapProfiler.startSampling', {
    samplingInterval: 16_384,
    includeObjectsCollectedByMajorGC: true,
    includeObjectsCollectedByMinorGC: true,
  });
}
async function writeAllocProf(): Promise<void> {
  if (!allocSession || !allocProfFile) return;
  const { profile } = (await post(allocSession, 'HeapProfiler.stopSampling')) as { profile: unknown };
  fs.writeFileSync(allocProfFile, JSON.stringify(profile));
  allocSession.disconnect();
}

let stopping = false;
async function stop(code: number): Promise<never> {
  if (!stopping) {
    stopping = true;
    await writeAllocProf().catch((err) => log.error({ err }, 'allocation profile not written'));
    try {
      await host.stop();
    } catch (err) {
      log.error({ err }, 'stop failed');
      code = 1;
    }
  }
  process.exit(code);
}

process.on('message', (m: ParentMsg) => {
  if (m.op === 'stop') {
    void stop(0);
    return;
  }
  if (m.op === 'memory') {
    if (m.snapshot) v8.writeHeapSnapshot(m.snapshot);
    // the JS heap by space too: how much of it is the young generation, old objects, code
    const spaces = Object.fromEntries(v8.getHeapSpaceStatistics().map((x) => [x.space_name, x.space_size]));
    send({ op: 'reply', id: m.id, value: { ...process.memoryUsage(), spaces } });
    return;
  }
  if (m.op !== 'request') return;
  host.bus.request(m.topic, m.payload, { timeoutMs: m.timeout_ms ?? 10_000 }).then(
    (value) => send({ op: 'reply', id: m.id, value }),
    (err) => send({ op: 'reply', id: m.id, error: serializeError(err) }),
  );
});
// the parent went away (crashed bench): do not linger
process.on('disconnect', () => void stop(0));
process.on('SIGTERM', () => void stop(0));

try {
  await host.start();
  await startAllocProf();
  send({ op: 'ready' });
} catch (err) {
  const e = err as Error;
  send({ op: 'start-failed', error: `${errorCode(err) ? `${errorCode(err)}: ` : ''}${e.message}` });
  process.exit(1);
}
