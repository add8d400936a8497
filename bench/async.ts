/**
 * `async`: commands accepted over REST (POST /api/exchange-hub/command/send, answered 202 at
 * once) and completed end to end — tracker + outbox in PostgreSQL, relay, bridge, Mosquitto,
 * agent ack + exec_result, acks and results written — sustained for 30 s, against the raw
 * mqtt.js QoS 1 echo at 256 in flight on the same broker, measured in the same run.
 *
 * Load: a window of 256 commands in flight end to end. A slot sends a command and is free again
 * when the agent's exec_result for it has been acknowledged by the broker; the hub's writing of
 * that result is not in the loop, so if the hub falls behind on writes its backlog shows as the
 * drain after the window: completed/s counts until the database holds every accepted command as
 * completed. "Lost" is an accepted command that is not `completed` (with a stored result) at
 * the end.
 */
import { performance } from 'node:perf_hooks';
import pg from 'pg';
import { WEB } from '../modules/shared/topics.js';
import { connectAgents, pool, startHeartbeats } from './agents.js';
import { echoRun, startPeer } from './baseline.js';
import {
  cleanupDir,
  cpuMsOf,
  envNumber,
  hubYaml,
  PG_URL,
  pgDatabase,
  projectIds,
  provision,
  sleep,
  startHub,
  startMosquitto,
} from './env.js';
import { machine, percentile, type SuiteResult } from './harness.js';
import { JsonClient } from './http.js';

const API = '/api/exchange-hub';
const PAYLOAD = { text: 'x'.repeat(200), n: 1 };

export async function runAsyncSuite(): Promise<SuiteResult> {
  const WINDOW_MS = envNumber('BENCH_ASYNC_MS', 30_000, 8_000);
  const WARMUP_MS = envNumber('BENCH_ASYNC_WARMUP_MS', 3_000, 1_000);
  const IN_FLIGHT = envNumber('BENCH_ASYNC_IN_FLIGHT', 256);
  const AGENTS = envNumber('BENCH_ASYNC_AGENTS', 64);
  const ECHO_MS = envNumber('BENCH_ECHO_MS', 5_000, 2_000);
  const DRAIN_MS = 60_000;

  const mosq = await startMosquitto();
  const db = await pgDatabase();
  const schema = db.config.schema!;
  const cleanups: Array<() => Promise<unknown>> = [db.drop, () => mosq.stop()];
  const run = async (): Promise<SuiteResult> => {
    // raw baseline first, on the idle machine the hub run gets too
    const peer = await startPeer('echo', mosq.url);
    const echo = await echoRun(mosq.url, { inFlight: IN_FLIGHT, durationMs: ECHO_MS, peer });
    await peer.stop();

    const projects = [...(await provision(db, projectIds(AGENTS))).values()];
    const hub = await startHub(hubYaml({ db, mqttUrl: mosq.url }), { name: 'async' });
    cleanups.unshift(async () => {
      await hub.stop();
      cleanupDir(hub.dir);
    });
    const info = await hub.request<{ url: string }>(WEB.info('web'));
    const agents = await connectAgents(mosq.url, projects, false);
    cleanups.unshift(() => Promise.all(agents.map((a) => a.close())));
    await pool(agents, 32, (a) => a.register());
    const stopBeats = startHeartbeats(agents);
    cleanups.unshift(async () => stopBeats());
    const http = new JsonClient(info.url, IN_FLIGHT);
    cleanups.unshift(async () => http.close());
    const pgc = new pg.Client({ connectionString: PG_URL });
    await pgc.connect();
    cleanups.unshift(() => pgc.end());
    const count = async () => {
      const r = await pgc.query<{ status: string; n: string }>(
        `SELECT status, count(*) AS n FROM "${schema}".command_tracker GROUP BY status`,
      );
      return Object.fromEntries(r.rows.map((x) => [x.status, Number(x.n)])) as Record<string, number>;
    };
    for (const deadline = Date.now() + 30_000; ; await sleep(50)) {
      const r = await http.request('GET', `${API}/projects/online`);
      if (r.status === 200 && r.json.items.length === AGENTS) break;
      if (Date.now() > deadline) throw new Error('agents did not come online');
    }

    // results acknowledged by the broker, by command id; a result may beat the 202 to this process
    const waiting = new Map<string, () => void>();
    const early = new Set<string>();
    for (const a of agents) {
      a.onResultSent = (id) => {
        const w = waiting.get(id);
        if (w) {
          waiting.delete(id);
          w();
        } else early.add(id);
      };
    }
    const resultOf = (id: string) =>
      early.delete(id)
        ? Promise.resolve()
        : new Promise<void>((r) => {
            waiting.set(id, r);
          });

    const acceptLat: number[] = [];
    const errors: string[] = [];
    let accepted = 0;
    let acceptedInWindow = 0;
    let doneInWindow = 0;
    let measuring = false;
    let stop = false;
    const t0 = performance.now();
    const windowStart = t0 + WARMUP_MS;
    const windowEnd = windowStart + WINDOW_MS;
    let cpuStart = 0;
    const phase = setTimeout(() => {
      measuring = true;
      cpuStart = cpuMsOf(hub.pid);
    }, WARMUP_MS);
    const slots = Array.from({ length: IN_FLIGHT }, async (_, k) => {
      const pid = projects[k % projects.length].project_id;
      while (!stop) {
        const a = performance.now();
        let r: Awaited<ReturnType<JsonClient['request']>>;
        try {
          r = await http.request('POST', `${API}/command/send`, {
            project_id: pid,
            command_type: 'echo',
            payload: PAYLOAD,
          });
        } catch (err) {
          errors.push((err as Error).message);
          continue;
        }
        const ms = performance.now() - a;
        if (r.status !== 202) {
          errors.push(`HTTP ${r.status} ${r.json?.error?.code ?? ''}`);
          await sleep(10);
          continue;
        }
        accepted++;
        const inWindow = measuring && !stop;
        if (inWindow) {
          acceptLat.push(ms);
          acceptedInWindow++;
        }
        await resultOf(r.json.command_id);
        if (inWindow) doneInWindow++;
      }
    });
    await sleep(windowEnd - performance.now());
    stop = true;
    const windowElapsed = performance.now() - windowStart;
    const cpuWindow = cpuMsOf(hub.pid) - cpuStart;
    clearTimeout(phase);
    await Promise.race([Promise.all(slots), sleep(DRAIN_MS)]);
    // drain: every accepted command completed in the database
    let last = await count();
    const drainStart = performance.now();
    while ((last.completed ?? 0) < accepted && performance.now() - drainStart < DRAIN_MS) {
      await sleep(100);
      last = await count();
    }
    const drainMs = performance.now() - drainStart;
    const completed = last.completed ?? 0;
    const results = await pgc.query<{ n: string }>(`SELECT count(*) AS n FROM "${schema}".command_result`);
    const lost = accepted - completed;
    const acceptRate = (acceptedInWindow / windowElapsed) * 1000;
    // completions of the window's commands, with the drain they still needed counted in
    const completedRate = (doneInWindow / (windowElapsed + drainMs)) * 1000;
    const p99 = percentile(acceptLat, 99);
    const stats = await hub.request<Record<string, number>>('command/stats');
    const ratio = completedRate / echo.rate;
    return {
      suite: 'async',
      machine: machine(),
      rows: [
        {
          metric: `commands/s completed end to end (${IN_FLIGHT} in flight)`,
          value: completedRate,
          unit: 'cmd/s',
          baseline: echo.rate,
          ratio,
          goal: '>= 0.30x raw',
          met: ratio >= 0.3,
        },
        { metric: 'commands/s accepted (202)', value: acceptRate, unit: 'cmd/s', baseline: echo.rate },
        { metric: 'accept latency p50', value: percentile(acceptLat, 50), unit: 'ms' },
        { metric: 'accept latency p99', value: p99, unit: 'ms', goal: '< 100 ms', met: p99 < 100 },
        { metric: 'commands lost', value: lost, unit: 'cmd', goal: '0', met: lost === 0 && errors.length === 0 },
        { metric: 'drain after the window', value: drainMs, unit: 'ms' },
        { metric: 'hub CPU per command', value: cpuWindow / Math.max(1, acceptedInWindow), unit: 'ms' },
      ],
      notes: [
        `${WINDOW_MS / 1000} s sustained after ${WARMUP_MS / 1000} s warm-up; ${IN_FLIGHT} commands in flight end to end over ${AGENTS} lean simulated agents (one connection each); hub: child process, PostgreSQL (fresh schema), Mosquitto`,
        `baseline: mqtt.js QoS 1 echo, ${IN_FLIGHT} in flight, ${ECHO_MS / 1000} s, echo peer in a child process, before the hub started`,
        `accepted ${accepted}, completed ${completed}, results stored ${results.rows[0].n}, statuses ${JSON.stringify(last)}, HTTP errors ${errors.length}${errors.length ? ` (${[...new Set(errors)].slice(0, 3).join('; ')})` : ''}`,
        `command stats: published ${stats.published}, publish_errors ${stats.publish_errors}, flushes ${stats.flushes}, flush_errors ${stats.flush_errors}, duplicate_results ${stats.duplicate_results}; agent duplicates ${agents.reduce((n, a) => n + a.counters.duplicates, 0)}`,
      ],
    };
  };
  try {
    return await run();
  } finally {
    for (const c of cleanups) await c().catch((err) => console.error(`cleanup: ${(err as Error).message}`));
  }
}
