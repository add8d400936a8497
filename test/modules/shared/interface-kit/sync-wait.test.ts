import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { errorCode } from '../../../../core/errors.js';
import { syncWait } from '../../../../modules/shared/interface-kit/sync-wait.js';

const policy = { default_sync_wait_ms: 30_000, max_sync_wait_ms: 300_000 };

describe('interface kit: sync-wait policy', () => {
  test('wait_ms when given, up to the maximum', () => {
    assert.equal(syncWait(policy, { wait_ms: 150 }), 150);
    assert.equal(syncWait(policy, { wait_ms: 150, timeout_ms: 60_000 }), 150, 'wait_ms wins over timeout_ms');
    assert.equal(syncWait(policy, { wait_ms: 300_000 }), 300_000);
    assert.equal(syncWait(policy, { wait_ms: 900_000 }), 300_000);
  });

  test('without wait_ms: the default, or the execution timeout when longer, up to the maximum', () => {
    assert.equal(syncWait(policy, {}), 30_000);
    assert.equal(syncWait(policy, { timeout_ms: 5_000 }), 30_000);
    assert.equal(syncWait(policy, { timeout_ms: 60_000 }), 60_000);
    assert.equal(syncWait(policy, { timeout_ms: 3_600_000 }), 300_000);
    assert.equal(syncWait({ default_sync_wait_ms: 900_000, max_sync_wait_ms: 300_000 }, {}), 300_000);
  });

  test('a wait_ms under 1 ms is refused, naming the field', () => {
    for (const wait_ms of [0, -1]) {
      assert.throws(
        () => syncWait(policy, { wait_ms }),
        (err: Error & { details?: { field?: string } }) =>
          errorCode(err) === 'CMD_ERR_INVALID' && err.details?.field === 'wait_ms' && /^wait_ms: /.test(err.message),
      );
    }
  });
});
