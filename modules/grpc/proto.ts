import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { ServiceDefinition } from '@grpc/grpc-js';
import { loadSync, type Options, type PackageDefinition } from '@grpc/proto-loader';
import { protoPath as healthProtoPath } from 'grpc-health-check';

/** The .proto's path under the repository's `resource/proto` (docs/architecture.md#web-and-grpc: the .proto lives in resource/). */
export const PROTO_FILE = 'exchangehub/v1/exchange_hub.proto';
export const SERVICE_NAME = 'exchangehub.v1.ExchangeHub';

/**
 * Field names as written in the .proto (snake_case, the bus's own), 64-bit integers as JS numbers
 * (ids and ms times stay far below 2^53), defaults filled in, `optional` fields absent when unset.
 */
export const LOADER_OPTIONS: Options = { keepCase: true, longs: Number, enums: String, defaults: true, oneofs: true };

/** `resource/proto`, found by walking up from this file (it runs from modules/ or dist/modules/). */
export function protoRoot(): string {
  let dir = path.dirname(fileURLToPath(import.meta.url));
  for (let i = 0; i < 6; i++) {
    const candidate = path.join(dir, 'resource', 'proto');
    if (fs.existsSync(path.join(candidate, PROTO_FILE))) return candidate;
    dir = path.dirname(dir);
  }
  throw new Error(`cannot find resource/proto/${PROTO_FILE} above ${fileURLToPath(import.meta.url)}`);
}

export interface LoadedProto {
  /** The ExchangeHub service, ready for server.addService. */
  service: ServiceDefinition;
  /** ExchangeHub and grpc.health.v1 together: what reflection describes. */
  reflection: PackageDefinition;
}

let cached: LoadedProto | undefined;

/** Parsed once per process: the definitions are immutable, so module restarts share them. */
export function loadProto(): LoadedProto {
  if (cached) return cached;
  const root = protoRoot();
  const pkg = loadSync(PROTO_FILE, { ...LOADER_OPTIONS, includeDirs: [root] });
  const healthRoot = path.resolve(path.dirname(healthProtoPath), '..', '..');
  const reflection = loadSync([PROTO_FILE, 'health/v1/health.proto'], {
    ...LOADER_OPTIONS,
    includeDirs: [root, healthRoot],
  });
  cached = { service: pkg[SERVICE_NAME] as ServiceDefinition, reflection };
  return cached;
}
