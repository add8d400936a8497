/**
 * Regression (issue 8, finding 8): the embedded broker's denials — not JSON, another project's
 * id, too large, bad credentials — appeared in no `/metrics` series. Now each is counted in
 * `hub_broker_denials_total{kind, reason}`.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { buildData, TOPIC_MESSAGE_UP } from '../../modules/shared/protocol.js';
import { FullHub, HandAgent, metricValue } from '../fuzz/uplink-hub.js';
import { connectClient } from '../helpers/mqtt.js';

describe('broker denials in /metrics', () => {
  let hub: FullHub;
  let a: HandAgent;
  before(async () => {
    hub = await FullHub.start({ broker: { max_payload_bytes: 2_048 } });
    a = await HandAgent.connect(hub, await hub.provision('a'));
  });
  after(async () => {
    await a?.close();
    await hub?.stop();
  });

  test('not JSON, wrong project, too large and a bad password are each counted by kind and reason', async () => {
    await a.publishRaw(TOPIC_MESSAGE_UP, 'this is not json');
    await a.publishRaw(TOPIC_MESSAGE_UP, buildData('someone-else', 'heartbeat', {}));
    await a.publishRaw(TOPIC_MESSAGE_UP, buildData(a.projectId, 'heartbeat', { metrics: { pad: 'x'.repeat(4_000) } }));
    await a.publishRaw('wdd/RDMC/command/down/someone-else', buildData(a.projectId, 'heartbeat', {}));
    await assert.rejects(
      connectClient(hub.brokerUrl, { username: a.projectId, password: 'wrong', protocolVersion: 4 }),
    );
    const want: Record<string, number> = {
      'hub_broker_denials_total{kind="publish",reason="not_json"}': 1,
      'hub_broker_denials_total{kind="publish",reason="project_id"}': 1,
      'hub_broker_denials_total{kind="publish",reason="too_large"}': 1,
      'hub_broker_denials_total{kind="publish",reason="topic"}': 1,
      'hub_broker_denials_total{kind="auth",reason="bad_credentials"}': 1,
    };
    let text = '';
    await hub
      .until(async () => {
        text = await hub.metrics();
        return Object.entries(want).every(([series, n]) => metricValue(text, series) === n);
      }, `the denials in /metrics`)
      .catch(() => {
        assert.fail(
          `expected ${JSON.stringify(want)} in:\n${text
            .split('\n')
            .filter((l) => l.includes('denial'))
            .join('\n')}`,
        );
      });
  });
});
