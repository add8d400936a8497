/**
 * The uplink fuzz suite, a few thousand uplinks (the full run: `npm run fuzz:uplink`, 10^6).
 * See uplink-fuzz.ts for the properties checked.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { figureLine, runUplinkFuzz } from './uplink-fuzz.js';

const UPLINKS = Number(process.env.FUZZ_UPLINKS ?? 3_000);

test(`${UPLINKS} hostile uplinks from one project's agent: no crash, no 5xx, no effect on another project, all counted`, async (t) => {
  const seed = Number(process.env.FUZZ_SEED ?? Date.now() % 2 ** 31);
  const fig = await runUplinkFuzz({ uplinks: UPLINKS, batch: 250, checkEvery: 2, seed });
  t.diagnostic(figureLine(fig));
  assert.deepEqual(fig.violations, [], `seed ${seed} (FUZZ_SEED=${seed} reproduces): ${figureLine(fig)}`);
  assert.equal(fig.crashes + fig.http5xx + fig.crossProject + fig.unaccounted + fig.blocked, 0);
  assert.ok(fig.sent >= UPLINKS);
  assert.ok(Object.keys(fig.rejected).length > 3, 'the generator reaches several refusals');
  assert.ok(fig.accepted > 0, 'and some uplinks get through');
});
