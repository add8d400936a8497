/**
 * timestamptz as PostgreSQL's text (core/services/pg-times.ts): the command module's hot
 * statements leave their times as text and the views read them with `isoOfPgTime`/`msOfPgTime`.
 * Whatever the text, the answer must be exactly what node-postgres's Date gave before
 * (`toISOString`, `getTime`): a property over instants and offsets, then a real server's text
 * in UTC and in another time zone.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import fc from 'fast-check';
import pg from 'pg';
import { isoOfPgTime, isPgTimeText, msOfPgTime, TIMES_AS_TEXT } from '../../core/services/pg-times.js';
import { iso } from '../../modules/command/rows.js';
import { TEST_DATABASE_URL } from '../helpers/db.js';

const parse = pg.types.getTypeParser(1184, 'text') as (v: string) => Date;
const two = (n: number) => String(n).padStart(2, '0');

/** An instant as PostgreSQL writes a timestamptz: fraction without trailing zeros, offset `+hh[:mm]`. */
function pgText(ms: number, micros: number, offsetMin: number): string {
  const d = new Date(ms + offsetMin * 60_000);
  const year = String(d.getUTCFullYear()).padStart(4, '0');
  const frac = (String(d.getUTCMilliseconds()).padStart(3, '0') + String(micros).padStart(3, '0')).replace(/0+$/, '');
  const sign = offsetMin < 0 ? '-' : '+';
  const off = Math.abs(offsetMin);
  const offText = `${sign}${two(Math.floor(off / 60))}${off % 60 ? `:${two(off % 60)}` : ''}`;
  return `${year}-${two(d.getUTCMonth() + 1)}-${two(d.getUTCDate())} ${two(d.getUTCHours())}:${two(
    d.getUTCMinutes(),
  )}:${two(d.getUTCSeconds())}${frac ? `.${frac}` : ''}${offText}`;
}

describe('timestamptz as text', () => {
  test('any instant, UTC or another offset: the same ISO text and milliseconds as node-postgres’s Date', () => {
    const instant = fc.integer({ min: Date.UTC(1000, 0, 1), max: Date.UTC(9999, 11, 30) });
    const micros = fc.integer({ min: 0, max: 999 });
    const offset = fc.oneof(fc.constant(0), fc.constant(0), fc.constantFrom(330, -480, 60, -150, 345, 840, -720));
    fc.assert(
      fc.property(instant, micros, offset, (ms, us, off) => {
        const text = pgText(ms, us, off);
        const d = parse(text);
        assert.ok(isPgTimeText(text), text);
        assert.equal(isoOfPgTime(text), d.toISOString(), text);
        assert.equal(msOfPgTime(text), d.getTime(), text);
        assert.equal(iso(text), d.toISOString(), text);
      }),
      { numRuns: 20_000 },
    );
  });

  test('what the fast form leaves to node-postgres: years below 1000, BC, infinity', () => {
    for (const text of ['0099-03-04 05:06:07.5+00', '0999-12-31 23:59:59.999999+00', '2000-01-01 00:00:00+00 BC']) {
      const d = parse(text);
      assert.equal(isoOfPgTime(text), d.toISOString(), text);
      assert.equal(msOfPgTime(text), d.getTime(), text);
    }
    // near the fast form but not it: read as node-postgres reads them (or refused as no instant)
    for (const text of [
      '2026-12-05 03:10:11.+00',
      '2026-12-05 03:10:11.1234567+00',
      '2026-12-05 03:1a:11+00',
      '2026-12-05 03:10:11+01',
      '2026-12-05T03:10:11+00',
      '2026-12-05 03:10:11+0',
    ]) {
      const d = parse(text) as Date | null;
      const ok = d instanceof Date && Number.isFinite(d.getTime());
      assert.equal(isoOfPgTime(text), ok ? d.toISOString() : null, text);
      assert.equal(msOfPgTime(text), ok ? d.getTime() : null, text);
    }
    assert.equal(isoOfPgTime('infinity'), null);
    assert.equal(msOfPgTime('-infinity'), null);
    // ISO text (an announced row, from to_jsonb) is not PostgreSQL's text form: read as before
    assert.equal(isPgTimeText('2026-12-05T03:10:11.123456+00:00'), false);
    assert.equal(iso('2026-12-05T03:10:11.123456+00:00'), '2026-12-05T03:10:11.123Z');
  });

  test('a real server’s text, in UTC and in another time zone, reads as its Dates did', async () => {
    const client = new pg.Client({ connectionString: TEST_DATABASE_URL, connectionTimeoutMillis: 5_000 });
    await client.connect();
    try {
      const sql = `SELECT now() AS a, '2026-12-05 03:10:11.1+00'::timestamptz AS b,
                          '1999-01-01 00:00:00+00'::timestamptz AS c, '0050-06-01 12:00:00.000001+00'::timestamptz AS d`;
      for (const zone of ['UTC', 'Asia/Kolkata', 'America/St_Johns']) {
        await client.query(`SET TIME ZONE '${zone}'`);
        // one transaction: now() is its start, the same in both reads
        await client.query('BEGIN');
        const asDates = (await client.query({ text: sql })).rows[0] as Record<string, Date>;
        const asText = (await client.query({ text: sql, types: TIMES_AS_TEXT })).rows[0] as Record<string, string>;
        await client.query('COMMIT');
        for (const k of ['a', 'b', 'c', 'd']) {
          assert.equal(typeof asText[k], 'string', `${zone} ${k}`);
          assert.equal(isoOfPgTime(asText[k]), asDates[k].toISOString(), `${zone} ${k}: ${asText[k]}`);
          assert.equal(msOfPgTime(asText[k]), asDates[k].getTime(), `${zone} ${k}: ${asText[k]}`);
        }
      }
    } finally {
      await client.end();
    }
  });
});
