/**
 * A list filter's time (`since`, `until`): an ISO 8601 time or milliseconds since the epoch, as a
 * string (a query parameter) or a number (a bus or gRPC request). Years 1 to 9999 only: the
 * driver writes later years in a form PostgreSQL refuses, so one is a caller's mistake, said as one
 * (the same rule as the command list's filter, modules/command/validate.ts).
 */
import { z } from 'zod';
import { shown } from './schemas.js';

/** The times a list filter may name (years 1 to 9999), in ms: the command list uses them too. */
export const TIME_MIN = Date.parse('0001-01-01T00:00:00.000Z');
export const TIME_MAX = Date.parse('9999-12-31T23:59:59.999Z');

/** The instant as ms, or NaN when it is not one. */
export function instantMs(v: unknown): number {
  if (typeof v === 'number') return Number.isFinite(v) ? v : Number.NaN;
  if (typeof v !== 'string' || v.trim() === '') return Number.NaN;
  return /^\d+$/.test(v) ? Number(v) : Date.parse(v);
}

/** `since` / `until` of a list: parsed to a Date, refused with the value shown otherwise. */
export const instant = z.union([z.string(), z.number()]).transform((v, ctx) => {
  const t = instantMs(v);
  if (Number.isNaN(t)) {
    ctx.addIssue({ code: 'custom', message: `expected an ISO time or milliseconds since the epoch, got ${shown(v)}` });
    return z.NEVER;
  }
  if (t < TIME_MIN || t > TIME_MAX) {
    ctx.addIssue({ code: 'custom', message: `must be between years 1 and 9999, got ${shown(v)}` });
    return z.NEVER;
  }
  return new Date(t);
});
