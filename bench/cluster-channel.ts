/**
 * Which channel carries command events between hub instances (issue 11): PostgreSQL
 * LISTEN/NOTIFY or a hub-internal MQTT topic. Both carry the same ~600-byte events at a fixed
 * rate to three listeners (three instances); we measure delivery latency (p50/p99) and CPU:
 * this Node process (publisher + listeners) and the server side (the PostgreSQL backends or the
 * Mosquitto process, read from /proc). A third run measures what the per-row announce trigger
 * (modules/command/migrations.ts 004) adds to a grouped tracker write.
 *
 *   node dist/bench/cluster-channel.js [events_per_s=1000] [seconds=10]
 *
 * Needs the test PostgreSQL (TEST_DATABASE_URL) and a `mosquitto` binary (a private one is started).
 */
import fs from 'node:fs';
import mqtt from 'mqtt';
import pg from 'pg';
import { PrivateMosquitto } from '../test/chaos/servers.js';
import { TEST_DATABASE_URL, withPgSchema } from '../test/helpers/db.js';

const RATE = Number(process.argv[2] ?? 1000);
const SECONDS = Number(process.argv[3] ?? 10);
const LISTENERS = 3;
const TICK_MS = 10;
const PAD = 'x'.repeat(480);

const ticks = (pid: number): number => {
  // /proc/<pid>/stat fields 14 and 15: utime, stime in clock ticks (100 Hz here)
  const f = fs.readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1].split(' ');
  return Number(f[11]) + Number(f[12]);
};
const pct = (xs: number[], p: number): number => {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))] ?? Number.NaN;
};
const event = (i: number) =>
  JSON.stringify({ k: 's', id: `c-${i}`, v: i, t: performance.now(), row: { status: 'acked', pad: PAD } });

async function drive(send: (payload: string) => void | Promise<void>): Promise<number> {
  const perTick = Math.max(1, Math.round((RATE * TICK_MS) / 1000));
  const total = RATE * SECONDS;
  let i = 0;
  const t0 = performance.now();
  while (i < total) {
    for (let k = 0; k < perTick && i < total; k++) await send(event(i++));
    const next = t0 + (i / RATE) * 1000;
    const wait = next - performance.now();
    if (wait > 0) await new Promise((r) => setTimeout(r, wait));
  }
  return total;
}

interface Row {
  channel: string;
  events: number;
  deliveries: number;
  p50_ms: number;
  p99_ms: number;
  node_cpu_ms_per_1k: number;
  server_cpu_ms_per_1k: number;
}

async function benchNotify(): Promise<Row> {
  const channel = 'gmq_bench_events';
  const lat: number[] = [];
  const listeners: pg.Client[] = [];
  for (let n = 0; n < LISTENERS; n++) {
    const c = new pg.Client({ connectionString: TEST_DATABASE_URL });
    await c.connect();
    c.on('notification', (m) => {
      const t = (JSON.parse(m.payload ?? '{}') as { t: number }).t;
      lat.push(performance.now() - t);
    });
    await c.query(`LISTEN ${channel}`);
    listeners.push(c);
  }
  const pub = new pg.Client({ connectionString: TEST_DATABASE_URL });
  await pub.connect();
  const pids = [];
  for (const c of [pub, ...listeners]) pids.push((await c.query('SELECT pg_backend_pid() AS p')).rows[0].p as number);
  const cpu0 = process.cpuUsage();
  const srv0 = pids.reduce((s, p) => s + ticks(p), 0);
  // one statement per event, as a trigger in each committing statement would
  const events = await drive((p) => pub.query('SELECT pg_notify($1, $2)', [channel, p]).then(() => undefined));
  await new Promise((r) => setTimeout(r, 500));
  const cpu = process.cpuUsage(cpu0);
  const srv = pids.reduce((s, p) => s + ticks(p), 0) - srv0;
  for (const c of [pub, ...listeners]) await c.end();
  return {
    channel: 'postgres LISTEN/NOTIFY',
    events,
    deliveries: lat.length,
    p50_ms: pct(lat, 50),
    p99_ms: pct(lat, 99),
    node_cpu_ms_per_1k: ((cpu.user + cpu.system) / 1000 / events) * 1000,
    server_cpu_ms_per_1k: ((srv * 10) / events) * 1000,
  };
}

async function benchBroker(): Promise<Row> {
  // Mosquitto leaves Nagle on without set_tcp_nodelay: 44 ms per round trip instead of 0.2 ms
  const broker = await PrivateMosquitto.create([
    'set_tcp_nodelay true',
    'max_inflight_messages 0',
    'max_queued_messages 0',
  ]);
  const pidOf = (): number => {
    // the private broker is the newest mosquitto child of this process
    const mine = fs
      .readdirSync('/proc')
      .filter((d) => /^\d+$/.test(d))
      .filter((d) => {
        try {
          const stat = fs.readFileSync(`/proc/${d}/stat`, 'utf8');
          return stat.includes('(mosquitto)') && Number(stat.split(') ')[1].split(' ')[1]) === process.pid;
        } catch {
          return false;
        }
      });
    return Number(mine.at(-1));
  };
  const mpid = pidOf();
  const lat: number[] = [];
  const topic = 'gmq-hub/cluster/bench/command';
  const subs: mqtt.MqttClient[] = [];
  for (let n = 0; n < LISTENERS; n++) {
    const c = await mqtt.connectAsync(broker.url, { clean: true });
    (c.stream as unknown as { setNoDelay?: (b: boolean) => void }).setNoDelay?.(true);
    c.on('message', (_t, payload) => {
      lat.push(performance.now() - (JSON.parse(payload.toString()) as { t: number }).t);
    });
    await c.subscribeAsync(topic, { qos: 1 });
    subs.push(c);
  }
  const pub = await mqtt.connectAsync(broker.url, { clean: true });
  (pub.stream as unknown as { setNoDelay?: (b: boolean) => void }).setNoDelay?.(true);
  const cpu0 = process.cpuUsage();
  const srv0 = ticks(mpid);
  // QoS 1, not awaited per event (the relay would not wait for the PUBACK either)
  const events = await drive((p) => {
    pub.publish(topic, p, { qos: 1 });
  });
  await new Promise((r) => setTimeout(r, 500));
  const cpu = process.cpuUsage(cpu0);
  const srv = ticks(mpid) - srv0;
  for (const c of [pub, ...subs]) await c.endAsync();
  await broker.destroy();
  return {
    channel: 'mosquitto QoS 1 topic',
    events,
    deliveries: lat.length,
    p50_ms: pct(lat, 50),
    p99_ms: pct(lat, 99),
    node_cpu_ms_per_1k: ((cpu.user + cpu.system) / 1000 / events) * 1000,
    server_cpu_ms_per_1k: ((srv * 10) / events) * 1000,
  };
}

/** What the announce trigger costs a grouped write: 20-row UPDATE statements with and without it. */
async function benchTrigger(): Promise<Record<string, number>> {
  const s = await withPgSchema();
  const c = new pg.Client({ connectionString: TEST_DATABASE_URL });
  await c.connect();
  const schema = (s.config as { schema: string }).schema;
  try {
    await c.query(`SET search_path TO "${schema}"`);
    await c.query(
      `CREATE TABLE t (id int PRIMARY KEY, status text, version bigint NOT NULL DEFAULT 0, pad text);
       INSERT INTO t SELECT g, 'pending', 0, repeat('x', 400) FROM generate_series(1, 2000) g;
       CREATE FUNCTION ann() RETURNS trigger LANGUAGE plpgsql AS $$
       BEGIN
         IF OLD.status IS DISTINCT FROM NEW.status THEN
           PERFORM pg_notify('gmq_bench_trg', json_build_object('id', NEW.id, 'v', NEW.version, 'row', to_jsonb(NEW))::text);
         END IF;
         RETURN NULL;
       END $$;`,
    );
    const run = async (): Promise<number> => {
      const t0 = performance.now();
      for (let k = 0; k < 100; k++) {
        const base = (k % 100) * 20;
        await c.query(
          `UPDATE t SET status = CASE status WHEN 'pending' THEN 'sent' ELSE 'pending' END, version = version + 1
            WHERE id > $1 AND id <= $2`,
          [base, base + 20],
        );
      }
      return (performance.now() - t0) / 100;
    };
    await run();
    const without = Math.min(await run(), await run(), await run());
    await c.query('CREATE TRIGGER ann AFTER UPDATE ON t FOR EACH ROW EXECUTE FUNCTION ann()');
    await run();
    const withTrigger = Math.min(await run(), await run(), await run());
    return { rows_per_statement: 20, ms_per_statement_without: without, ms_per_statement_with_trigger: withTrigger };
  } finally {
    await c.end();
    await s.drop();
  }
}

const rows = [await benchNotify(), await benchBroker()];
console.log(`cluster channel at ${RATE} events/s for ${SECONDS} s, ${LISTENERS} listeners`);
console.table(
  rows.map((r) => ({
    ...r,
    p50_ms: r.p50_ms.toFixed(2),
    p99_ms: r.p99_ms.toFixed(2),
    node_cpu_ms_per_1k: r.node_cpu_ms_per_1k.toFixed(0),
    server_cpu_ms_per_1k: r.server_cpu_ms_per_1k.toFixed(0),
  })),
);
console.table([await benchTrigger()]);
process.exit(0);
