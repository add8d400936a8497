/**
 * The wire contract written down three times must say the same thing: the zod schemas (code),
 * `docs/wire-schema.json` (generated from them, committed) and the README's wire section.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { describe, test } from 'node:test';
import { DOWNLINK_DATA_TYPES, UPLINK_COMMAND_TYPES, UPLINK_DATA_TYPES } from '../../modules/shared/protocol.js';
import { WIRE_MESSAGES, wireJsonSchemaText } from '../../modules/shared/wire-schema.js';
import { REPO_ROOT } from '../helpers/process.js';

const README = fs.readFileSync(path.join(REPO_ROOT, 'README.md'), 'utf8');
const COMMITTED = path.join(REPO_ROOT, 'docs/wire-schema.json');

function wireSection(): string {
  const start = README.indexOf('## MQTT wire protocol');
  assert.ok(start >= 0, 'README has a "MQTT wire protocol" section');
  const end = README.indexOf('\n## ', start + 1);
  return README.slice(start, end < 0 ? undefined : end);
}

// biome-ignore lint/suspicious/noExplicitAny: JSON Schema read by key
type Json = any;

/** Property names of a payload schema (the object branch of a `null | object` union). */
function payloadFields(def: Json): string[] {
  const obj = def.anyOf ? def.anyOf.find((b: Json) => b.type === 'object') : def;
  return Object.keys(obj?.properties ?? {});
}

describe('wire contract', () => {
  test('docs/wire-schema.json is what the zod schemas generate (npm run wire-schema)', () => {
    assert.ok(fs.existsSync(COMMITTED), 'docs/wire-schema.json is committed');
    assert.equal(
      fs.readFileSync(COMMITTED, 'utf8'),
      wireJsonSchemaText(),
      'docs/wire-schema.json is out of date: run `npm run wire-schema` and commit it',
    );
  });

  test('the schema covers every message type the parsers know', () => {
    const names = WIRE_MESSAGES.map((m) => m.name).sort();
    assert.deepEqual(names, [...UPLINK_COMMAND_TYPES, ...UPLINK_DATA_TYPES, ...DOWNLINK_DATA_TYPES].sort());
  });

  test('the README wire section names every message type and every payload field of the schema', () => {
    const section = wireSection();
    const schema = JSON.parse(wireJsonSchemaText());
    const missing: string[] = [];
    for (const m of WIRE_MESSAGES) {
      if (!section.includes(`\`${m.name}`)) missing.push(`type ${m.name}`);
      const def =
        schema.$defs[
          `${m.name.replace(/(^|_)([a-z])/g, (_s: string, _u: string, c: string) => c.toUpperCase())}Payload`
        ];
      for (const f of payloadFields(def)) {
        if (!new RegExp(`\\b${f}\\b`).test(section)) missing.push(`${m.name}.${f}`);
      }
    }
    assert.deepEqual(missing, [], `missing from the README's wire section: ${missing.join(', ')}`);
  });

  test('times are documented as both forms in the schema and the README', () => {
    const schema = JSON.parse(wireJsonSchemaText());
    const start = schema.$defs.RegisterPayload.properties.start_time;
    assert.deepEqual(
      start.anyOf.map((b: Json) => b.type),
      ['integer', 'string'],
    );
    assert.match(wireSection(), /RFC 3339/);
    const nv = schema.$defs.RegisterPayload.properties.node_version;
    assert.deepEqual(
      nv.anyOf.map((b: Json) => b.type),
      ['string', 'object'],
    );
  });
});
