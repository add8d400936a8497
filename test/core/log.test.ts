/**
 * Which name a process logs under and in which format (issue 15, item 6): a field agent is
 * `gmq-agent`, anything with a hub module `gmq-hub`; readable lines on a terminal, JSON for
 * everything else, `LOG_FORMAT` over both.
 */
import assert from 'node:assert/strict';
import path from 'node:path';
import { describe, test } from 'node:test';
import { loadConfig } from '../../core/config.js';
import { logFormat, processName } from '../../core/log.js';
import { REPO_ROOT } from '../helpers/process.js';

describe('log name and format', () => {
  test('the shipped hub config logs as gmq-hub, the example agent as gmq-agent', () => {
    const hub = loadConfig(path.join(REPO_ROOT, 'config.yml'), {});
    const agent = loadConfig(path.join(REPO_ROOT, 'examples/agent/config.yml'), {
      AGENT_PROJECT_ID: 'plant-7',
      AGENT_SECRET: 's',
    });
    assert.equal(processName(hub), 'gmq-hub');
    assert.equal(processName(agent), 'gmq-agent');
    // an agent beside hub modules is a hub that also runs an agent
    const both = { modules: { agent: { provider: 'agent', enable: true }, web: { provider: 'web', enable: true } } };
    assert.equal(processName(both), 'gmq-hub');
    const disabledHub = {
      modules: { agent: { provider: 'agent', enable: true }, web: { provider: 'web', enable: false } },
    };
    assert.equal(processName(disabledHub), 'gmq-agent');
  });

  test('pretty on a terminal, JSON otherwise; LOG_FORMAT decides when set', () => {
    assert.equal(logFormat({}, true), 'pretty');
    assert.equal(logFormat({}, false), 'json');
    assert.equal(logFormat({ LOG_FORMAT: 'json' }, true), 'json');
    assert.equal(logFormat({ LOG_FORMAT: 'PRETTY' }, false), 'pretty');
    assert.equal(logFormat({ LOG_FORMAT: 'nonsense' }, false), 'json');
    // production keeps JSON on a terminal too (docker run -t), unless asked otherwise
    assert.equal(logFormat({ NODE_ENV: 'production' }, true), 'json');
    assert.equal(logFormat({ NODE_ENV: 'production', LOG_FORMAT: 'pretty' }, true), 'pretty');
    assert.equal(logFormat({ NODE_ENV: 'development' }, true), 'pretty');
  });
});
