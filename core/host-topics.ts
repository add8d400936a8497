/**
 * Bus topics the host itself publishes and answers. Payload shapes are listed beside each;
 * each domain module's topics live in its own contract (modules/<domain>/contract/topics.ts).
 * (docs/conventions.md#each-domain-owns-its-bus-topics)
 */
export const HOST_TOPICS = {
  /** event { name, type, restarts } */
  moduleStarted: 'host/module/started',
  /** event { name, reason } */
  moduleStopped: 'host/module/stopped',
  /** event { name, error: { code, message }, failures, retry_in_ms } */
  moduleFailed: 'host/module/failed',
  /** event { name, restarts, reason: 'crash' | 'config' | 'request' } */
  moduleRestarted: 'host/module/restarted',
  /** event { file, code, message, details? } — an edit was refused; the old config runs on */
  configRejected: 'host/config/rejected',
  /** event { started[], stopped[], restarted[], failed[{ name, code, message, kept_previous }] } */
  configApplied: 'host/config/applied',
  /** event { modules[] } — every enabled module started (in this order); once per host, see ctx.onReady */
  ready: 'host/ready',
  /** event {} — graceful stop began: interfaces stop taking new work */
  stopping: 'host/stopping',
  /** request {} → ModuleInfo[] */
  listModules: 'host/modules/list',
  /** request { name } → ModuleInfo */
  restartModule: 'host/modules/restart',
  /** request {} → bus stats */
  busStats: 'host/bus/stats',
  /** request {} → ReloadOutcome */
  reloadConfig: 'host/config/reload',
} as const;
