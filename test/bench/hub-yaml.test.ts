/**
 * The benchmarks' hubs run what a hub started from the shipped config.yml runs: the same
 * enabled modules with their settings, except where bench/env.ts hubYaml says why (gRPC: no
 * suite calls it; the embedded broker: absent when a suite uses Mosquitto; ports and databases).
 * A hand-made module list without `audit` hid a 4× cap on every send for a round (issue 13).
 */
import assert from 'node:assert/strict';
import path from 'node:path';
import { test } from 'node:test';
import { type BenchDb, hubYaml } from '../../bench/env.js';
import { loadConfig, parseConfig } from '../../core/config.js';
import { builtinProviders } from '../../modules/index.js';

const db: BenchDb = {
  config: { driver: 'pglite', data_dir: '/tmp/unused' } as BenchDb['config'],
  yaml: '  default: { driver: pglite, data_dir: "/tmp/unused" }',
  drop: async () => undefined,
};
/** Modules the bench leaves out on purpose (see hubYaml's comment). */
const LEFT_OUT = new Set(['grpc']);
/** Settings the bench sets for its own servers, not for what the hub does per command. */
const PLACE = new Set(['port', 'host', 'url', 'client_id', 'username', 'password', 'token']);

function enabled(file: string, text?: string) {
  const cfg = text === undefined ? loadConfig(file, {}) : parseConfig(text, file, {});
  return Object.fromEntries(
    Object.values(cfg.modules)
      .filter((m) => m.enable)
      .map((m) => [m.name, m]),
  );
}

test('bench hubs run the shipped config.yml modules and settings', () => {
  const providers = builtinProviders();
  const shipped = enabled(path.resolve('config.yml'));
  for (const external of [false, true]) {
    const yaml = hubYaml(external ? { db, mqttUrl: 'mqtt://127.0.0.1:1' } : { db, embeddedPort: 1 });
    const bench = enabled(path.resolve('bench-hub.yml'), yaml);
    const expected = Object.keys(shipped)
      .filter((n) => !LEFT_OUT.has(n) && !(external && n === 'broker'))
      .sort();
    assert.deepEqual(Object.keys(bench).sort(), expected, `modules (${external ? 'Mosquitto' : 'embedded broker'})`);
    for (const name of expected) {
      // each module's settings as the module reads them (its schema's defaults filled in)
      const schema = providers.resolve(shipped[name].provider, name).schema;
      const resolved = (s: Readonly<Record<string, unknown>>) =>
        Object.entries(schema.parse(s) as Record<string, unknown>).filter(([k]) => !PLACE.has(k));
      assert.deepEqual(
        Object.fromEntries(resolved(bench[name].settings)),
        Object.fromEntries(resolved(shipped[name].settings)),
        `${name}: the bench's settings are the shipped ones (but ports, addresses and credentials)`,
      );
    }
  }
});
