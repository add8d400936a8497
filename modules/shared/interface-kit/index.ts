/**
 * The interface kit: what the interface modules (web: REST and WebSocket; grpc) share, so they
 * cannot drift apart. Token gate and principals, the loopback rule for a server without a token,
 * the settings they both have (one name each, old names read with a warning), the sync-wait
 * policy and the two-step close. Sync waits and live events are `../command-waiter.ts` and
 * `../event-feed.ts`, used by both the same way.
 */
export { closeWithGrace } from './close-with-grace.js';
export { isLoopback, type ListenHost, listenHost } from './listen-host.js';
export {
  type Access,
  type Action,
  assertDeclared,
  grants,
  listScope,
  ROLES,
  type Role,
  requireAction,
  requireProject,
  requireWholeHub,
  seesProject,
} from './permissions.js';
export {
  type NewSettingName,
  type OldSettingName,
  oldSettingNames,
  RENAMED_SETTINGS,
  resolveRenamed,
  warnRenamedSettings,
} from './renamed-settings.js';
export { interfaceSettings, type TokenSettings, tokenEntries, tokenOnlyEdit } from './settings.js';
export { type SyncWaitAsk, type SyncWaitPolicy, syncWait } from './sync-wait.js';
export { bearerToken, type Principal, type TokenEntry, TokenGate } from './token-gate.js';
