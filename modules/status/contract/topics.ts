/**
 * The status module's bus contract (projects, presence, credentials)
 * (docs/conventions.md#each-domain-owns-its-bus-topics): every topic the status module publishes or
 * answers, with its payload type. Other modules import this file, never the module itself.
 * Project ids in topics are safe: isValidProjectId forbids `/`, `+`, `#` and NUL.
 */
import type { AlertPayload, MonitorPayload } from '../../shared/protocol.js';

export type PresenceState = 'offline' | 'connecting' | 'verifying' | 'online' | 'disconnecting';

export const STATUS = {
  /** request CreateProjectRequest → CreatedProject (the secret is shown this once) */
  create: 'status/project/create',
  /** request { include_disabled?: boolean, metadata?: {key: value}, limit?, offset? } → { items: ProjectView[], total } (metadata: containment match) */
  list: 'status/project/list',
  /** request { project_id } → ProjectView (STATUS_ERR_NOT_FOUND) */
  get: 'status/project/get',
  /** request { project_id } → ProjectView */
  disable: 'status/project/disable',
  /** request { project_id } → ProjectView */
  enable: 'status/project/enable',
  /** request { project_id, overlap_s? } → CreatedProject — the old secret keeps working for overlap_s */
  rotate: 'status/project/rotate',
  /** request { project_id } → ProjectCredentials (module-internal: signing and broker auth) */
  credentials: 'status/project/credentials',
  /** request { username, password } → { ok: boolean, project_id?: string } (broker auth) */
  authenticate: 'status/project/authenticate',
  /** request {} → { items: ProjectView[] } (state online) */
  online: 'status/online/list',
  /** event StatusChangedEvent: `status/event/{project_id}` */
  changed: (projectId: string) => `status/event/${projectId}`,
  changedPattern: 'status/event/+',
  /** event { project_id, metrics, at }: `status/monitor/{project_id}` */
  monitor: (projectId: string) => `status/monitor/${projectId}`,
  /** event { project_id, alert, at }: `status/alert/{project_id}` */
  alert: (projectId: string) => `status/alert/${projectId}`,
  /** request {} → status module counters (uplinks, presence, flushes) */
  stats: 'status/stats',
  /**
   * event CredentialsChangedEvent — a project's credentials or enabled flag changed (created,
   * disabled, enabled, rotated, a rotated-out secret's overlap ended): every cache of
   * credentials (the bridge's verifier, the broker's auth cache) drops the project at once.
   */
  credentialsChanged: 'status/project/credentials-changed',
} as const;

export interface CredentialsChangedEvent {
  project_id: string;
  /** what happened: created | disabled | enabled | rotated | overlap_ended */
  change: 'created' | 'disabled' | 'enabled' | 'rotated' | 'overlap_ended';
  at: number;
}

export interface CreateProjectRequest {
  project_id?: string;
  name?: string;
  metadata?: Record<string, unknown>;
}
export interface CreatedProject {
  project_id: string;
  /** Shown once: only its hash-free copy lives in the database for signing; never logged. */
  secret: string;
  mqtt_username: string;
  mqtt_password: string;
}
export interface ProjectView {
  project_id: string;
  name: string | null;
  enabled: boolean;
  state: PresenceState;
  state_since: string | null;
  last_heartbeat_at: string | null;
  instance_id: string | null;
  agent_version: string | null;
  metrics: MonitorPayload['metrics'] | null;
  last_alert: AlertPayload | null;
  created_at: string;
  /** The accepted registration (seed 002 fields; node_version a string or an object, as sent). */
  registration: Record<string, unknown> | null;
  /** Uplinks of this project refused as malformed since the hub started (counted, shown, not only logged). */
  rejected_uplinks: number;
  last_rejected: RejectedUplink | null;
}
/** The last malformed uplink of a project: its type when readable, the parser's code and reason. */
export interface RejectedUplink {
  type: string | null;
  code: string;
  reason: string;
  /** ISO 8601 */
  at: string;
}
export interface ProjectCredentials {
  project_id: string;
  enabled: boolean;
  state: PresenceState;
  /** Current secret first; a rotated-out secret stays while its overlap lasts. */
  secrets: string[];
  /** When the rotated-out secret in `secrets` stops verifying (ms), so caches expire with it. */
  prev_secret_expires_at?: number | null;
  /** The status module's policy for uplinks, applied by the bridge's verification step. */
  require_data_signature?: boolean;
  clock_window_ms?: number;
}
export interface StatusChangedEvent {
  project_id: string;
  state: PresenceState;
  previous: PresenceState;
  reason: string;
  at: number;
}
