/**
 * An example `type: worker` module for gmq-hub: plain JavaScript run in its own worker_thread.
 * Saving a new version of this file swaps the running code (the host watches it and restarts
 * the module in a fresh thread); events addressed to it wait in its mailbox meanwhile.
 *
 * config.yml:
 *   modules:
 *     greeter:
 *       type: worker
 *       path: examples/worker/greeter.mjs
 *       greeting: hello        # every key that is not a host key reaches ctx.config
 *
 * ctx: { name, config, log.{debug,info,warn,error}(msg, fields?), bus.{subscribe, publish, request} }
 * A handler's return value answers a bus request; a thrown error (with a `code`) reaches the requester.
 */

let asked = 0;
let log;

export async function start(ctx) {
  log = ctx.log;
  const greeting = typeof ctx.config.greeting === 'string' ? ctx.config.greeting : 'hello';
  ctx.bus.subscribe('greet/ask', (payload) => {
    asked++;
    if (!payload || typeof payload.name !== 'string') {
      throw Object.assign(new Error('greet/ask needs { name: string }'), { code: 'BUS_ERR_HANDLER' });
    }
    return { greeting: `${greeting} ${payload.name}`, version: 1 };
  });
  ctx.log.info('greeter started', { module: ctx.name });
}

export async function stop() {
  // nothing to release: the thread ends right after this
  log?.info('greeter stopping', { asked });
}
