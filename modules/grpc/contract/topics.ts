/**
 * The gRPC module's bus contract
 * (docs/conventions.md#each-domain-owns-its-bus-topics): every topic the grpc module publishes or
 * answers, with its payload type. Other modules import this file, never the module itself.
 */
export const GRPC = {
  /** request {} → GrpcStats */
  stats: 'grpc/stats',
} as const;

/** The reply to `grpc/stats`. */
export interface GrpcStats {
  /** the bound port (useful with `port: 0`) and address */
  port: number;
  host: string;
  /** true when calls need a bearer token */
  auth: boolean;
  /** calls received (every RPC, streams included) */
  calls: number;
  /** refused or failed calls by gRPC status code (numeric, as text) */
  errors: Record<string, number>;
  streams_open: number;
  streams_total: number;
  /** WatchEvents streams ended with RESOURCE_EXHAUSTED for not keeping up */
  streams_slow: number;
  /** SendSyncCommand calls waiting for a result now */
  sync_waiting: number;
  /** the live feed: its epoch and the id of its newest event */
  feed_epoch: string;
  feed_last_id: number;
  /** events the feed keeps for resume now (none once no stream has been open for replay_idle_s) */
  feed_replay_kept: number;
}
