/**
 * LISTEN on one PostgreSQL channel over a dedicated connection, reconnecting with capped backoff.
 * Hub instances that share a database hear each other's committed changes this way (presence in
 * modules/status, command events in modules/command): a NOTIFY sent in the committing transaction
 * is delivered only if that transaction commits, in commit order.
 *
 * `onConnected` runs after every successful LISTEN, the first included: what was announced while
 * no connection listened is gone, so a caller re-reads what it may have missed there.
 */
import type { Knex } from 'knex';
import pg from 'pg';
import type { Logger } from '../log.js';

const RECONNECT_MIN_MS = 100;
const RECONNECT_MAX_MS = 5_000;

/**
 * The node-postgres settings of a knex instance of driver `pg` (core/services/db.ts opens it with
 * a `connectionString`), with its schema; null for PGlite, whose knex connection is a function
 * handing over the embedded instance that no other process shares (nobody to listen to).
 */
export function pgListenSettings(
  db: Knex,
  applicationName: string,
): { settings: pg.ClientConfig; schema?: string } | null {
  const client = db.client as { config?: { connection?: unknown; searchPath?: unknown } };
  const connection = client.config?.connection;
  if (!connection || typeof connection !== 'object' || !('connectionString' in connection)) return null;
  const searchPath = client.config?.searchPath;
  return {
    settings: { ...(connection as pg.ClientConfig), application_name: applicationName },
    ...(typeof searchPath === 'string' ? { schema: searchPath } : {}),
  };
}

export interface ListenerStats {
  connects: number;
  drops: number;
  notices: number;
  connected: boolean;
}

export interface ListenerHandlers {
  onNotice(payload: string): void;
  /** After every successful LISTEN (re-read what may have been missed). */
  onConnected?(): void | Promise<void>;
  /** The connection failed or went away; a reconnect is scheduled. */
  onLost?(err: unknown): void;
}

export class PgListener {
  readonly stats: ListenerStats = { connects: 0, drops: 0, notices: 0, connected: false };
  private client: pg.Client | null = null;
  private timer: NodeJS.Timeout | null = null;
  private delay = RECONNECT_MIN_MS;
  private stopped = false;

  constructor(
    private readonly settings: pg.ClientConfig,
    readonly channel: string,
    /** The log lines of this listener: after each LISTEN, and when its connection went away. */
    private readonly messages: { connected: string; lost: string },
    private readonly log: Logger,
    private readonly on: ListenerHandlers,
  ) {}

  /** Connects in the background (a first failure is retried like a later one). */
  start(): Promise<void> {
    return this.connect();
  }

  private async connect(): Promise<void> {
    this.timer = null;
    if (this.stopped) return;
    const client = new pg.Client(this.settings);
    this.client = client;
    let dropped = false;
    const drop = (err?: unknown) => {
      if (dropped) return;
      dropped = true;
      if (this.client === client) this.client = null;
      client.removeAllListeners('notification');
      client.end().catch(() => undefined);
      if (this.stopped) return;
      if (this.stats.connected) this.stats.drops++;
      this.stats.connected = false;
      this.on.onLost?.(err);
      this.log.warn({ err, retry_ms: this.delay, channel: this.channel }, this.messages.lost);
      this.timer = setTimeout(() => void this.connect(), this.delay);
      this.delay = Math.min(this.delay * 2, RECONNECT_MAX_MS);
    };
    client.on('error', drop);
    client.on('end', () => drop());
    client.on('notification', (n) => {
      if (n.channel !== this.channel || n.payload === undefined) return;
      this.stats.notices++;
      this.on.onNotice(n.payload);
    });
    try {
      await client.connect();
      await client.query(`LISTEN "${this.channel.replaceAll('"', '""')}"`);
      if (this.stopped) {
        await client.end().catch(() => undefined);
        return;
      }
      this.stats.connects++;
      this.stats.connected = true;
      this.delay = RECONNECT_MIN_MS;
      this.log.info({ channel: this.channel, connects: this.stats.connects }, this.messages.connected);
      await this.on.onConnected?.();
    } catch (err) {
      drop(err);
    }
  }

  /**
   * Runs a statement on the listening connection, only while it listens: for what must hold
   * exactly as long as this listener hears its channel (a registration as a listener).
   */
  async query(sql: string, params: unknown[] = []): Promise<void> {
    const client = this.client;
    if (!client || !this.stats.connected) throw new Error(`not listening on ${this.channel}`);
    await client.query(sql, params);
  }

  async stop(): Promise<void> {
    this.stopped = true;
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    const c = this.client;
    this.client = null;
    this.stats.connected = false;
    if (c) await c.end().catch(() => undefined);
  }
}
