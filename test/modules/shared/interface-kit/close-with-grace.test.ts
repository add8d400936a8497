import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { closeWithGrace } from '../../../../modules/shared/interface-kit/close-with-grace.js';

describe('interface kit: close with a grace period', () => {
  test('a close within the grace is graceful: nothing is forced', async () => {
    let forced = 0;
    const how = await closeWithGrace(
      1_000,
      () => new Promise((r) => setTimeout(r, 10)),
      () => forced++,
    );
    assert.equal(how, 'graceful');
    await new Promise((r) => setTimeout(r, 20));
    assert.equal(forced, 0, 'the force timer was cleared');
  });

  test('a close past the grace is forced once, then completes', async () => {
    let release!: () => void;
    const closed = new Promise<void>((r) => {
      release = r;
    });
    let forced = 0;
    const how = await closeWithGrace(
      20,
      () => closed,
      () => {
        forced++;
        release();
      },
    );
    assert.equal(how, 'forced');
    assert.equal(forced, 1);
  });
});
