/**
 * Every domain's error codes, loaded together. Importing this file registers them (core/errors.ts
 * `defineCodes`), so the answers REST and gRPC derive from the registry, and the bus's refusal
 * test, know every code even in a process where the module that throws one is not loaded.
 * Adding a domain with codes: its `contract/codes.ts` and one line here.
 */
import { OUTBOX_CODES } from '../core/services/outbox/codes.js';
import { AGENT_CODES } from './agent/contract/codes.js';
import { AUDIT_CODES } from './audit/contract/codes.js';
import { COMMAND_CODES } from './command/contract/codes.js';
import { GRPC_CODES } from './grpc/contract/codes.js';
import { JOB_CODES } from './jobs/contract/codes.js';
import { MQTT_CODES } from './mqtt-bridge/contract/codes.js';
import { SHARED_CODES } from './shared/contract/codes.js';
import { STATUS_CODES } from './status/contract/codes.js';
import { WEB_CODES } from './web/contract/codes.js';

/** The code tables of every domain beside core's own, for listings and tests. */
export const DOMAIN_CODES = [
  OUTBOX_CODES,
  SHARED_CODES,
  COMMAND_CODES,
  JOB_CODES,
  STATUS_CODES,
  WEB_CODES,
  GRPC_CODES,
  MQTT_CODES,
  AGENT_CODES,
  AUDIT_CODES,
] as const;
