import { z } from 'zod';
import { oldSettingNames, resolveRenamed } from '../shared/interface-kit/renamed-settings.js';
import { interfaceSettings, replayIdleSeconds } from '../shared/interface-kit/settings.js';

const int = (min: number) => z.number().int().min(min);

/**
 * Settings of the `grpc` module. `grpc: {}` is a working server on 127.0.0.1:50051 without
 * authentication; with a token (HUB_API_TOKEN in the default config.yml) it listens on every
 * interface and every ExchangeHub call needs `authorization: Bearer <token>`. The keys it shares
 * with web come from the interface kit (one name and meaning each); the longest sync wait
 * defaults to 600 s here.
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
    /** tokens, token, the sync-wait settings, request_timeout_ms (or the call's deadline when sooner), close_grace_ms. */
    ...interfaceSettings,
    /** The old name of close_grace_ms, still read (with a warning). */
    ...oldSettingNames(['stop_grace_ms']),
    /** grpc.max_receive_message_length and grpc.max_send_message_length, in bytes. */
    max_message_bytes: int(1024).default(4_194_304),
    /** Events kept for WatchEvents resume (the replay buffer of the feed). */
    replay: int(0).default(10_000),
    /** After the last WatchEvents stream ended (settings.ts replayIdleSeconds). */
    replay_idle_s: replayIdleSeconds,
    /**
     * Events queued for one WatchEvents stream that does not keep up; past it the stream ends with
     * RESOURCE_EXHAUSTED and the client resumes from its last id. The queue holds references to
     * events the feed shares (about 8 bytes each), so the default is the replay buffer's size: a
     * stream is cut only when it is as far behind as a resume can still reach. (1 000 cut streams
     * of watchers on a loaded machine a few seconds behind, issue 11.)
     */
    stream_buffer_max: int(1).default(10_000),
    /** The variable named in the "port in use" error, so the operator knows what to change. */
    port_env: z.string().min(1).default('HUB_GRPC_PORT'),
  })
  .strict()
  .transform(resolveRenamed({ max_sync_wait_ms: 600_000, close_grace_ms: 2_000 }));

export type GrpcConfig = z.output<typeof grpcConfigSchema>;
