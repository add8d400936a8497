/**
 * The uplink fuzz run: a real hub (uplink-hub.ts) with two projects online, A and B; A's agent,
 * logged in to the broker as A, publishes generated hostile uplinks (uplink-gen.ts), and after
 * every few batches the run checks its properties:
 *
 *  - the hub never crashes (its REST API and modules still answer);
 *  - no REST read answers 5xx (`/projects`, `/projects/online`, `/project/:id/status`, `/commands`);
 *  - A never changes anything of B: B's presence, metrics, alert, its commands and results, its
 *    rows in the database are as they were, and B's watchers (WebSocket by project, WebSocket
 *    by command, the bus) see nothing;
 *  - every uplink is accounted for: what the broker denied, what the bridge refused (by code)
 *    and what it handed to the modules add up to what was sent, in /metrics;
 *  - a valid message sent after the hostile ones is still processed (nothing blocked).
 *
 * Signature checks on data messages may live in the bridge or the modules; the properties do
 * not depend on where (A cannot speak for B: the broker binds its login to project_id A).
 */
import { randomUUID } from 'node:crypto';
import fc from 'fast-check';
import WebSocket from 'ws';
import type { CommandEvent } from '../../modules/command/contract/topics.js';
import type { StatusChangedEvent } from '../../modules/status/contract/topics.js';
import { type FuzzUplink, uplinkArb } from './uplink-gen.js';
import { FullHub, HandAgent, type Json, WAIT_MS } from './uplink-hub.js';

export interface FuzzFigures {
  sent: number;
  /** handed to the modules and not refused by them */
  accepted: number;
  /** refused, by where and why: broker:<reason>, bridge:<code>, <module>:<reason> */
  rejected: Record<string, number>;
  crashes: number;
  http5xx: number;
  crossProject: number;
  /** sent but not accounted for in /metrics */
  unaccounted: number;
  /** valid probes after hostile batches that were not processed in time */
  blocked: number;
  /** handler errors in the hub's bus mailboxes */
  handlerErrors: number;
  durationMs: number;
  violations: string[];
}

interface Counts {
  received: number;
  bridgeRejected: Map<string, number>;
  brokerPublish: Map<string, number>;
  moduleRefused: Map<string, number>;
  handlerErrors: number;
}

/** Series of one family as label-string → value. */
function family(text: string, name: string): Map<string, number> {
  const out = new Map<string, number>();
  for (const line of text.split('\n')) {
    if (!line.startsWith(name)) continue;
    const rest = line.slice(name.length);
    if (rest[0] !== ' ' && rest[0] !== '{') continue;
    const labels = rest[0] === '{' ? rest.slice(1, rest.indexOf('}')) : '';
    out.set(labels, Number(line.slice(line.lastIndexOf(' ') + 1)));
  }
  return out;
}
const label = (labels: string, key: string): string => new RegExp(`${key}="([^"]*)"`).exec(labels)?.[1] ?? '';
const sum = (m: Map<string, number>): number => [...m.values()].reduce((a, b) => a + b, 0);

function counts(text: string): Counts {
  const rejected = new Map<string, number>();
  for (const [l, v] of family(text, 'hub_mqtt_uplinks_rejected_total')) rejected.set(`bridge:${label(l, 'code')}`, v);
  const broker = new Map<string, number>();
  for (const [l, v] of family(text, 'hub_broker_denials_total')) {
    if (label(l, 'kind') === 'publish') broker.set(`broker:${label(l, 'reason')}`, v);
  }
  const refused = new Map<string, number>();
  for (const [l, v] of family(text, 'hub_uplinks_refused_total')) {
    refused.set(`${label(l, 'module')}:${label(l, 'reason')}`, v);
  }
  return {
    received: sum(family(text, 'hub_mqtt_uplinks_received_total')),
    bridgeRejected: rejected,
    brokerPublish: broker,
    moduleRefused: refused,
    handlerErrors: sum(family(text, 'hub_bus_mailbox_errors_total')),
  };
}

function delta(now: Map<string, number>, base: Map<string, number>): Map<string, number> {
  const out = new Map<string, number>();
  for (const [k, v] of now) {
    const d = v - (base.get(k) ?? 0);
    if (d !== 0) out.set(k, d);
  }
  return out;
}

/** What of B must not change, read over REST and from the database. */
async function snapshotB(hub: FullHub, b: string, commands: readonly string[]): Promise<string> {
  const status = (await hub.api('GET', `/project/${b}/status`)).json;
  const cmds = [];
  for (const id of commands) cmds.push((await hub.api('GET', `/command/${id}`)).json);
  const list = (await hub.api('GET', `/commands?project_id=${encodeURIComponent(b)}&limit=100`)).json;
  const row = await hub.db('project_status').where({ project_id: b }).first();
  const history = await hub.db('project_status_history').where({ project_id: b }).count<{ n: string }[]>({ n: '*' });
  const results = await hub
    .db('command_result')
    .whereIn('command_id', [...commands])
    .select('command_id', 'status', 'output')
    .orderBy('command_id');
  return JSON.stringify({ status, cmds, list: list?.items, row, history: history[0]?.n, results });
}

export interface FuzzOptions {
  uplinks: number;
  /** uplinks generated and published per batch */
  batch?: number;
  /** check the properties after this many batches */
  checkEvery?: number;
  seed?: number;
  /** progress lines (stderr in the CLI) */
  progress?: (line: string) => void;
}

export async function runUplinkFuzz(opts: FuzzOptions): Promise<FuzzFigures> {
  const batchSize = opts.batch ?? 500;
  const checkEvery = opts.checkEvery ?? 4;
  const seed = opts.seed ?? Date.now() % 2 ** 31;
  const violations: string[] = [];
  const fig: FuzzFigures = {
    sent: 0,
    accepted: 0,
    rejected: {},
    crashes: 0,
    http5xx: 0,
    crossProject: 0,
    unaccounted: 0,
    blocked: 0,
    handlerErrors: 0,
    durationMs: 0,
    violations,
  };
  const violate = (what: string): void => {
    if (violations.length < 50) violations.push(what);
  };
  let crashed = 0;
  const onCrash = (err: unknown): void => {
    crashed++;
    violate(`uncaught in the hub's process: ${String((err as Error)?.stack ?? err).slice(0, 300)}`);
  };
  process.on('uncaughtException', onCrash);
  process.on('unhandledRejection', onCrash);

  const hub = await FullHub.start({
    // nothing of B may change by itself during the run: no silence timeout, no command timeout
    status: { heartbeat_timeout_ms: 24 * 3_600_000 },
    broker: { rate_limit: { msgs_per_s: 10_000_000, burst: 10_000_000 } },
  });
  const sockets: WebSocket[] = [];
  let a: HandAgent | undefined;
  let b: HandAgent | undefined;
  const t0 = Date.now();
  try {
    const pa = await hub.provision('a');
    const pb = await hub.provision('b');
    a = await HandAgent.connect(hub, pa);
    b = await HandAgent.connect(hub, pb);
    await a.goOnline(hub);
    await b.goOnline(hub);
    await b.data('heartbeat', { metrics: { steady: 1 } });
    await b.data('alert', { level: 'warning', message: 'b alert' });

    // commands: B's acked, completed; A's left for A's agent to do what it likes with
    const send = async (pid: string): Promise<string> => {
      const r = await hub.api('POST', '/command/send', {
        project_id: pid,
        command_type: 'echo',
        payload: {},
        timeout_ms: 3_600_000,
      });
      if (r.status !== 202) throw new Error(`send failed: ${r.status} ${JSON.stringify(r.json)}`);
      return r.json.command_id as string;
    };
    const cmdB1 = await send(pb.project_id);
    const cmdB2 = await send(pb.project_id);
    const commandsA = [await send(pa.project_id), await send(pa.project_id)];
    await b.data('command_ack', { command_id: cmdB1 });
    await b.data('command_ack', { command_id: cmdB2 });
    await b.data('exec_result', {
      command_id: cmdB2,
      status: 'success',
      exit_code: 0,
      output: 'b output',
      error: '',
      start_time: Date.now() - 5,
      end_time: Date.now(),
      duration: 5,
    });
    const commandsB = [cmdB1, cmdB2];
    await hub.until(async () => (await hub.api('GET', `/command/${cmdB1}`)).json?.status === 'acked', 'B1 acked');
    await hub.until(async () => (await hub.api('GET', `/command/${cmdB2}`)).json?.status === 'completed', 'B2 done');
    await hub.until(
      async () => (await hub.api('GET', `/project/${pb.project_id}/status`)).json?.last_alert?.message === 'b alert',
      "B's alert",
    );
    // B's presence row settled in the database (flushes every 100 ms)
    await hub.until(async () => {
      const row = await hub.db('project_status').where({ project_id: pb.project_id }).first();
      return row?.metrics?.steady === 1 && row?.last_alert?.message === 'b alert';
    }, "B's row");

    // B's watchers
    const seenByB: string[] = [];
    const watch = async (filter: object): Promise<void> => {
      const ws = new WebSocket(`${hub.base.replace('http', 'ws')}/api/exchange-hub/ws`);
      sockets.push(ws);
      let subscribed = false;
      ws.on('message', (data) => {
        const f = JSON.parse(String(data)) as Json;
        if (f.op === 'subscribed') subscribed = true;
        if (f.op === 'event')
          seenByB.push(`ws ${JSON.stringify(filter)}: ${f.type} ${f.project_id} ${f.command_id ?? ''}`);
      });
      await new Promise((r, j) => {
        ws.once('open', r);
        ws.once('error', j);
      });
      ws.send(JSON.stringify({ op: 'subscribe', ...filter }));
      await hub.until(() => subscribed, 'ws subscribed');
    };
    await watch({ projects: [pb.project_id] });
    await watch({ commands: commandsB });
    const observer = hub.bus.mailbox(`fuzz-observer-${randomUUID()}`);
    observer.subscribe('command/event/#', (p) => {
      const ev = p as CommandEvent;
      const cid = ev.kind === 'log' ? ev.command_id : ev.command?.command_id;
      const pid = ev.kind === 'log' ? ev.project_id : ev.command?.project_id;
      if (pid === pb.project_id || commandsB.includes(cid)) seenByB.push(`bus command ${ev.kind} ${pid} ${cid}`);
    });
    observer.subscribe('status/event/+', (p) => {
      const ev = p as StatusChangedEvent;
      if (ev.project_id === pb.project_id) seenByB.push(`bus status ${ev.state} ${ev.reason}`);
    });
    observer.subscribe(`status/monitor/${pb.project_id}`, () => void seenByB.push('bus monitor of B'));
    observer.subscribe(`status/alert/${pb.project_id}`, () => void seenByB.push('bus alert of B'));

    const baselineB = await snapshotB(hub, pb.project_id, commandsB);
    const base = counts(await hub.metrics());

    const ids = {
      a: { project_id: pa.project_id, secret: pa.secret },
      b: { project_id: pb.project_id, secret: pb.secret },
      commandsA,
      commandsB,
    };
    const reuse = Array.from({ length: 16 }, () => randomUUID());
    let probes = 0;
    let lastCounts = base;
    const agentA = a;

    const check = async (final: boolean): Promise<void> => {
      // everything sent is accounted for (the last messages may still be on their way)
      let c = lastCounts;
      const accounted = (x: Counts) =>
        x.received -
        base.received +
        sum(delta(x.bridgeRejected, base.bridgeRejected)) +
        sum(delta(x.brokerPublish, base.brokerPublish));
      const end = Date.now() + WAIT_MS * 3;
      for (;;) {
        try {
          c = counts(await hub.metrics());
        } catch (err) {
          fig.crashes++;
          violate(`/metrics unreachable: ${(err as Error).message}`);
          return;
        }
        if (accounted(c) >= fig.sent || Date.now() > end) break;
        await new Promise((r) => setTimeout(r, 100));
      }
      lastCounts = c;
      const n = accounted(c);
      if (n !== fig.sent) {
        fig.unaccounted = fig.sent - n;
        violate(`sent ${fig.sent}, accounted for in /metrics ${n}`);
      }
      // a valid message after the hostile ones is processed
      const k = ++probes;
      fig.sent++;
      await agentA.data('monitor', { metrics: { probe: k } });
      try {
        await hub.until(
          async () => (await hub.api('GET', `/project/${pa.project_id}/status`)).json?.metrics?.probe === k,
          `probe ${k}`,
          WAIT_MS * 2,
        );
      } catch {
        fig.blocked++;
        violate(`probe ${k} (a valid monitor after the hostile batch) was not processed`);
      }
      // REST reads
      for (const path of [
        '/projects',
        '/projects/online',
        `/project/${pa.project_id}/status`,
        `/project/${pb.project_id}/status`,
        '/commands',
        `/commands?project_id=${encodeURIComponent(pb.project_id)}`,
        `/commands?project_id=${encodeURIComponent(pa.project_id)}`,
      ]) {
        try {
          const r = await hub.api('GET', path);
          if (r.status >= 500) {
            fig.http5xx++;
            violate(`GET ${path} → ${r.status} ${JSON.stringify(r.json).slice(0, 200)}`);
          }
        } catch (err) {
          fig.crashes++;
          violate(`GET ${path} failed: ${(err as Error).message}`);
        }
      }
      // B untouched
      if (seenByB.length > 0) {
        fig.crossProject += seenByB.length;
        for (const s of seenByB.splice(0)) violate(`B's watchers saw: ${s}`);
      }
      if (final || probes % 5 === 0) {
        const now = await snapshotB(hub, pb.project_id, commandsB);
        if (now !== baselineB) {
          fig.crossProject++;
          violate(`B changed:\nbefore ${baselineB.slice(0, 1500)}\nafter  ${now.slice(0, 1500)}`);
        }
      }
      fig.handlerErrors = c.handlerErrors - base.handlerErrors;
      if (fig.handlerErrors > 0) violate(`${fig.handlerErrors} handler errors in the hub's mailboxes`);
    };

    let batches = 0;
    while (fig.sent < opts.uplinks) {
      const n = Math.min(batchSize, opts.uplinks - fig.sent);
      const batch: FuzzUplink[] = fc.sample(uplinkArb(ids, Date.now(), reuse), { numRuns: n, seed: seed + batches });
      await publishAll(agentA, batch, violate);
      fig.sent += batch.length;
      batches++;
      if (batches % checkEvery === 0 || fig.sent >= opts.uplinks) {
        await check(fig.sent >= opts.uplinks);
        const el = (Date.now() - t0) / 1000;
        opts.progress?.(
          `${fig.sent} uplinks in ${el.toFixed(0)} s (${Math.round(fig.sent / el)}/s), violations ${violations.length}`,
        );
        if (violations.length > 0) break;
      }
    }

    const end = counts(await hub.metrics());
    const rejected: Record<string, number> = {};
    for (const [k, v] of [
      ...delta(end.bridgeRejected, base.bridgeRejected),
      ...delta(end.brokerPublish, base.brokerPublish),
      ...delta(end.moduleRefused, base.moduleRefused),
    ]) {
      rejected[k] = v;
    }
    fig.rejected = rejected;
    fig.accepted = end.received - base.received - sum(delta(end.moduleRefused, base.moduleRefused));
  } finally {
    fig.crashes += crashed;
    fig.durationMs = Date.now() - t0;
    for (const ws of sockets) ws.close();
    await a?.close().catch(() => undefined);
    await b?.close().catch(() => undefined);
    await hub.stop();
    process.off('uncaughtException', onCrash);
    process.off('unhandledRejection', onCrash);
  }
  return fig;
}

/** Publishes a batch at QoS 1, a few hundred in flight at once. */
async function publishAll(agent: HandAgent, batch: FuzzUplink[], violate: (s: string) => void): Promise<void> {
  const WINDOW = 256;
  for (let i = 0; i < batch.length; i += WINDOW) {
    await Promise.all(
      batch.slice(i, i + WINDOW).map((u) =>
        agent.client.publishAsync(u.topic, u.body, { qos: 1 }).catch((err: Error) => {
          violate(`publish of a ${u.type} failed: ${err.message}`);
        }),
      ),
    );
  }
}

/** One line of figures. */
export function figureLine(f: FuzzFigures): string {
  const rejected = Object.entries(f.rejected)
    .sort((x, y) => y[1] - x[1])
    .map(([k, v]) => `${k}=${v}`)
    .join(' ');
  const s = f.durationMs / 1000;
  return (
    `uplinks sent ${f.sent}, accepted ${f.accepted}, rejected {${rejected}}, crashes ${f.crashes}, 5xx ${f.http5xx}, ` +
    `cross-project effects ${f.crossProject}, unaccounted ${f.unaccounted}, blocked ${f.blocked}, ` +
    `handler errors ${f.handlerErrors}, duration ${s.toFixed(1)} s (${Math.round(f.sent / s)} uplinks/s)`
  );
}
