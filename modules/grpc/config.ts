import { z } from 'zod';

const int = (min: number) => z.number().int().min(min);

/**
 * Settings of the `grpc` module. `grpc: {}` is a working server on 127.0.0.1:50051 without
 * authentication; with a token (HUB_API_TOKEN in the default config.yml) it listens on every
 * interface and every ExchangeHub call needs `authorization: Bearer <token>`.
 */
export const grpcConfigSchema = z
  .object({
    /** Listen port; 0 takes any free port (tests). The default config.yml reads HUB_GRPC_PORT. */
    port: int(0).max(65535).default(50051),
    /**
     * Listen address. Default: 127.0.0.1 without a token, 0.0.0.0 with one. Without a token a
     * non-loopback address is refused (the server binds 127.0.0.1 and says so in the log).
     */
    host: z.string().min(1).optional(),
    /** Accepted bearer tokens (several, so one can be rotated without downtime). */
    tokens: z.array(z.string().min(1)).default([]),
    /** One more accepted token; empty means none. The default config.yml sets it from HUB_API_TOKEN. */
    token: z.string().default(''),
    /** grpc.max_receive_message_length and grpc.max_send_message_length, in bytes. */
    max_message_bytes: int(1024).default(4_194_304),
    /** SendSyncCommand waits this long for the result when the request names no wait_ms. */
    default_sync_wait_ms: int(1).default(30_000),
    /** Longest wait_ms a caller may ask for (bounds the server-side resources of one call). */
    max_sync_wait_ms: int(1).default(600_000),
    /** Events kept for WatchEvents resume (the replay buffer of the feed). */
    replay: int(0).default(10_000),
    /**
     * Events queued for one WatchEvents stream that does not keep up; past it the stream ends with
     * RESOURCE_EXHAUSTED and the client resumes from its last id. The queue holds references to
     * events the feed shares (about 8 bytes each), so the default is the replay buffer's size: a
     * stream is cut only when it is as far behind as a resume can still reach. (1 000 cut streams
     * of watchers on a loaded machine a few seconds behind, issue 11.)
     */
    stream_buffer_max: int(1).default(10_000),
    /** Bus requests to other modules give up after this long (or the call's deadline when sooner). */
    request_timeout_ms: int(1).default(10_000),
    /** On stop: how long running calls may finish (tryShutdown) before they are cut (forceShutdown). */
    stop_grace_ms: int(0).default(2_000),
    /** The variable named in the "port in use" error, so the operator knows what to change. */
    port_env: z.string().min(1).default('HUB_GRPC_PORT'),
  })
  .strict();

export type GrpcConfig = z.infer<typeof grpcConfigSchema>;

/** The tokens in force: `tokens` plus a non-empty `token`, without duplicates. */
export function effectiveTokens(cfg: GrpcConfig): string[] {
  return [...new Set([...cfg.tokens, ...(cfg.token ? [cfg.token] : [])])];
}

export function isLoopback(host: string): boolean {
  const h = host.replace(/^\[|\]$/g, '').toLowerCase();
  return h === 'localhost' || h === '::1' || /^127(\.\d{1,3}){3}$/.test(h) || h === '::ffff:127.0.0.1';
}
