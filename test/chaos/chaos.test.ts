/**
 * A small run of the fault suite in `npm test`: only scenarios that hold on main today (the full
 * suite, `npm run chaos`, is not part of `npm test`). A SIGTERM of the hub under load: every
 * command answered 2xx ends terminal, with its result whenever an agent ran it, run once.
 */
import assert from 'node:assert/strict';
import os from 'node:os';
import path from 'node:path';
import { it } from 'node:test';
import { scaled } from '../helpers/wait.js';
import { runChaos } from './run.js';

it('chaos: sigterm under load loses nothing and runs nothing twice', { timeout: scaled(225_000) }, async (t) => {
  const commands = 150;
  const [f] = await runChaos(['sigterm'], {
    commands,
    agents: 3,
    pauseMs: 5_000,
    outageMs: 5_000,
    stallMs: 60_000,
    logDir: path.join(os.tmpdir(), 'gmq-chaos-logs'),
    log: (line) => t.diagnostic(line),
  });
  assert.equal(f.accepted, commands);
  assert.equal(f.lost, 0, JSON.stringify(f.lostSamples));
  assert.equal(f.twice, 0);
  assert.equal(f.terminal, commands);
  assert.equal(f.stored, f.executed);
  assert.equal(f.notes.exit, 0, 'the hub exits 0 on SIGTERM');
});
