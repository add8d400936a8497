/**
 * The field schemas every message is built from, and the tolerant reading of the seed's shapes
 * (docs/wire-protocol.md#seed-shapes-the-hub-accepts): times as RFC 3339 strings or ms, a `null`
 * payload as `{}`. Consumers only ever see the normalised values.
 */
import { z } from 'zod';
import { INT_MARK, show } from './describe.js';

export const uuid = () => z.guid(); // 8-4-4-4-12 hex, any version/variant: agents choose their generator
/** Safe integers; the marker message lets describeIssue say "integer" when a string arrives (zod says "number"). */
export const int = () => z.int({ error: INT_MARK });
const msInt = () => int().nonnegative();
/**
 * A `null` payload (a Go agent marshals a nil payload that way) reads as `{}` when every field is
 * optional. A union rather than z.preprocess so the JSON Schema can say "object or null".
 */
export const orEmpty = <T extends z.ZodType<object>>(schema: T) =>
  z.union([z.null().transform(() => ({}) as z.output<T>), schema], { error: 'expected object' });

// RFC 3339 §5.6 date-time (ISO 8601 profile): full date, 'T' (or 't' / a space, §5.6 NOTE),
// time with optional fraction (Go's RFC3339Nano sends up to 9 digits), and a zone, required:
// a time without one would mean a different instant on every host.
const RFC3339_RE =
  /^(\d{4})-(\d{2})-(\d{2})[Tt ](\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,9}))?(?:([Zz])|([+-])(\d{2}):(\d{2}))$/;

/**
 * ms since the epoch of an RFC 3339 date-time (`2024-01-01T12:00:00Z`, `2024-01-01T20:00:00.5+08:00`),
 * or null when `s` is not one (fields out of range included; fractions below 1 ms are cut off).
 *
 * @example parseRfc3339('2024-01-01T12:00:00Z') === 1704110400000
 */
export function parseRfc3339(s: string): number | null {
  const m = RFC3339_RE.exec(s);
  if (!m) return null;
  const [y, mo, d, h, mi, sec] = [m[1], m[2], m[3], m[4], m[5], m[6]].map(Number);
  if (mo < 1 || mo > 12 || d < 1 || h > 23 || mi > 59 || sec > 59) return null;
  const daysInMonth = new Date(Date.UTC(y, mo, 0)).getUTCDate();
  if (d > daysInMonth) return null;
  const ms = m[7] ? Number(m[7].slice(0, 3).padEnd(3, '0')) : 0;
  let offsetMin = 0;
  if (!m[8]) {
    const oh = Number(m[10]);
    const om = Number(m[11]);
    if (oh > 23 || om > 59) return null;
    offsetMin = (m[9] === '-' ? -1 : 1) * (oh * 60 + om);
  }
  const t = Date.UTC(y, mo - 1, d, h, mi, sec, ms) - offsetMin * 60_000;
  if (y < 100) return null; // Date.UTC maps years 0-99 to 1900-1999
  return Number.isSafeInteger(t) && t >= 0 ? t : null;
}

const TIME_EXPECTED = 'expected an RFC 3339 time string or ms integer';
/**
 * A time as agents send it (docs/wire-protocol.md#seed-shapes-the-hub-accepts, seed 002): an RFC 3339 string or ms since the epoch,
 * read as ms. Consumers only ever see numbers; the signature still covers the string that was
 * sent (withPayload binds the decoded object).
 */
export const wireTime = () =>
  z
    .union([msInt(), z.string().meta({ format: 'date-time' })], { error: TIME_EXPECTED })
    .transform((v, ctx) => {
      if (typeof v === 'number') return v;
      const ms = parseRfc3339(v);
      if (ms === null) {
        ctx.issues.push({
          code: 'custom',
          input: v,
          message: `expected an RFC 3339 time like "2024-01-01T12:00:00Z" or ms integer, got ${show(v)}`,
        });
        return z.NEVER;
      }
      return ms;
    })
    .meta({
      description:
        'RFC 3339 date-time with a zone ("2024-01-01T12:00:00Z") or integer milliseconds since the epoch; read as ms',
    });
