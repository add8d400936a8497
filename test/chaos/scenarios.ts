/**
 * The fault scenarios. Each runs on a fresh database (in the suite's private PostgreSQL), a
 * fresh private Mosquitto, a fresh hub and N fresh agents; the load and the fault run together;
 * then the ledger is settled and audited.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { ChaosAgent, ChaosHub } from './fleet.js';
import { type Figures, figureLine, Load, type LoadOptions } from './ledger.js';
import { EmbeddedServerReader, PrivateMosquitto, type PrivatePostgres, type Queryable, sleep } from './servers.js';

export interface ChaosOptions {
  commands: number;
  agents: number;
  /** agent-pause: how long the agent stays stopped. */
  pauseMs: number;
  /** pg-stop: how long the database stays down. */
  outageMs: number;
  /** How long the settle waits without progress before auditing. */
  stallMs: number;
  /** Where logs of failed scenarios are kept. */
  logDir: string;
  log: (line: string) => void;
}

interface Ctx {
  opts: ChaosOptions;
  hub: ChaosHub;
  agents: ChaosAgent[];
  /** The suite's private Mosquitto; none when the scenario runs on the hub's embedded broker. */
  mosquitto?: PrivateMosquitto;
  pgs: PrivatePostgres;
  /** The hub's embedded server, in the scenarios that run the hub on it. */
  embedded?: EmbeddedServerReader;
  load: Load;
  notes: Record<string, unknown>;
}

interface Scenario {
  /** What the fault is, for the README and --help. */
  what: string;
  sleepMs: readonly [number, number];
  /** Commands outstanding per project at most (default 8). */
  window?: number;
  /** The hub's database: the suite's private server (default), or the hub's embedded server (the shipped default). */
  db?: 'embedded';
  /** The broker: the suite's private Mosquitto (default), or the hub's embedded broker (the shipped default), the agents on it. */
  broker?: 'embedded';
  fault(c: Ctx): Promise<void>;
}

const at = (c: Ctx, fraction: number) => c.load.reached(Math.max(1, Math.floor(c.opts.commands * fraction)));

export const SCENARIOS: Record<string, Scenario> = {
  'hub-kill': {
    what: 'kill -9 the hub at 1/4, 1/2 and 3/4 of the commands (results in flight), restart it each time',
    sleepMs: [20, 200],
    async fault(c) {
      const down: number[] = [];
      for (const f of [0.25, 0.5, 0.75]) {
        await at(c, f);
        const t0 = Date.now();
        await c.hub.kill9();
        await c.hub.start();
        down.push(Date.now() - t0);
      }
      c.notes.kills = down.length;
      c.notes.down_ms = down;
    },
  },
  'embedded-kill': {
    what: 'the hub on its embedded PostgreSQL server (the shipped default): kill -9 the hub at 1/4, 1/2 and 3/4 (its server left running, stopped by the next start), and kill -9 the server under the hub at 5/8 (started again by the hub)',
    sleepMs: [20, 200],
    db: 'embedded',
    async fault(c) {
      const down: number[] = [];
      const orphans: boolean[] = [];
      for (const f of [0.25, 0.5, 0.625, 0.75]) {
        await at(c, f);
        if (f === 0.625) {
          const pid = c.embedded!.pid();
          if (pid) process.kill(pid, 'SIGKILL');
          c.notes.server_killed = pid !== undefined;
          continue;
        }
        const t0 = Date.now();
        const server = c.embedded!.pid();
        await c.hub.kill9();
        orphans.push(server !== undefined && c.embedded!.pid() === server);
        await c.hub.start();
        down.push(Date.now() - t0);
      }
      c.notes.kills = down.length;
      c.notes.down_ms = down;
      c.notes.server_outlived_kill = orphans;
      c.notes.orphans_stopped = c.hub.count('stopping an embedded PostgreSQL server left running by an earlier hub');
    },
  },
  'pg-stop': {
    what: 'PostgreSQL stopped (-m immediate) at 1/3 of the commands for the outage (default 8 s), commands of 0.5-4 s',
    sleepMs: [500, 4_000],
    async fault(c) {
      await at(c, 1 / 3);
      await c.pgs.stop('immediate');
      const before5xx = c.load.http5xx;
      await sleep(c.opts.outageMs);
      await c.pgs.start();
      c.notes.outage_ms = c.opts.outageMs;
      c.notes.http5xx_during = c.load.http5xx - before5xx;
    },
  },
  'broker-kill': {
    what:
      'Mosquitto (persistence on, default queue settings) kill -9 at 1/3 and 2/3 of the commands, restarted 5 s later; ' +
      '40 commands outstanding per agent, so the agents come back with a burst of results',
    sleepMs: [20, 200],
    window: 40,
    async fault(c) {
      for (const f of [1 / 3, 2 / 3]) {
        await at(c, f);
        await c.mosquitto!.kill9();
        await sleep(5_000);
        await c.mosquitto!.start();
      }
      c.notes.kills = 2;
    },
  },
  'agent-pause': {
    what: 'SIGSTOP one agent at 1/4 of the commands for the pause (default 60 s), then SIGCONT; sends use offline_policy queue',
    sleepMs: [20, 200],
    async fault(c) {
      await at(c, 0.25);
      const a = c.agents[0];
      a.signal('SIGSTOP');
      await sleep(c.opts.pauseMs);
      a.signal('SIGCONT');
      c.notes.pause_ms = c.opts.pauseMs;
    },
  },
  'agent-kill': {
    what: 'at 1/3: the broker goes down, results wait in the agents’ disk queues; one agent is killed -9, the broker and the agent restarted',
    sleepMs: [200, 1_000],
    async fault(c) {
      await at(c, 1 / 3);
      const a = c.agents[0];
      await c.mosquitto!.kill9();
      await sleep(3_000);
      c.notes.on_disk_at_kill = a.queuedOnDisk();
      await a.kill9();
      await c.mosquitto!.start();
      await a.start();
    },
  },
  sigterm: {
    what: 'SIGTERM the hub at 1/2 of the commands, restart it',
    sleepMs: [20, 200],
    async fault(c) {
      await at(c, 0.5);
      const t0 = Date.now();
      const r = await c.hub.stop();
      c.notes.exit = r.code ?? r.signal;
      c.notes.stop_ms = Date.now() - t0;
      await c.hub.start();
    },
  },
  'embedded-broker': {
    what:
      'the hub’s embedded MQTT broker (the shipped default), the agents’ and the bridge’s persistent sessions on it; ' +
      'at 1/5 and 3/5 an agent killed -9 and started again at once (its commands wait in its session), at 2/5 and 4/5 ' +
      'the hub’s bridge module restarted (the results wait in its session); 40 commands outstanding per agent',
    sleepMs: [20, 200],
    window: 40,
    broker: 'embedded',
    async fault(c) {
      let agentKills = 0;
      let bridgeRestarts = 0;
      for (const [k, f] of [0.2, 0.4, 0.6, 0.8].entries()) {
        await at(c, f);
        if (k % 2 === 0) {
          const a = c.agents[agentKills % c.agents.length];
          await a.kill9();
          await a.start();
          agentKills++;
        } else {
          await c.hub.restartModule('mqtt-bridge');
          bridgeRestarts++;
        }
      }
      c.notes.agent_kills = agentKills;
      c.notes.bridge_restarts = bridgeRestarts;
      c.notes.bridge_reconnects = c.hub.count('mqtt bridge reconnecting');
    },
  },
  'config-edit': {
    what: 'config.yml edited every second under load (command and status settings alternately: hot reload)',
    sleepMs: [20, 200],
    async fault(c) {
      let edits = 0;
      while (c.load.accepted < c.opts.commands) {
        await sleep(1_000);
        const odd = edits % 2 === 1;
        c.hub.writeConfig(
          edits % 4 < 2
            ? { command: { relay_interval_ms: odd ? 100 : 150 } }
            : { status: { flush_interval_ms: odd ? 200 : 250 } },
        );
        edits++;
      }
      c.notes.edits = edits;
      c.notes.reloads = c.hub.count('config reloaded');
    },
  },
};

/** Runs one scenario from scratch and returns its figures (logs kept in logDir when it lost anything or met an unexpected 5xx). */
export async function runScenario(name: string, pgs: PrivatePostgres, opts: ChaosOptions): Promise<Figures> {
  const sc = SCENARIOS[name];
  if (!sc) throw new Error(`unknown scenario ${name} (known: ${Object.keys(SCENARIOS).join(', ')})`);
  const db = `chaos_${name.replace(/-/g, '_')}_${Date.now().toString(36)}`;
  // the embedded server's directory: reachable by its user (postgres) when the suite runs as root
  const serverBase = sc.db === 'embedded' ? fs.mkdtempSync(path.join(os.tmpdir(), 'gmq-chaos-eps-')) : undefined;
  if (serverBase) fs.chmodSync(serverBase, 0o755);
  const embedded = serverBase ? new EmbeddedServerReader(path.join(serverBase, 'postgres')) : undefined;
  const hubDb = embedded
    ? { driver: 'embedded-postgres', server_dir: embedded.serverDir }
    : await pgs.createDatabase(db);
  const audited: Queryable = embedded ?? pgs;
  const mosquitto = sc.broker === 'embedded' ? undefined : await PrivateMosquitto.create();
  const hub = await ChaosHub.create(hubDb, mosquitto?.url ?? '', { broker: sc.broker });
  const agents: ChaosAgent[] = [];
  const notes: Record<string, unknown> = {};
  try {
    await hub.start();
    for (let i = 0; i < opts.agents; i++) {
      agents.push(new ChaosAgent(await hub.provision(`${db.replace(/_/g, '-')}-${i}`), hub.brokerUrl));
    }
    // a few at a time: twenty node processes starting at once take minutes on two cores
    for (let i = 0; i < agents.length; i += 4) await Promise.all(agents.slice(i, i + 4).map((a) => a.start()));
    const loadOpts: LoadOptions = {
      commands: opts.commands,
      sleepMs: sc.sleepMs,
      window: sc.window ?? 8,
      timeoutMs: 120_000,
      senders: Math.min(32, agents.length * 2),
    };
    const load = new Load(
      loadOpts,
      agents.map((a) => a.project.project_id),
      () => hub.base,
      audited,
      db,
    );
    const t0 = Date.now();
    const ctx: Ctx = { opts, hub, agents, mosquitto, pgs, embedded, load, notes };
    await Promise.all([load.run(), sc.fault(ctx)]);
    await load.settle(opts.stallMs);
    const durationMs = Date.now() - t0;
    const audit = await load.audit(agents.flatMap((a) => a.executions()));
    notes.uplinks_dropped = hub.count('command uplink dropped');
    if (mosquitto) notes.broker_drops = mosquitto.drops().length;
    if (load.codes.size > 0) notes.refusals = Object.fromEntries(load.codes);
    if (load.connErrors > 0) notes.conn_errors = load.connErrors;
    if (Object.keys(audit.notRun).length > 0) notes.not_run = audit.notRun;
    const figures: Figures = { scenario: name, durationMs, notes, ...audit };
    // a stopping hub refuses sends with 503 HOST_ERR_STOPPING by design; any other 5xx is worth reading about
    const unexpected5xx = [...load.codes.keys()].some((c) => c.startsWith('5') && c !== '503 HOST_ERR_STOPPING');
    if (figures.lost > 0 || figures.twice > 0 || unexpected5xx) {
      const dir = fs.mkdtempSync(path.join(opts.logDir, `${name}-`));
      hub.saveLogs(dir);
      for (const [i, a] of agents.entries()) a.saveLogs(dir, i);
      fs.writeFileSync(path.join(dir, 'figures.json'), JSON.stringify(figures, null, 2));
      notes.logs = dir;
    }
    return figures;
  } finally {
    await Promise.allSettled(agents.map((a) => a.dispose()));
    await hub.dispose().catch(() => undefined);
    await mosquitto?.destroy().catch(() => undefined);
    if (embedded) {
      // the hub's stop ended its server; one a kill left behind is ended here, by its PID
      const left = embedded.pid();
      if (left) process.kill(left, 'SIGKILL');
      fs.rmSync(serverBase!, { recursive: true, force: true });
    } else await pgs.query('postgres', `DROP DATABASE IF EXISTS "${db}" WITH (FORCE)`).catch(() => undefined);
  }
}

export { figureLine };

export const DEFAULT_LOG_DIR = path.join(os.tmpdir(), 'gmq-chaos-logs');
