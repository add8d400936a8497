/**
 * The status module reports `hub_projects{state}` itself (it answers `metrics/status`): every
 * project, disabled ones too, by the presence this instance's read model has, including the
 * projects that existed before the module started. /metrics (the web module) only renders it.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { type MetricFamily, metricsTopic } from '../../../core/metrics.js';
import { STATUS } from '../../../modules/status/contract/topics.js';
import { DRIVERS, type Harness, startStatus } from './harness.js';

const STATES = ['offline', 'connecting', 'verifying', 'online', 'disconnecting'];

for (const driver of DRIVERS) {
  describe(`status metrics on ${driver}`, () => {
    let h: Harness;
    before(async () => {
      h = await startStatus(driver);
    });
    after(() => h.close());

    /** hub_projects as a status module answers it: state → count. */
    const projects = async (on: Harness): Promise<Record<string, number>> => {
      const families = await on.request<MetricFamily[]>(metricsTopic('status'));
      const f = families.find((x) => x.name === 'hub_projects');
      assert.ok(f, 'hub_projects is among the status module’s series');
      assert.equal(f.type, 'gauge');
      assert.equal(f.help, 'Projects by presence state (as seen by this instance)');
      assert.deepEqual(f.labelNames, ['state']);
      return Object.fromEntries(f.samples.map((s) => [s.labels?.state, s.value]));
    };

    test('hub_projects counts the projects made before the module started, then follows presence', async () => {
      const early1 = await h.create('early-1');
      const early2 = await h.create('early-2');
      await h.bringOnline('early-1', early1.secret);
      await h.stopHost(); // the last changes are flushed on stop

      // projects that existed before this status module started
      const second = await h.restartHost();
      try {
        const first = await projects(second);
        assert.deepEqual(Object.keys(first), STATES, 'every state is a series, zeros included');
        assert.equal(first.online, 1);
        assert.equal(first.offline, 1);

        await second.bringOnline('early-2', early2.secret);
        const next = await projects(second);
        assert.equal(next.online, 2);
        assert.equal(next.offline, 0);

        // a disabled project is a project too: counted, offline
        await second.create('early-3');
        await second.request(STATUS.disable, { project_id: 'early-3' });
        const last = await projects(second);
        assert.equal(last.offline, 1);
        assert.equal(last.online, 2);
      } finally {
        await second.stopHost();
      }
    });
  });
}
