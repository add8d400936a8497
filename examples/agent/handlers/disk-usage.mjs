/**
 * A command type added to an agent by a `type: worker` module, without touching the agent: the
 * agent asks `agent/handler/{command_type}` on its bus for every verified command of that type.
 *
 * In the agent's config.yml:
 *   modules:
 *     agent: { … }
 *     disk-usage:
 *       type: worker
 *       path: ./handlers/disk-usage.mjs
 *       paths: [/, /var]          # the only paths a command may ask about
 *
 * Command payload: { "path": "/var" }. Output: JSON { path, total_bytes, free_bytes, used_percent }.
 * Progress lines published on `agent/output/{command_id}` reach the hub as ordered log_result chunks.
 */
import { statfs } from 'node:fs/promises';

export async function start(ctx) {
  const allowed = Array.isArray(ctx.config.paths) ? ctx.config.paths.map(String) : ['/'];
  ctx.bus.subscribe('agent/handler/disk_usage', async (req) => {
    const path = typeof req.payload?.path === 'string' ? req.payload.path : '/';
    if (!allowed.includes(path)) {
      // a refusal is a failed command with a reason, not a crash of the handler
      return { status: 'failure', exit_code: 1, error: `path ${JSON.stringify(path)} is not in the allowed paths` };
    }
    ctx.bus.publish(`agent/output/${req.command_id}`, { command_id: req.command_id, content: `statfs ${path}\n` });
    const s = await statfs(path);
    const total = s.blocks * s.bsize;
    const free = s.bavail * s.bsize;
    const used = total === 0 ? 0 : Math.round((1 - free / total) * 1000) / 10;
    return {
      status: 'success',
      exit_code: 0,
      output: JSON.stringify({ path, total_bytes: total, free_bytes: free, used_percent: used }),
    };
  });
}

export async function stop() {}
