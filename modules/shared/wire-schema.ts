/**
 * The wire contract as JSON Schema (draft 2020-12), generated from the zod schemas parseUplink
 * and parseDownlink validate with (zod 4 `z.toJSONSchema`, the input side: what a sender may
 * send), so the document for agent authors cannot drift from the code. `docs/wire-schema.json`
 * is this output, committed; `test/docs/wire-schema.test.ts` fails when the two differ
 * (regenerate with `npm run wire-schema`).
 *
 * @example node dist/modules/shared/wire-schema.js docs/wire-schema.json
 */
import fs from 'node:fs';
import { fileURLToPath } from 'node:url';
import { z } from 'zod';
import {
  CommandMessageSchema,
  DataMessageSchema,
  RegisterAckPayloadSchema,
  ReregisterPayloadSchema,
  UPLINK_TOPIC,
  UPLINK_TYPES,
  UPLINKS,
} from './protocol.js';

type Json = Record<string, unknown>;

/** One message: its direction, topic, envelope kind, type name and payload schema. */
interface MessageSpec {
  name: string;
  kind: 'command' | 'message';
  direction: 'uplink' | 'downlink';
  topic: string;
  payload: z.ZodType;
  description: string;
}

const MESSAGE_DOWN = 'wdd/RDMC/message/down/{project_id}';

/** Every message type with a fixed payload, in the order of docs/wire-protocol.md#message-types: the uplinks from their table, then the downlinks. */
export const WIRE_MESSAGES: readonly MessageSpec[] = [
  ...UPLINK_TYPES.map((name): MessageSpec => {
    const spec = UPLINKS[name];
    return {
      name,
      kind: spec.kind === 'command' ? 'command' : 'message',
      direction: 'uplink',
      topic: UPLINK_TOPIC[spec.kind],
      payload: spec.schema,
      description: spec.description,
    };
  }),
  {
    name: 'register_ack',
    kind: 'message',
    direction: 'downlink',
    topic: MESSAGE_DOWN,
    payload: RegisterAckPayloadSchema,
    description: 'the answer to every register; a refusal carries the reason (field and problem)',
  },
  {
    name: 'reregister',
    kind: 'message',
    direction: 'downlink',
    topic: MESSAGE_DOWN,
    payload: ReregisterPayloadSchema,
    description: 'register again (the hub lost the session or does not know it)',
  },
];

/** The input-side JSON Schema of one zod schema, without its own `$schema` line. */
function jsonSchemaOf(schema: z.ZodType): Json {
  const js = z.toJSONSchema(schema, { io: 'input', target: 'draft-2020-12' }) as Json;
  delete js.$schema;
  return js;
}

const pascal = (s: string) => s.replace(/(^|_)([a-z])/g, (_m, _u, c: string) => c.toUpperCase());

/** The whole document: envelopes, payloads and one definition per message, and `oneOf` them all. */
export function wireJsonSchema(): Json {
  const defs: Record<string, Json> = {
    CommandEnvelope: {
      ...jsonSchemaOf(CommandMessageSchema),
      description:
        'A command (always signed): BaseMessage + {command_type, payload, signature} (docs/wire-protocol.md#the-envelope)',
    },
    DataEnvelope: {
      ...jsonSchemaOf(DataMessageSchema),
      description:
        'A data message: BaseMessage + {data_type, payload, encrypted, signature?} (docs/wire-protocol.md#the-envelope)',
    },
  };
  const refs: Json[] = [];
  for (const m of WIRE_MESSAGES) {
    const payloadName = `${pascal(m.name)}Payload`;
    defs[payloadName] = jsonSchemaOf(m.payload);
    const typeKey = m.kind === 'command' ? 'command_type' : 'data_type';
    defs[m.name] = {
      description: `${m.direction} on ${m.topic}: ${m.description}`,
      allOf: [{ $ref: `#/$defs/${m.kind === 'command' ? 'CommandEnvelope' : 'DataEnvelope'}` }],
      properties: { [typeKey]: { const: m.name }, payload: { $ref: `#/$defs/${payloadName}` } },
      required: [typeKey, 'payload'],
    };
    refs.push({ $ref: `#/$defs/${m.name}` });
  }
  return {
    $schema: 'https://json-schema.org/draft/2020-12/schema',
    title: 'gmq-hub MQTT wire protocol',
    description:
      'Every message of docs/wire-protocol.md#message-types, generated from modules/shared/protocol.ts (npm run wire-schema). Times are ' +
      'RFC 3339 strings or ms integers; unknown fields are kept. The signature is HMAC-SHA256 over the RFC 8785 ' +
      'canonical JSON of the message as sent, without its signature field.',
    oneOf: refs,
    $defs: defs,
  };
}

/** The committed text: two-space JSON with a final newline. */
export function wireJsonSchemaText(): string {
  return `${JSON.stringify(wireJsonSchema(), null, 2)}\n`;
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  const out = process.argv[2];
  if (out) fs.writeFileSync(out, wireJsonSchemaText());
  else process.stdout.write(wireJsonSchemaText());
}
