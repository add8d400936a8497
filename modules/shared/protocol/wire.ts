/**
 * The fixed names and limits of the wire (docs/wire-protocol.md#topics): topics, the protocol
 * version, the size limit, and what a project id and a type name may be. Agents we do not
 * control depend on every string here: do not rename anything.
 */

export const TOPIC_COMMAND_UP = 'wdd/RDMC/command/up';
export const TOPIC_MESSAGE_UP = 'wdd/RDMC/message/up';
export const COMMAND_DOWN_PREFIX = 'wdd/RDMC/command/down/';
export const MESSAGE_DOWN_PREFIX = 'wdd/RDMC/message/down/';
export const commandDownTopic = (projectId: string): string => `${COMMAND_DOWN_PREFIX}${projectId}`;
export const messageDownTopic = (projectId: string): string => `${MESSAGE_DOWN_PREFIX}${projectId}`;

/** docs/wire-protocol.md#the-envelope: every message is version "1.0". */
export const PROTOCOL_VERSION = '1.0';
/** Messages larger than this are refused before any decoding (256 KiB). */
export const DEFAULT_MAX_MESSAGE_BYTES = 256 * 1024;
/** The longest project id, in UTF-8 bytes. */
export const MAX_PROJECT_ID_BYTES = 128;

/** Command type names: 1–64 characters of [a-z0-9_.-]. */
export const COMMAND_TYPE_RE = /^[a-z0-9_.-]{1,64}$/;

/** Any RFC 9562 UUID, either case (ids are stored lower-case): message ids and command ids. */
export const UUID_RE = /^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$/;

export function isUuid(v: unknown): v is string {
  return typeof v === 'string' && UUID_RE.test(v);
}

// C0 and C1 control characters and DEL ([MQTT-1.5.4-2] says topic names SHOULD NOT hold them),
// the MQTT separators and wildcards ('/', '+', '#'), and lone surrogates, which cannot be encoded
// as UTF-8 ([MQTT-1.5.4-1]). NUL is a C0 control character.
// biome-ignore lint/suspicious/noControlCharactersInRegex: matching control characters is the point
const FORBIDDEN_IN_PROJECT_ID = /[\u0000-\u001f\u007f-\u009f/+#]|\p{Cs}/u;

/**
 * A project id is one MQTT topic level (it ends `.../down/{project_id}`): a non-empty string of at
 * most 128 UTF-8 bytes, without '/', '+', '#', NUL or other control characters, not starting
 * with '$' (brokers reserve `$` topics, [MQTT-4.7.2-1]).
 *
 * @example isValidProjectId('plant-7') === true; isValidProjectId('a/b') === false
 */
export function isValidProjectId(id: unknown): id is string {
  return (
    typeof id === 'string' &&
    id.length > 0 &&
    id.length <= MAX_PROJECT_ID_BYTES && // UTF-8 is never shorter than UTF-16 code units
    Buffer.byteLength(id, 'utf8') <= MAX_PROJECT_ID_BYTES &&
    !id.startsWith('$') &&
    !FORBIDDEN_IN_PROJECT_ID.test(id)
  );
}
