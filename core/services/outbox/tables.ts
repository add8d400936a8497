/**
 * The SQL of one module's outbox table: its migration (a module runs it among its own
 * migrations, so each module's traffic lands in its own table, the seed's point) and the
 * statements the relay and the operator surface run on it. Table names are checked against
 * TABLE_RE before they are quoted into SQL; every value is a binding.
 */
import type { Knex } from 'knex';
import { HubError } from '../../errors.js';
import type { Migration } from '../migrations.js';
import { TABLE_RE } from './contract.js';

export function checkTable(table: string): string {
  if (!TABLE_RE.test(table))
    throw new HubError('OUTBOX_ERR_INVALID', `outbox table name must match ${TABLE_RE}: "${table}"`, { table });
  return table;
}

/**
 * The migration that creates `table`. One row per event and route: an event two routes want is
 * two rows with one event_id, each with its own attempts, so a dead webhook does not hold the
 * MQTT copy back.
 *
 * @example
 *   await ctx.services.migrate([...myMigrations, outboxMigration('020_outbox', 'command_event_outbox')]);
 */
export function outboxMigration(id: string, table: string): Migration {
  const t = checkTable(table);
  return {
    id,
    up: `
CREATE TABLE IF NOT EXISTS ${t} (
  id bigserial PRIMARY KEY,
  event_id uuid NOT NULL,
  route text NOT NULL,
  event_type text NOT NULL,
  event_key text NOT NULL,
  payload jsonb NOT NULL,
  status text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'published', 'dead')),
  attempts integer NOT NULL DEFAULT 0,
  next_attempt_at timestamptz NOT NULL DEFAULT now(),
  lease_owner text,
  lease_until timestamptz,
  last_error text,
  created_at timestamptz NOT NULL DEFAULT now(),
  updated_at timestamptz NOT NULL DEFAULT now(),
  published_at timestamptz,
  UNIQUE (route, event_id)
);
CREATE INDEX IF NOT EXISTS ${t}_pending ON ${t} (route, event_key, id) WHERE status = 'pending';
CREATE INDEX IF NOT EXISTS ${t}_dead ON ${t} (route, id) WHERE status = 'dead';
CREATE INDEX IF NOT EXISTS ${t}_published ON ${t} (published_at) WHERE status = 'published';
`,
  };
}

export interface ClaimedRow {
  id: string | number;
  event_id: string;
  event_type: string;
  event_key: string;
  payload: unknown;
  attempts: number;
}

type Db = Knex | Knex.Transaction;

async function rows<T>(db: Db, sql: string, args: unknown[]): Promise<T[]> {
  const r = (await db.raw(sql, args as Knex.RawBinding[])) as { rows: T[] };
  return r.rows;
}

/** Writes one row per (event, route) in one statement. */
export function insertEvents(
  db: Db,
  table: string,
  items: Array<{ event_id: string; route: string; event_type: string; event_key: string; payload: unknown }>,
): Promise<unknown> {
  return db.raw(
    `INSERT INTO ${checkTable(table)} (event_id, route, event_type, event_key, payload)
     SELECT v.event_id::uuid, v.route, v.event_type, v.event_key, v.payload
       FROM jsonb_to_recordset(?::jsonb) AS v(event_id text, route text, event_type text, event_key text, payload jsonb)`,
    [JSON.stringify(items)],
  );
}

/**
 * Claims up to `limit` due events of `route` for `owner` with a lease. Only the oldest pending
 * event of each key is eligible (ordering per key), and a row leased by a live instance is
 * skipped; SKIP LOCKED lets several instances claim at once without waiting on each other.
 */
export function claim(db: Db, table: string, route: string, owner: string, leaseMs: number, limit: number) {
  const t = checkTable(table);
  return rows<ClaimedRow>(
    db,
    `UPDATE ${t} o SET lease_owner = ?, lease_until = now() + (?::int * interval '1 millisecond'), updated_at = now()
      WHERE o.id IN (
        SELECT c.id FROM ${t} c
         WHERE c.route = ? AND c.status = 'pending' AND c.next_attempt_at <= now()
           AND (c.lease_until IS NULL OR c.lease_until < now())
           AND NOT EXISTS (SELECT 1 FROM ${t} p WHERE p.route = c.route AND p.event_key = c.event_key
                             AND p.status = 'pending' AND p.id < c.id)
         ORDER BY c.id LIMIT ? FOR UPDATE SKIP LOCKED)
      RETURNING o.id, o.event_id, o.event_type, o.event_key, o.payload, o.attempts`,
    [owner, leaseMs, route, limit],
  );
}

/** True when the row was still ours (a lease taken over means another instance owns it now). */
export async function markPublished(db: Db, table: string, id: string | number, owner: string): Promise<boolean> {
  const r = await rows<{ id: unknown }>(
    db,
    `UPDATE ${checkTable(table)} SET status = 'published', published_at = now(), updated_at = now(),
            attempts = attempts + 1, last_error = NULL, lease_owner = NULL, lease_until = NULL
      WHERE id = ? AND lease_owner = ? AND status = 'pending' RETURNING id`,
    [id, owner],
  );
  return r.length > 0;
}

/** Counts a failed attempt: back to pending after `delayMs`, or dead at `maxAttempts`. Returns the new status. */
export async function markFailed(
  db: Db,
  table: string,
  id: string | number,
  owner: string,
  maxAttempts: number,
  delayMs: number,
  error: string,
): Promise<'pending' | 'dead' | null> {
  const r = await rows<{ status: 'pending' | 'dead' }>(
    db,
    `UPDATE ${checkTable(table)} SET attempts = attempts + 1,
            status = CASE WHEN attempts + 1 >= ? THEN 'dead' ELSE 'pending' END,
            next_attempt_at = now() + (?::int * interval '1 millisecond'),
            last_error = ?, lease_owner = NULL, lease_until = NULL, updated_at = now()
      WHERE id = ? AND lease_owner = ? AND status = 'pending' RETURNING status`,
    [maxAttempts, delayMs, error.slice(0, 2000), id, owner],
  );
  return r[0]?.status ?? null;
}

/** Gives back claims this instance holds (on stop), so another instance need not wait for the lease. */
export function releaseLeases(db: Db, table: string, owner: string): Promise<unknown> {
  return db.raw(
    `UPDATE ${checkTable(table)} SET lease_owner = NULL, lease_until = NULL WHERE lease_owner = ? AND status = 'pending'`,
    [owner],
  );
}

/** Deletes published rows older than `retentionMs`, a bounded batch at a time. */
export function purgePublished(db: Db, table: string, retentionMs: number): Promise<unknown> {
  const t = checkTable(table);
  return db.raw(
    `DELETE FROM ${t} WHERE id IN (SELECT id FROM ${t} WHERE status = 'published'
        AND published_at < now() - (?::bigint * interval '1 millisecond') LIMIT 5000)`,
    [retentionMs],
  );
}

export interface DeadRow {
  event_id: string;
  route: string;
  event_type: string;
  event_key: string;
  attempts: number;
  last_error: string | null;
  created_at: Date | string;
  updated_at: Date | string;
  payload: unknown;
}

export async function listDead(db: Db, table: string, routes: string[], limit: number): Promise<DeadRow[]> {
  return rows<DeadRow>(
    db,
    `SELECT event_id::text AS event_id, route, event_type, event_key, attempts, last_error, created_at, updated_at, payload
       FROM ${checkTable(table)} WHERE status = 'dead' AND route IN (SELECT jsonb_array_elements_text(?::jsonb))
      ORDER BY id LIMIT ?`,
    [JSON.stringify(routes), limit],
  );
}

export async function countDead(db: Db, table: string, routes: string[]): Promise<number> {
  const [r] = await rows<{ n: string | number }>(
    db,
    `SELECT count(*) AS n FROM ${checkTable(table)}
      WHERE status = 'dead' AND route IN (SELECT jsonb_array_elements_text(?::jsonb))`,
    [JSON.stringify(routes)],
  );
  return Number(r?.n ?? 0);
}

/** Puts dead rows of `eventId` (on `routes`) back to pending with fresh attempts; returns their routes. */
export async function replayDead(db: Db, table: string, eventId: string, routes: string[]): Promise<string[]> {
  const r = await rows<{ route: string }>(
    db,
    `UPDATE ${checkTable(table)} SET status = 'pending', attempts = 0, next_attempt_at = now(),
            lease_owner = NULL, lease_until = NULL, updated_at = now()
      WHERE event_id = ?::uuid AND status = 'dead' AND route IN (SELECT jsonb_array_elements_text(?::jsonb))
      RETURNING route`,
    [eventId, JSON.stringify(routes)],
  );
  return r.map((x) => x.route);
}

export async function routeGauges(
  db: Db,
  table: string,
): Promise<Array<{ route: string; pending: number; dead: number; lag_seconds: number }>> {
  const r = await rows<{ route: string; pending: string | number; dead: string | number; lag: string | number | null }>(
    db,
    `SELECT route, count(*) FILTER (WHERE status = 'pending') AS pending, count(*) FILTER (WHERE status = 'dead') AS dead,
            EXTRACT(EPOCH FROM now() - min(created_at) FILTER (WHERE status = 'pending')) AS lag
       FROM ${checkTable(table)} WHERE status IN ('pending', 'dead') GROUP BY route`,
    [],
  );
  return r.map((x) => ({
    route: x.route,
    pending: Number(x.pending),
    dead: Number(x.dead),
    lag_seconds: x.lag === null ? 0 : Math.max(0, Number(x.lag)),
  }));
}
