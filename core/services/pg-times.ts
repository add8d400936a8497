/**
 * timestamptz values left as PostgreSQL's text, for statements whose rows only ever become ISO
 * 8601 text again (the command module's views and events). node-postgres turns each into a Date
 * (postgres-date: a regular expression, `Date.UTC`, a Date object) and the view then formats it
 * back with `toISOString`: a parse, two allocations and a format per timestamp, five or so per
 * row, several rows per command. Here a session in UTC (`+00`, the usual server setting) gives
 * the ISO text by slicing; any other form goes through node-postgres's own parser, so the
 * result is the same Date-derived text as before either way.
 */
import pg from 'pg';

/** PostgreSQL's type oid of timestamptz. */
const TIMESTAMPTZ_OID = 1184;

const keepText = (v: string): string => v;

/**
 * A statement's `types` (node-postgres per-query type parsers): timestamptz as its text, every
 * other type as node-postgres parses it by default.
 */
export const TIMES_AS_TEXT: pg.CustomTypesConfig = {
  getTypeParser: ((oid: number, format?: 'text' | 'binary') =>
    oid === TIMESTAMPTZ_OID && format !== 'binary'
      ? keepText
      : pg.types.getTypeParser(oid, format as 'text')) as pg.CustomTypesConfig['getTypeParser'],
};

/**
 * `2026-12-05 03:10:11.123456+00`: years 1000 to 9999 (AD; below, Date.UTC would read 0–99 as
 * 1900–1999), up to six fraction digits, UTC.
 */
const UTC_TEXT = /^[1-9]\d{3}-\d\d-\d\d \d\d:\d\d:\d\d(?:\.(\d{1,6}))?\+00$/;

/** node-postgres's own timestamptz parser (postgres-date), for every form but the UTC one. */
const parseTimestamptz = pg.types.getTypeParser(TIMESTAMPTZ_OID, 'text') as (v: string) => Date | number | null;

/** The milliseconds of a fraction's digits (`123456` → `123`, `5` → `500`): truncated, as Date does. */
function millisText(digits: string | undefined): string {
  if (digits === undefined) return '000';
  return digits.length >= 3 ? digits.slice(0, 3) : digits.padEnd(3, '0');
}

/**
 * Whether `v` is PostgreSQL's text of a timestamptz (a space between date and time), as
 * TIMES_AS_TEXT leaves it, rather than ISO text (`T`, as in JSON from `to_jsonb`).
 */
export function isPgTimeText(v: string): boolean {
  return v.length >= 19 && v.charCodeAt(10) === 32;
}

/**
 * The ISO 8601 text (`toISOString`, milliseconds) of a timestamptz given as PostgreSQL's text:
 * the same as `new Date(<node-postgres's Date>).toISOString()`, fraction digits past the
 * millisecond dropped as Date drops them. Null for a value that is no instant (infinity).
 */
export function isoOfPgTime(v: string): string | null {
  const m = UTC_TEXT.exec(v);
  if (m) return `${v.slice(0, 10)}T${v.slice(11, 19)}.${millisText(m[1])}Z`;
  const d = parseTimestamptz(v);
  return d instanceof Date && Number.isFinite(d.getTime()) ? d.toISOString() : null;
}

/** Milliseconds since the epoch of a timestamptz given as PostgreSQL's text (as `isoOfPgTime`). */
export function msOfPgTime(v: string): number | null {
  const m = UTC_TEXT.exec(v);
  if (m) {
    return Date.UTC(
      Number(v.slice(0, 4)),
      Number(v.slice(5, 7)) - 1,
      Number(v.slice(8, 10)),
      Number(v.slice(11, 13)),
      Number(v.slice(14, 16)),
      Number(v.slice(17, 19)),
      Number(millisText(m[1])),
    );
  }
  const d = parseTimestamptz(v);
  if (!(d instanceof Date)) return null;
  const t = d.getTime();
  return Number.isFinite(t) ? t : null;
}
