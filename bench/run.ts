/**
 * `npm run bench` runs every suite but `soak`; `npm run bench -- bus restart` runs those alone.
 * Each suite prints a table with its raw baseline measured in the same run and writes
 * bench/results/<suite>.json.
 */
import { runAnnounceSuite } from './announce.js';
import { runAsyncSuite } from './async.js';
import { runBusSuite } from './bus.js';
import { runConnectionHeapSuite } from './connection-heap.js';
import { runGrpcStreamSuite } from './grpc-stream.js';
import { printSuite, type SuiteResult, saveSuite } from './harness.js';
import { runHeartbeatSuite } from './heartbeat.js';
import { runMemorySuite } from './memory.js';
import { runOutgoingSuite } from './outgoing.js';
import { runRestartSuite } from './restart.js';
import { runSoakSuite } from './soak.js';
import { runStatementsSuite } from './statements.js';
import { runSyncConcurrentSuite, runSyncSuite } from './sync.js';
import { runUplinkSuite } from './uplink.js';
import { runWsFanoutSuite } from './ws-fanout.js';

const SUITES: Record<string, () => Promise<SuiteResult>> = {
  bus: runBusSuite,
  outgoing: runOutgoingSuite,
  'connection-heap': runConnectionHeapSuite,
  uplink: runUplinkSuite,
  restart: runRestartSuite,
  'ws-fanout': runWsFanoutSuite,
  'grpc-stream': runGrpcStreamSuite,
  sync: runSyncSuite,
  statements: runStatementsSuite,
  announce: runAnnounceSuite,
  'sync-concurrent': runSyncConcurrentSuite,
  async: runAsyncSuite,
  heartbeat: runHeartbeatSuite,
  memory: runMemorySuite,
  soak: runSoakSuite,
};
/** Run only when named (`npm run bench -- soak`): ten minutes, not part of the whole bench. */
const NAMED_ONLY = new Set(['soak']);

const wanted = process.argv.slice(2).filter((a) => !a.startsWith('-'));
const unknown = wanted.filter((w) => !SUITES[w]);
if (unknown.length > 0) {
  console.error(`unknown suite(s): ${unknown.join(', ')}; known: ${Object.keys(SUITES).join(', ')}`);
  process.exit(2);
}
let failedGoals = 0;
for (const name of wanted.length > 0 ? wanted : Object.keys(SUITES).filter((s) => !NAMED_ONLY.has(s))) {
  const result = await SUITES[name]();
  printSuite(result);
  console.log(`  saved ${saveSuite(result)}`);
  failedGoals += result.rows.filter((r) => r.met === false).length;
}
console.log(failedGoals === 0 ? '\nall goals met' : `\n${failedGoals} goal(s) not met`);
process.exit(0);
