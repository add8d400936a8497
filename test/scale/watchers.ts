/**
 * Live-event watchers of one hub instance: a WebSocket client subscribed to `all` and a gRPC
 * WatchEvents stream with `all: true`. Each keeps what it saw per command (result events, the
 * order of state events), so the run can ask: did every watcher on every instance see every
 * result, once, and each command's states in lifecycle order?
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

  constructor(readonly name: string) {}

  onEvent(type: string, commandId: string | undefined, data: unknown): void {
    this.events++;
    if (!commandId) return;
    if (type === 'command.result') {
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
    const missing: string[] = [];
    for (const id of expected) {
      if (this.results.has(id)) seen++;
      else if (missing.length < 3) missing.push(id);
    }
    let duplicates = 0;
    for (const n of this.results.values()) duplicates += n - 1;
    return {
      name: this.name,
      seen,
      of: expected.size,
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

/** A WebSocket client on `base` subscribed to every event; resolves once the hub said `subscribed`. */
export async function watchWs(base: string, name: string): Promise<Watcher> {
  const tally = new Tally(name);
  const url = `${base.replace(/^http/, 'ws')}/api/exchange-hub/ws`;
  const ws = new WebSocket(url);
  ws.on('error', (err) => {
    if (!tally.closing) tally.closeReason ||= err.message;
  });
  ws.on('close', (code) => {
    tally.closedAt ||= Date.now();
    if (!tally.closing) tally.closeReason ||= `close ${code}`;
  });
  const subscribed = new Promise<void>((resolve) => {
    ws.on('message', (raw) => {
      let m: { op?: string; type?: string; command_id?: string; data?: unknown };
      try {
        m = JSON.parse(String(raw));
      } catch {
        return;
      }
      if (m.op === 'hello') ws.send(JSON.stringify({ op: 'subscribe', all: true }));
      else if (m.op === 'subscribed') {
        tally.openedAt = Date.now();
        resolve();
      } else if (m.op === 'event' && typeof m.type === 'string') tally.onEvent(m.type, m.command_id, m.data);
    });
  });
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
 * twice. Any other end is final (the instance died).
 */
export async function watchGrpc(address: string, name: string): Promise<Watcher> {
  const tally = new Tally(name);
  const client = exchangeHubClient(address);
  let last: { epoch: string; id: number } | undefined;
  let call: grpc.ClientReadableStream<FeedEvent>;
  const open = (resolve?: () => void) => {
    call = client.WatchEvents(last ? { all: true, resume_epoch: last.epoch, last_event_id: last.id } : { all: true });
    call.on('metadata', () => {
      tally.openedAt ||= Date.now();
      resolve?.();
    });
    call.on('data', (ev: FeedEvent) => {
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
    call.on('error', (err: grpc.ServiceError) => {
      if (!tally.closing && err.code === grpc.status.RESOURCE_EXHAUSTED && last && tally.resumes < 20) {
        tally.resumes++;
        open();
        return;
      }
      tally.closedAt ||= Date.now();
      if (!tally.closing) tally.closeReason ||= err.message;
    });
  };
  const started = new Promise<void>((resolve) => open(resolve));
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
