/**
 * Live-event watchers of one hub instance: a WebSocket client subscribed to `all` and a gRPC
 * WatchEvents stream with `all: true`. Each keeps what it saw per command (result events, the
 * order of state events), so the run can ask: did every watcher on every instance see every
 * result, once, and each command's states in lifecycle order?
 *
 * A watcher whose instance dies does what the README tells a client to do ("Resume on another
 * instance"): it reconnects to an instance that serves, asks to resume (that instance answers
 * `resync`: ids belong to the instance that numbered them), takes the live events at once, and
 * re-reads over REST the results it may have missed since a little before its last event. What it
 * learns only from that re-read is counted apart (`reread`), so the figures show both.
 */
import * as grpc from '@grpc/grpc-js';
import { loadSync } from '@grpc/proto-loader';
import WebSocket from 'ws';
import { LOADER_OPTIONS, PROTO_FILE, protoRoot, SERVICE_NAME } from '../../modules/grpc/proto.js';
import { withTimeout } from '../helpers/wait.js';

/** Lifecycle rank of a command status: an event of a lower rank after a higher one is out of order. */
const RANK: Record<string, number> = {
  pending: 0,
  sent: 1,
  acked: 2,
  completed: 3,
  failed: 3,
  timeout: 3,
  cancelled: 3,
};

export interface WatcherFigures {
  name: string;
  /** Results of the watcher's window that it saw. */
  seen: number;
  /** Results the hub received within the watcher's window (from the database). */
  of: number;
  /** Of `seen`, learned from the REST re-read after a failover (not from the stream). */
  reread: number;
  /** Times the watcher moved to another instance because its own died. */
  failovers: number;
  /** Result events beyond the first, per command (summed). */
  duplicates: number;
  /** The same (command, status) state event more than once (summed). */
  stateDuplicates: number;
  /** Commands whose state events went back in the lifecycle. */
  outOfOrder: number;
  /** A few command ids of the window the watcher never saw. */
  missingSample: string[];
  /** Why the stream ended before the run closed it (empty: it did not). */
  closeReason: string;
  /** One command whose states went back: the statuses in the order the watcher got them. */
  outOfOrderExample?: { command_id: string; states: string[] };
}

/** What one watcher saw. */
export class Tally {
  readonly results = new Map<string, number>();
  /** command id → the failover count when its result first arrived. */
  private readonly resultGeneration = new Map<string, number>();
  /** command id → highest rank seen, and whether it ever went back. */
  private readonly rank = new Map<string, number>();
  private readonly states = new Map<string, Set<string>>();
  /** Statuses in arrival order, per command (kept for the first command that goes back). */
  private readonly order = new Map<string, string[]>();
  private example?: { command_id: string; states: string[] };
  private readonly backwards = new Set<string>();
  stateDuplicates = 0;
  events = 0;
  openedAt = 0;
  closedAt = 0;
  closeReason = '';
  /** Set when the run closes the watcher itself: what follows is not a reason. */
  closing = false;
  /** Times the stream was reopened with resume after the hub cut it for falling behind. */
  resumes = 0;
  /** Times the watcher moved to another instance because its own died. */
  failovers = 0;
  /** Commands whose result the watcher learned from the REST re-read after a failover. */
  readonly reread = new Set<string>();
  /** When the last event arrived (local clock): a re-read starts a margin before it. */
  lastEventAt = 0;

  constructor(readonly name: string) {}

  onEvent(type: string, commandId: string | undefined, data: unknown): void {
    this.events++;
    this.lastEventAt = Date.now();
    if (!commandId) return;
    if (type === 'command.result') {
      // the same result from the instance that died and from the one moved to is the overlap the
      // README allows across a failover, not a duplicate of one stream
      const seenIn = this.resultGeneration.get(commandId);
      if (seenIn !== undefined && seenIn !== this.failovers) return;
      this.resultGeneration.set(commandId, this.failovers);
      this.results.set(commandId, (this.results.get(commandId) ?? 0) + 1);
      return;
    }
    if (type !== 'command.state') return;
    const status = (data as { status?: unknown } | null)?.status;
    if (typeof status !== 'string') return;
    const seen = this.states.get(commandId) ?? new Set<string>();
    if (seen.has(status)) this.stateDuplicates++;
    seen.add(status);
    this.states.set(commandId, seen);
    const order = this.order.get(commandId) ?? [];
    order.push(status);
    this.order.set(commandId, order);
    const r = RANK[status] ?? 0;
    const top = this.rank.get(commandId) ?? -1;
    if (r < top) {
      this.backwards.add(commandId);
      this.example ??= { command_id: commandId, states: order };
    } else this.rank.set(commandId, r);
  }

  /** Figures against the results the hub received while this watcher was open (`expected`). */
  figures(expected: ReadonlySet<string>): WatcherFigures {
    let seen = 0;
    let reread = 0;
    const missing: string[] = [];
    for (const id of expected) {
      if (this.results.has(id)) seen++;
      else if (this.reread.has(id)) {
        seen++;
        reread++;
      } else if (missing.length < 3) missing.push(id);
    }
    let duplicates = 0;
    for (const n of this.results.values()) duplicates += n - 1;
    return {
      name: this.name,
      seen,
      of: expected.size,
      reread,
      failovers: this.failovers,
      duplicates,
      stateDuplicates: this.stateDuplicates,
      outOfOrder: this.backwards.size,
      missingSample: missing,
      closeReason: this.closeReason,
      ...(this.example ? { outOfOrderExample: this.example } : {}),
    };
  }
}

export interface Watcher {
  readonly tally: Tally;
  close(): void;
}

/** Where a watcher whose instance died goes next: an instance that serves now. */
export type NextInstance = () => { base: string; grpcAddress: string } | undefined;

/** Terminal statuses whose command may carry a result (the list view says which by status). */
const WITH_RESULT = 'completed,failed,timeout';
/** A re-read starts this long before the last event seen (commands run for up to a few seconds). */
const REREAD_MARGIN_MS = 60_000;

/**
 * The README's re-read after a `resync`: every command created since `sinceMs` (until now, so the
 * pages do not shift under new sends) that ended with a result, marked as known to `tally`.
 */
async function rereadResults(base: string, tally: Tally, sinceMs: number): Promise<void> {
  const until = Date.now();
  for (let offset = 0; ; ) {
    const q = new URLSearchParams({
      status: WITH_RESULT,
      since: String(Math.floor(sinceMs)),
      until: String(until),
      limit: '500',
      offset: String(offset),
    });
    const r = await fetch(`${base}/api/exchange-hub/commands?${q}`, { signal: AbortSignal.timeout(30_000) });
    if (!r.ok) throw new Error(`re-read: GET /commands answered ${r.status}`);
    const page = (await r.json()) as {
      items: Array<{ command_id: string; status: string; late_result?: boolean }>;
      total: number;
    };
    // completed and failed carry their result; a timeout carries one when it came late
    for (const c of page.items) if (c.status !== 'timeout' || c.late_result) tally.reread.add(c.command_id);
    offset += page.items.length;
    if (page.items.length === 0 || offset >= page.total) return;
  }
}

/** Moves `tally`'s watcher to the next instance; false when none serves or it moved too often. */
function canFailOver(tally: Tally, next: NextInstance | undefined): ReturnType<NextInstance> {
  if (tally.closing || !next || tally.failovers >= 3) return undefined;
  const to = next();
  if (to) tally.failovers++;
  return to;
}

/** A WebSocket client on `base` subscribed to every event; resolves once the hub said `subscribed`. */
export async function watchWs(base: string, name: string, next?: NextInstance): Promise<Watcher> {
  const tally = new Tally(name);
  let ws: WebSocket;
  const open = (at: string, failover: boolean, resolve?: () => void) => {
    const sock = new WebSocket(`${at.replace(/^http/, 'ws')}/api/exchange-hub/ws`);
    ws = sock;
    let moved = false;
    const moveOn = (why: string) => {
      if (moved || tally.closing) return;
      moved = true;
      const to = canFailOver(tally, next);
      if (to) open(to.base, true);
      else {
        tally.closedAt ||= Date.now();
        tally.closeReason ||= why;
      }
    };
    sock.on('error', (err) => moveOn(err.message));
    sock.on('close', (code) => moveOn(`close ${code}`));
    sock.on('message', (raw) => {
      let m: { op?: string; type?: string; command_id?: string; data?: unknown };
      try {
        m = JSON.parse(String(raw));
      } catch {
        return;
      }
      if (m.op === 'hello') sock.send(JSON.stringify({ op: 'subscribe', all: true }));
      else if (m.op === 'subscribed') {
        tally.openedAt ||= Date.now();
        resolve?.();
        // live events flow from now on; what fell between the death and now is re-read
        if (failover) {
          rereadResults(at, tally, (tally.lastEventAt || tally.openedAt) - REREAD_MARGIN_MS).catch((err) => {
            tally.closeReason ||= (err as Error).message;
          });
        }
      } else if (m.op === 'event' && typeof m.type === 'string') tally.onEvent(m.type, m.command_id, m.data);
    });
  };
  const subscribed = new Promise<void>((resolve) => open(base, false, resolve));
  await withTimeout(subscribed, 30_000, `${name} subscribed`);
  return {
    tally,
    close: () => {
      tally.closing = true;
      tally.closedAt ||= Date.now();
      ws.terminate();
    },
  };
}

type ExchangeHubClient = grpc.Client & {
  WatchEvents(req: {
    all: boolean;
    resume_epoch?: string;
    last_event_id?: number;
  }): grpc.ClientReadableStream<FeedEvent>;
};
interface FeedEvent {
  id: number;
  epoch: string;
  type: string;
  command_id?: string;
  data_json: string;
}

let clientCtor: (new (addr: string, creds: grpc.ChannelCredentials) => ExchangeHubClient) | undefined;

function exchangeHubClient(address: string): ExchangeHubClient {
  if (!clientCtor) {
    const pkg = loadSync(PROTO_FILE, { ...LOADER_OPTIONS, includeDirs: [protoRoot()] });
    const loaded = grpc.loadPackageDefinition(pkg) as unknown as {
      exchangehub: { v1: { ExchangeHub: typeof clientCtor } };
    };
    clientCtor = loaded.exchangehub.v1.ExchangeHub;
    if (!clientCtor) throw new Error(`${SERVICE_NAME} not found in ${PROTO_FILE}`);
  }
  return new clientCtor(address, grpc.credentials.createInsecure());
}

/**
 * A gRPC WatchEvents(all) stream on `address`; resolves once the hub sent its initial metadata.
 * A stream the hub ends with RESOURCE_EXHAUSTED (the client fell more than `grpc.stream_buffer_max`
 * events behind, as a watcher on a busy machine may) is reopened the way the .proto tells a client
 * to: with the epoch and id of the last event processed, so the missed events are replayed, none
 * twice. Any other end means the instance died: the watcher moves to `next()` (see the header).
 */
export async function watchGrpc(address: string, name: string, next?: NextInstance): Promise<Watcher> {
  const tally = new Tally(name);
  let client = exchangeHubClient(address);
  let last: { epoch: string; id: number } | undefined;
  let call: grpc.ClientReadableStream<FeedEvent>;
  const open = (rest: string | undefined, resolve?: () => void) => {
    const c = client.WatchEvents(
      last ? { all: true, resume_epoch: last.epoch, last_event_id: last.id } : { all: true },
    );
    call = c;
    c.on('metadata', () => {
      tally.openedAt ||= Date.now();
      resolve?.();
      // after a failover: the stream is live here; what fell between the death and now is re-read
      if (rest) {
        rereadResults(rest, tally, (tally.lastEventAt || tally.openedAt) - REREAD_MARGIN_MS).catch((err) => {
          tally.closeReason ||= (err as Error).message;
        });
      }
    });
    c.on('data', (ev: FeedEvent) => {
      if (ev.type === 'resync') return;
      if (ev.epoch) last = { epoch: ev.epoch, id: Number(ev.id) };
      let data: unknown = null;
      try {
        data = JSON.parse(ev.data_json);
      } catch {
        // a body we do not need
      }
      tally.onEvent(ev.type, ev.command_id || undefined, data);
    });
    c.on('error', (err: grpc.ServiceError) => {
      if (tally.closing) return;
      if (err.code === grpc.status.RESOURCE_EXHAUSTED && last) {
        tally.resumes++;
        open(undefined);
        return;
      }
      const to = canFailOver(tally, next);
      if (to) {
        client.close();
        client = exchangeHubClient(to.grpcAddress);
        open(to.base);
        return;
      }
      tally.closedAt ||= Date.now();
      tally.closeReason ||= err.message;
    });
  };
  const started = new Promise<void>((resolve) => open(undefined, resolve));
  await withTimeout(started, 30_000, `${name} stream started`);
  return {
    tally,
    close: () => {
      tally.closing = true;
      tally.closedAt ||= Date.now();
      call.cancel();
      client.close();
    },
  };
}
