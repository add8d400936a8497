/**
 * Many hubs as one (issue 11), at small scale: 3 instances on one private PostgreSQL and one
 * private Mosquitto, 5 projects with their agents as processes, a few hundred sends spread over
 * the instances, a WebSocket and a gRPC watcher on every instance, presence sampled on every
 * instance, kill -9 of one instance mid-load and its restart. The full run is `npm run scale`.
 *
 * It asserts the issue's "done means": every instance reports every online project online at
 * every sample; no send refused for an online project, no 504, no 5xx; every watcher sees every
 * result received while it was open, once, states in order; after the kill nothing lost, nothing
 * stranded, nothing run twice, the survivors' callers all served, the dead instance's in-flight
 * commands terminal within 10 s (scaled by GMQ_TEST_TIME_SCALE); the restarted instance serves.
 */
import assert from 'node:assert/strict';
import os from 'node:os';
import path from 'node:path';
import { it } from 'node:test';
import { scaled } from '../helpers/wait.js';
import { report, runScale } from './run.js';

it('scale: 3 instances act as one hub, and a kill -9 of one strands nothing', {
  timeout: scaled(600_000),
}, async (t) => {
  const f = await runScale({
    instances: 3,
    projects: 5,
    commands: 300,
    throughputMs: 0,
    downMs: 12_000,
    takeoverMs: scaled(10_000),
    strandMs: scaled(10_000),
    timeoutMs: 30_000,
    waitMs: scaled(10_000),
    stallMs: scaled(30_000),
    logDir: path.join(os.tmpdir(), 'gmq-scale-logs'),
    log: (line) => t.diagnostic(line),
  });
  report(f, (line) => t.diagnostic(line));
  const failed = f.properties.filter((p) => !p.ok).map((p) => p.line);
  // every property is checked, and all failing ones are named at once
  assert.deepEqual(failed, [], `properties that fail:\n${failed.join('\n')}`);
  assert.ok(f.presence.samples > 0, 'presence was sampled');
  assert.equal(f.audit.accepted > 0, true, 'the load was accepted');
  assert.equal(f.watchers.length, 8, 'two watchers on each instance, two more on the restarted one');
  assert.ok(
    f.watchers.every((w) => w.of > 0),
    'every watcher had results to see',
  );
});
