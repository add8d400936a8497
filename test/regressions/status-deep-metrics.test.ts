/**
 * Regression (issue 8, finding 5): metrics nested 10 000 deep in one monitor message made
 * `GET /project/:id/status`, `/projects` and `/projects/online` answer 500 for everyone. Now
 * the monitor is refused at the edge, and a view whose stored value no response could carry
 * leaves that value out instead of failing the whole listing.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { buildData, TOPIC_MESSAGE_UP } from '../../modules/shared/protocol.js';
import { type PresenceEntry, projectView } from '../../modules/status/presence.js';
import type { ProjectRecord } from '../../modules/status/projects.js';
import { FullHub, HandAgent } from '../fuzz/uplink-hub.js';

describe('deep metrics from one agent do not break the project views', () => {
  let hub: FullHub;
  let a: HandAgent;
  let b: HandAgent;
  before(async () => {
    hub = await FullHub.start();
    a = await HandAgent.connect(hub, await hub.provision('a'));
    b = await HandAgent.connect(hub, await hub.provision('b'));
    await a.goOnline(hub);
    await b.goOnline(hub);
  });
  after(async () => {
    await a?.close();
    await b?.close();
    await hub?.stop();
  });

  test('a monitor 10 000 levels deep: every view still answers 200', async () => {
    const shell = JSON.stringify(buildData(a.projectId, 'monitor', { metrics: { deep: '__DEEP__' } }));
    await a.publishRaw(
      TOPIC_MESSAGE_UP,
      shell.replace('"__DEEP__"', `${'{"d":'.repeat(10_000)}1${'}'.repeat(10_000)}`),
    );
    // B's monitor after it goes through the same mailbox, so once B's shows, A's was handled;
    // A's metrics stay whatever the deep one left
    await b.data('monitor', { metrics: { after: 1 } });
    await hub.until(
      async () => (await hub.api('GET', `/project/${b.projectId}/status`)).json?.metrics?.after === 1,
      'the monitor sent after the deep one',
    );
    for (const path of [
      `/project/${a.projectId}/status`,
      `/project/${b.projectId}/status`,
      '/projects',
      '/projects/online',
    ]) {
      const r = await hub.api('GET', path);
      assert.equal(r.status, 200, `${path}: ${JSON.stringify(r.json).slice(0, 200)}`);
    }
    const online = await hub.api('GET', '/projects/online');
    const ids = online.json.items.map((p: { project_id: string }) => p.project_id);
    assert.ok(ids.includes(a.projectId) && ids.includes(b.projectId));
  });

  test('a stored value no serializer survives is left out of the view', () => {
    let deep: Record<string, unknown> = { leaf: 1 };
    for (let i = 0; i < 20_000; i++) deep = { d: deep };
    const rec: ProjectRecord = {
      project_id: 'p',
      name: null,
      secret: 's',
      prev_secret: null,
      prev_secret_expires_at: null,
      enabled: true,
      metadata: {},
      created_at: 0,
    };
    const e = { project_id: 'p', state: 'online', state_since: 0, metrics: deep, last_alert: null } as PresenceEntry;
    const v = projectView(rec, e);
    assert.equal(v.metrics, null);
    assert.doesNotThrow(() => JSON.stringify(v));
    assert.deepEqual(projectView(rec, { ...e, metrics: { cpu: 1 } }).metrics, { cpu: 1 });
  });
});
