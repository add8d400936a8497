/**
 * Command events of the other hub instances (issue 11, "many hubs as one"). Several instances on
 * one PostgreSQL schema are one hub: a command sent on A may be acked on B and completed on C,
 * and every instance's watchers (WebSocket, gRPC) and sync waiters must see all of it. This file
 * has that one job: it listens to the schema's announcements and republishes them on this
 * instance's bus as ordinary CommandEvents marked `remote`.
 *
 * The channel is PostgreSQL LISTEN/NOTIFY (bench/cluster-channel.ts measured it against a QoS 1
 * Mosquitto topic at 1 000 events/s to three listeners: p50 0.9 ms / p99 23 ms against 3.3 ms /
 * 91 ms). State and result changes are announced by triggers (migrations.ts 005, 008, 010) in
 * the very transaction that commits them: nothing uncommitted is announced, nothing committed is
 * missed by a crash between commit and publish, and listeners get them in commit order. Log
 * chunks are not stored, so this instance announces the ones it receives itself (`announceLog`).
 * Both only while another instance listens: each listening instance keeps a row in the schema's
 * command_listeners (`register`), and a write whose transaction finds no other live row there
 * announces nothing (migration 010), so an instance alone pays for none of it.
 *
 * Local events never wait for any of this: the command module publishes them on its bus right
 * after its own commit, as before. Its own announcements come back here too, marked with its
 * sessions' gmq.origin (migration 008), and are dropped on arrival: left to the version gate,
 * one read before the commit's reply was shown as another instance's change and the local event
 * refused. The per-command version gate in events.ts (a state goes out once per version, a
 * result once per command) keeps a watcher from ever seeing a state go backwards when two
 * instances' events of one command cross.
 *
 * NOTIFY carries at most 8 000 bytes: a state notification holds the row (without its payload)
 * when it fits, else only its id and version; a result notification is always a reference. Those
 * are read back, one query per batch of notifications. Log chunks are cut into parts and put
 * together here (the parts of one chunk are sent in one statement, so they arrive together).
 *
 * Only with driver `pg` (PGlite is one process: there is no other instance to hear from). While
 * the listening connection is down (reconnected with backoff), other instances' events are not
 * seen live: sync waiters still find their result through their slow database poll, and watchers
 * can re-read state over REST (README "Several instances").
 */
import { randomUUID } from 'node:crypto';
import { LRUCache } from 'lru-cache';
import { PgListener, pgListenSettings } from '../../core/services/pg-listener.js';
import { inJsonList } from '../../core/services/sql-lists.js';
import { type Deps, query } from './deps.js';
import { ANNOUNCE_WHEN } from './migrations.js';
import { type ResultRow, TRACKER_COLUMNS, type TrackerRow, toResultView } from './rows.js';

/**
 * How long this instance's row among the listeners (migration 010) stays alive unrenewed, and how
 * often it is renewed: a killed instance is announced to for at most the lease.
 */
const LISTENER_LEASE_S = 60;
const LISTENER_RENEW_MS = 15_000;

/** PostgreSQL identifiers (and so channel names) hold at most 63 bytes. */
const MAX_CHANNEL = 63;
/** One chunk part: at most this many UTF-16 units (6 bytes each as JSON at worst) stays under 8000 bytes. */
const LOG_PART_CHARS = 1_200;
/** Log chunks being put together, at most (a lost part must not grow the map for ever). */
const MAX_PARTIAL_LOGS = 1_000;

/** The schema's channel, as the triggers name it: left('gmq_cmd_events:' || schema, 63). */
export function channelFor(schema: string): string {
  return `gmq_cmd_events:${schema}`.slice(0, MAX_CHANNEL);
}

/**
 * Attaches the announce functions (migrations 005, 008) to the tables, once per schema, to fire
 * only when another instance listens (migration 010: `command_events_heard()`); the
 * version trigger is attached by migration 009 on every backend (instances
 * starting together take turns on an advisory lock; an existing trigger is left alone, so no
 * start takes the table lock a DROP/CREATE would).
 */
export const ANNOUNCE_TRIGGERS = `DO $do$
BEGIN
  PERFORM pg_advisory_xact_lock(hashtext('gmq_cmd_events:' || current_schema()));
  IF NOT EXISTS (SELECT 1 FROM pg_trigger WHERE tgname = 'command_tracker_announce'
                    AND tgrelid = 'command_tracker'::regclass) THEN
    CREATE TRIGGER command_tracker_announce AFTER INSERT OR UPDATE ON command_tracker
      FOR EACH ROW WHEN (${ANNOUNCE_WHEN}) EXECUTE FUNCTION command_tracker_announce();
  END IF;
  IF NOT EXISTS (SELECT 1 FROM pg_trigger WHERE tgname = 'command_result_announce'
                    AND tgrelid = 'command_result'::regclass) THEN
    CREATE TRIGGER command_result_announce AFTER INSERT ON command_result
      FOR EACH ROW WHEN (${ANNOUNCE_WHEN}) EXECUTE FUNCTION command_result_announce();
  END IF;
END
$do$`;

/**
 * The text by which an announcement of a session with this gmq.origin is known without parsing
 * it: the triggers' json_build_object writes its keys as `"o" : "<origin>"` (a space before the
 * colon); the row inside is jsonb text (`"key": value`) and string values have their quotes
 * escaped, so only the announcement's own origin key can match.
 */
export function ownChangeMarker(sessionOrigin: string): string {
  return `"o" : ${JSON.stringify(sessionOrigin)}`;
}

/** The same for a log chunk part this instance announced (`announceLog`: JSON.stringify, no spaces). */
export function ownLogPrefix(origin: string): string {
  return `{"k":"l","o":${JSON.stringify(origin)},`;
}

type Notice =
  | { k: 's'; id: string; v: number; o?: string | null; row?: TrackerRow }
  | { k: 'r'; id: string; o?: string | null }
  | { k: 'l'; o: string; p: string; id: string; s: number; c: string; i: number; n: number };

type ReadRow = TrackerRow & {
  r_status: ResultRow['status'] | null;
  r_exit_code: ResultRow['exit_code'];
  r_output: string;
  r_error: string;
  r_start_time: ResultRow['start_time'];
  r_end_time: ResultRow['end_time'];
  r_duration: ResultRow['duration'];
  r_received_at: ResultRow['received_at'];
};

const READ_COLS = TRACKER_COLUMNS.split(', ')
  .map((c) => `t.${c}`)
  .join(', ');

export class ClusterEvents {
  /** Tells this instance's own log announcements apart when they come back. */
  readonly origin = randomUUID();
  /**
   * This instance's database sessions' gmq.origin (core/services/db.ts), which the triggers put
   * in their state and result announcements (migration 008): those are this instance's own
   * changes, already published locally. Null when the sessions carry none.
   */
  private sessionOrigin: string | null = null;
  /**
   * `ownChangeMarker` of this instance's sessions. Two of its own announcements come back for
   * every command it runs (about 700 bytes each): parsed only to be dropped, before this.
   */
  private ownChange: string | null = null;
  /** The schema's command_listeners table, quoted. */
  private listeners = 'command_listeners';
  private renewal?: NodeJS.Timeout;
  /** `ownLogPrefix` of this instance. */
  private readonly ownLog = ownLogPrefix(this.origin);
  private listener?: PgListener;
  private stopped = false;
  private queue: Notice[] = [];
  private running?: Promise<void>;
  private outLogs: string[] = [];
  private readonly partial = new LRUCache<string, string[]>({ max: MAX_PARTIAL_LOGS });

  constructor(private readonly d: Deps) {}

  /** Whether this instance listens (driver pg and `cluster_events` on). */
  get enabled(): boolean {
    return this.listener !== undefined;
  }

  /** Starts listening; a first connection that fails is retried in the background (start goes on). */
  async start(): Promise<void> {
    if (!this.d.cfg.cluster_events) return;
    // driver pg only: PGlite is one process, nobody else writes (pgListenSettings)
    const pgs = pgListenSettings(this.d.db, 'gmq-hub command events');
    if (!pgs) return;
    await this.d.db.transaction((trx) => trx.raw(ANNOUNCE_TRIGGERS));
    const [{ schema, origin }] = await query<{ schema: string; origin: string | null }>(
      this.d.db,
      "SELECT current_schema() AS schema, current_setting('gmq.origin', true) AS origin",
    );
    this.sessionOrigin = origin || null;
    this.listeners = `"${schema.replaceAll('"', '""')}".command_listeners`;
    this.ownChange = this.sessionOrigin === null ? null : ownChangeMarker(this.sessionOrigin);
    const messages = {
      connected: 'listening to the command events of other hub instances',
      lost: 'cluster event listener lost its connection; other instances are not heard until it is back',
    };
    this.listener = new PgListener(pgs.settings, channelFor(schema), messages, this.d.log, {
      onNotice: (payload) => this.onNotice(payload),
      onConnected: async () => {
        this.d.counters.cluster_listening = 1;
        await this.register();
      },
      onLost: () => {
        this.d.counters.cluster_listening = 0;
        this.d.counters.cluster_listen_errors++;
      },
    });
    await this.listener.start();
    this.renewal = setInterval(() => void this.register(), LISTENER_RENEW_MS);
    this.renewal.unref();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    if (this.renewal) clearInterval(this.renewal);
    this.d.counters.cluster_listening = 0;
    // the others stop announcing to this instance at once, not when its row lapses
    if (this.listener?.stats.connected && this.sessionOrigin !== null) {
      await this.listener
        .query(`DELETE FROM ${this.listeners} WHERE origin = $1`, [this.sessionOrigin])
        .catch((err) => this.d.log.debug({ err }, 'could not withdraw from the command event listeners'));
    }
    await this.listener?.stop();
    await this.running;
  }

  /**
   * This instance's row among the schema's listeners (migration 010), written on the listening
   * connection itself: the others' writes announce while it is alive, so a row is there only
   * while this connection listens or for at most LISTENER_LEASE_S after it went away. Renewed
   * every LISTENER_RENEW_MS and after every (re)connect; rows lapsed an hour ago are removed.
   */
  private async register(): Promise<void> {
    const listener = this.listener;
    if (!listener?.stats.connected || this.stopped || this.sessionOrigin === null) return;
    try {
      await listener.query(
        `WITH gone AS (DELETE FROM ${this.listeners} WHERE alive_until < now() - interval '1 hour')
         INSERT INTO ${this.listeners} (origin, alive_until) VALUES ($1, now() + make_interval(secs => $2))
         ON CONFLICT (origin) DO UPDATE SET alive_until = EXCLUDED.alive_until`,
        [this.sessionOrigin, LISTENER_LEASE_S],
      );
    } catch (err) {
      // the connection may be going away (the listener reconnects and registers again); a row
      // left to lapse means the others stop announcing to this instance
      this.d.counters.cluster_listen_errors++;
      this.d.log.warn({ err }, 'could not renew this instance among the command event listeners');
    }
  }

  private onNotice(payload: string): void {
    // our own state or result change (published locally right after its commit, events.ts) or
    // log chunk: dropped unparsed
    if (payload.startsWith(this.ownLog) || (this.ownChange !== null && payload.includes(this.ownChange))) {
      this.d.counters.cluster_own_dropped++;
      return;
    }
    let n: Notice;
    try {
      n = JSON.parse(payload) as Notice;
    } catch {
      return;
    }
    // the same checks parsed, should a server write the announcement's text another way
    if (
      (n.k === 'l' && n.o === this.origin) ||
      (n.k !== 'l' && this.sessionOrigin !== null && n.o === this.sessionOrigin)
    ) {
      this.d.counters.cluster_own_dropped++;
      return;
    }
    this.queue.push(n);
    if (!this.running) this.running = this.drain();
  }

  /** Batches in arrival order; the next batch waits for this one, so order is kept. */
  private async drain(): Promise<void> {
    // let the notifications of this read from the socket join one batch
    await new Promise((r) => setImmediate(r));
    while (this.queue.length > 0 && !this.stopped) {
      const batch = this.queue.splice(0, 2_000);
      try {
        await this.apply(batch);
      } catch (err) {
        // the database went away between the notification and the read: the events of this
        // batch that needed a read are not shown live (sync waiters still poll)
        this.d.log.warn({ err, notices: batch.length }, 'could not read announced command changes');
      }
    }
    this.running = undefined;
  }

  private async apply(batch: Notice[]): Promise<void> {
    const ev = this.d.events;
    const toRead = new Set<string>();
    for (const n of batch) {
      if (n.k === 's' && !n.row && ev.newer(n.id, n.v)) toRead.add(n.id);
      if (n.k === 'r' && !ev.hasResult(n.id)) toRead.add(n.id);
    }
    const rows = new Map<string, ReadRow>();
    if (toRead.size > 0) {
      this.d.counters.cluster_reads++;
      const read = await query<ReadRow>(
        this.d.db,
        `SELECT ${READ_COLS}, t.payload, r.status AS r_status, r.exit_code AS r_exit_code, r.output AS r_output,
                r.error AS r_error, r.start_time AS r_start_time, r.end_time AS r_end_time,
                r.duration AS r_duration, r.received_at AS r_received_at
           FROM command_tracker t LEFT JOIN command_result r ON r.command_id = t.command_id
          WHERE ${inJsonList('t.command_id')}`,
        [JSON.stringify([...toRead])],
      );
      for (const r of read) rows.set(r.command_id, r);
    }
    for (const n of batch) {
      if (n.k === 's') {
        const row = n.row ?? rows.get(n.id);
        if (row) ev.state(row, true);
      } else if (n.k === 'r') {
        const row = rows.get(n.id);
        if (!row || row.r_status === null) continue;
        // the result's state change first (dropped when its own notification came before)
        if (!row.late_result) ev.state(row, true);
        ev.result(
          row,
          toResultView({
            status: row.r_status,
            exit_code: row.r_exit_code,
            output: row.r_output,
            error: row.r_error,
            start_time: row.r_start_time,
            end_time: row.r_end_time,
            duration: row.r_duration,
            received_at: row.r_received_at,
          }),
          true,
        );
      } else if (n.k === 'l') {
        const key = `${n.o}/${n.id}/${n.s}`;
        const parts = this.partial.get(key) ?? [];
        parts[n.i] = n.c;
        if (n.i < n.n - 1) {
          this.partial.set(key, parts);
          continue;
        }
        this.partial.delete(key);
        ev.log(n.p, n.id, n.s, parts.join(''), true);
      }
    }
  }

  /**
   * A log chunk this instance received from its agent, for the other instances' watchers. Chunks
   * of one turn go out in one statement, each cut into parts that fit a notification.
   */
  announceLog(projectId: string, commandId: string, seq: number, content: string): void {
    if (!this.listener?.stats.connected || this.stopped) return;
    const parts: string[] = [];
    for (let at = 0; at < content.length || parts.length === 0; ) {
      let end = Math.min(content.length, at + LOG_PART_CHARS);
      // never cut a surrogate pair in two
      if (end < content.length && /[\uD800-\uDBFF]/.test(content[end - 1])) end--;
      parts.push(content.slice(at, end));
      at = end;
    }
    parts.forEach((c, i) => {
      this.outLogs.push(
        JSON.stringify({ k: 'l', o: this.origin, p: projectId, id: commandId, s: seq, c, i, n: parts.length }),
      );
    });
    if (this.outLogs.length === parts.length) setImmediate(() => void this.flushLogs());
  }

  private async flushLogs(): Promise<void> {
    const out = this.outLogs.splice(0);
    if (out.length === 0) return;
    try {
      // as the triggers: only when another instance listens (an instance alone sends none)
      const sent = await query(
        this.d.db,
        'SELECT pg_notify(?, x) FROM jsonb_array_elements_text(?::jsonb) AS x WHERE command_events_heard()',
        [this.listener?.channel, JSON.stringify(out)],
      );
      this.d.counters.cluster_logs_announced += sent.length;
    } catch (err) {
      // a live stream: lost for the other instances' watchers, counted
      this.d.counters.cluster_logs_unannounced += out.length;
      this.d.log.debug({ err, parts: out.length }, 'log chunks not announced to other instances');
    }
  }
}
