import { existsSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { z } from 'zod';
import { oldSettingNames, resolveRenamed } from '../shared/interface-kit/renamed-settings.js';
import { interfaceSettings, replayIdleSeconds } from '../shared/interface-kit/settings.js';

const ms = (def: number) => z.number().int().positive().default(def);

/**
 * The dashboard's files, found from this file's place in the repo (modules/web/ or, compiled,
 * dist/modules/web/), so the default works whatever the working directory is.
 */
export function defaultStaticDir(): string {
  const here = path.dirname(fileURLToPath(import.meta.url));
  const source = path.resolve(here, '../..', 'resource/web');
  return existsSync(source) ? source : path.resolve(here, '../../..', 'resource/web');
}

/**
 * Settings of the `web` module (config.yml `modules.web`): REST, WebSocket and the dashboard.
 * Every key has a default; unknown keys are rejected. The keys it shares with grpc come from the
 * interface kit (one name and meaning each); the longest sync wait defaults to 300 s here.
 *
 * @example config.yml
 *   web:
 *     port: ${HUB_HTTP_PORT:-8080}
 *     token: ${HUB_API_TOKEN:-}
 */
export const webConfigSchema = z
  .object({
    port: z.number().int().min(0).max(65_535).default(8080),
    /** Default: 127.0.0.1 without a token, 0.0.0.0 with one. Without a token only loopback is ever bound. */
    host: z.string().min(1).optional(),
    /** tokens, token, the sync-wait settings, request_timeout_ms, close_grace_ms: as grpc's. */
    ...interfaceSettings,
    /** The old name of max_sync_wait_ms, still read (with a warning). */
    ...oldSettingNames(['sync_wait_ms_max']),
    /** The variable that sets the port, named in the error when the port is taken. */
    port_env: z.string().min(1).default('HUB_HTTP_PORT'),
    body_limit_bytes: ms(262_144),
    /** The database /readyz pings; null: none. */
    database: z.string().min(1).nullable().default('default'),
    ready_timeout_ms: ms(1_000),
    ws: z
      .object({
        max_payload_bytes: ms(65_536),
        /** A client whose unsent bytes pass this is closed with 1013 (slow consumer). */
        max_buffered_bytes: ms(1_048_576),
        ping_interval_ms: ms(30_000),
        /** Events kept for clients that reconnect and resume. */
        replay: z.number().int().min(0).max(1_000_000).default(10_000),
        /** After the last client disconnected (settings.ts replayIdleSeconds). */
        replay_idle_s: replayIdleSeconds,
      })
      .strict()
      .prefault({}),
    static_dir: z.string().min(1).optional(),
    /**
     * MQTT over WebSocket on this port, handed to the embedded broker (same login and ACL as TCP);
     * null turns it off. Agents connect to `ws://host:port/mqtt` (`wss://` behind a TLS proxy).
     */
    mqtt_ws_path: z
      .string()
      .regex(/^\/[A-Za-z0-9_./-]*$/, 'must be a path such as /mqtt')
      .nullable()
      .default('/mqtt'),
  })
  .strict()
  .transform(resolveRenamed({ max_sync_wait_ms: 300_000, close_grace_ms: 2_000 }));

export type WebConfigInput = z.input<typeof webConfigSchema>;
export type WebConfig = z.output<typeof webConfigSchema>;
