/**
 * The interface kit: what the interface modules (web: REST and WebSocket; grpc) share, so they
 * cannot drift apart. Token gate and principals, the loopback rule for a server without a token,
 * the settings they both have (one name each, old names read with a warning), the sync-wait
 * policy, the two-step close, sync waits (command-waiter.ts) and live events (event-feed.ts).
 * The last two consume the command and status contracts: the one place in modules/shared that
 * knows a domain (test/docs/layering.test.ts names the exception).
 */
export { CallSignals } from './call-signals.js';
export { closeWithGrace } from './close-with-grace.js';
export { CommandWaiter, type SyncOutcome } from './command-waiter.js';
export { EventFeed, type FeedEvent, type FeedFilter, type Watcher } from './event-feed.js';
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
