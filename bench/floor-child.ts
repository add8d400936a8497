/**
 * The hand-coded floor of issue 13 (item 6), the baseline of the sync, sync-concurrent and async
 * suites: what the hub's command path does, written directly with node:http, the `pg` driver
 * and mqtt.js, with no framework, no bus and no signing. In its own process, forked like
 * bench/hub-child.ts, so it sits where the hub sits:
 *
 *   POST /sync  { project_id, command_type, payload, wait_ms? }
 *     INSERT (committed) → publish QoS 1 on floor/cmd/<project> → the agent's reply on
 *     floor/res/<project> → UPDATE (committed) → 200 { command_id, status: 'completed', result }
 *     (504 when no reply within wait_ms, default 10 s)
 *   POST /send  { project_id, command_type, payload }
 *     INSERT (committed) → publish QoS 1, PUBACKed → 202 { command_id, status: 'sent' }; the
 *     reply, whenever it comes, is written by the same UPDATE. As the hub's 202: durable
 *     before answered.
 *
 * Writes are micro-batched (bench/floor-batch.ts): one multi-row INSERT and one multi-row UPDATE
 * per turn of the event loop, prepared (named) statements over unnest() arrays, on a pg Pool.
 * Its table lives in the schema it is given (a throwaway one, bench/env.ts pgDatabase()),
 * created at start.
 *
 * With BENCH_FLOOR=signed (floor-protocol.ts) it speaks the protocol instead: each command signed
 * with its project's secret as the hub signs it, the agent's `command_ack` and `exec_result` parsed
 * and checked (signature, clock, replay) as the hub checks them; the result is what it writes.
 *
 * argv: <mqtt url (may carry user:pass)> <postgres url> <schema>
 * IPC: child → parent { op: 'ready', url } | { op: 'stats', ... } | { op: 'start-failed', error };
 *      parent → child { op: 'stats' } | { op: 'stop' }
 */
import { randomUUID } from 'node:crypto';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import pg from 'pg';
import { parseUplink, signedCommandJson, TOPIC_MESSAGE_UP } from '../modules/shared/protocol.js';
import { CLOCK_WINDOW_MS, canonicalJson, ReplayCache, verifyInbound } from '../modules/shared/signing.js';
import { connectMqtt, endClient, publishQos1 } from './agents.js';
import { floorCommandTopic, floorReplies, urlAuth } from './floor-agent.js';
import { MicroBatch } from './floor-batch.js';
import { floorKind, floorSecret } from './floor-protocol.js';

const [mqttUrl, pgUrl, schema] = process.argv.slice(2);
/** BENCH_FLOOR=signed: commands signed, replies parsed and checked as the protocol asks (floor-protocol.ts). */
const SIGNED = floorKind() === 'signed';
const replay = new ReplayCache();
const send = (m: unknown) => process.send?.(m);

interface Insert {
  id: string;
  projectId: string;
  commandType: string;
  payload: string;
}
interface Update {
  id: string;
  result: string;
}
interface Waiter {
  resolve(result: unknown): void;
  timer: NodeJS.Timeout;
}

const table = `"${schema}".floor_command`;
const INSERT_SQL = `INSERT INTO ${table} (id, project_id, command_type, payload, status)
  SELECT u.id, u.p, u.c, u.x::jsonb, 'sent' FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[]) AS u(id, p, c, x)`;
const UPDATE_SQL = `UPDATE ${table} AS t SET status = 'completed', result = u.r::jsonb, completed_at = now()
  FROM unnest($1::uuid[], $2::text[]) AS u(id, r) WHERE t.id = u.id`;
const PROJECT_ID = /^[A-Za-z0-9_.-]{1,128}$/;

const db = new pg.Pool({ connectionString: pgUrl, max: 10 });
const inserts = new MicroBatch<Insert>(async (rows) => {
  await db.query({
    name: 'floor_insert',
    text: INSERT_SQL,
    values: [
      rows.map((r) => r.id),
      rows.map((r) => r.projectId),
      rows.map((r) => r.commandType),
      rows.map((r) => r.payload),
    ],
  });
});
const updates = new MicroBatch<Update>(async (rows) => {
  await db.query({
    name: 'floor_update',
    text: UPDATE_SQL,
    values: [rows.map((r) => r.id), rows.map((r) => r.result)],
  });
});
const waiters = new Map<string, Waiter>();
let syncTimeouts = 0;
let badReplies = 0;
let acks = 0;

function answer(res: http.ServerResponse, status: number, body: unknown): void {
  const text = JSON.stringify(body);
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) });
  res.end(text);
}

async function handle(url: string, body: Buffer, res: http.ServerResponse): Promise<void> {
  let req: { project_id?: unknown; command_type?: unknown; payload?: unknown; wait_ms?: unknown };
  try {
    req = JSON.parse(body.toString('utf8'));
  } catch {
    return answer(res, 400, { error: { code: 'INVALID', message: 'body is not JSON' } });
  }
  const { project_id: projectId, command_type: commandType } = req;
  if (typeof projectId !== 'string' || !PROJECT_ID.test(projectId) || typeof commandType !== 'string') {
    return answer(res, 400, { error: { code: 'INVALID', message: 'project_id and command_type are required' } });
  }
  let id: string;
  let payload: string;
  let wire: string;
  if (SIGNED) {
    // as the hub's send: the payload canonical (an object; none is {}), the command signed around it
    payload = canonicalJson(req.payload ?? {});
    const cmd = signedCommandJson(projectId, commandType, payload, floorSecret(projectId));
    id = cmd.message_id;
    wire = cmd.json;
  } else {
    id = randomUUID();
    payload = JSON.stringify(req.payload ?? null);
    wire = `{"id":"${id}","command_type":${JSON.stringify(commandType)},"payload":${payload}}`;
  }
  await inserts.add({ id, projectId, commandType, payload });
  const topic = floorCommandTopic(projectId);
  if (url === '/send') {
    await publishQos1(mqtt, topic, wire);
    return answer(res, 202, { command_id: id, status: 'sent' });
  }
  const waitMs = typeof req.wait_ms === 'number' && req.wait_ms > 0 ? req.wait_ms : 10_000;
  const result = new Promise<unknown>((resolve) => {
    const timer = setTimeout(() => {
      waiters.delete(id);
      syncTimeouts++;
      resolve(undefined);
    }, waitMs);
    waiters.set(id, { resolve, timer });
  });
  // for a sync call the agent's reply is the proof of delivery: no wait for the PUBACK
  mqtt.publish(topic, wire, { qos: 1 });
  const r = await result;
  if (r === undefined) return answer(res, 504, { command_id: id, status: 'sent', error: { code: 'TIMEOUT' } });
  answer(res, 200, { command_id: id, status: 'completed', result: r });
}

/** A signed reply (BENCH_FLOOR=signed): an ack is checked and counted; a result is checked and written. */
function onSignedReply(payload: Buffer): void {
  const r = parseUplink(TOPIC_MESSAGE_UP, payload);
  if (!r.ok || r.value.kind !== 'data') {
    badReplies++;
    return;
  }
  const msg = r.value.msg;
  const v = verifyInbound(msg, floorSecret(msg.project_id), replay, Date.now(), CLOCK_WINDOW_MS, r.value.sent);
  if (!v.ok) {
    badReplies++;
    return;
  }
  if (msg.data_type === 'command_ack') {
    acks++;
    return;
  }
  if (msg.data_type !== 'exec_result') {
    badReplies++;
    return;
  }
  written(msg.payload.command_id, msg.payload);
}

function onReply(payload: Buffer): void {
  let m: { id?: unknown; result?: unknown };
  try {
    m = JSON.parse(payload.toString('utf8'));
  } catch {
    badReplies++;
    return;
  }
  const id = m.id;
  if (typeof id !== 'string') {
    badReplies++;
    return;
  }
  written(id, m.result ?? null);
}

/** The result written (micro-batched UPDATE), then its sync caller, if one waits, answered. */
function written(id: string, result: unknown): void {
  updates.add({ id, result: JSON.stringify(result) }).then(
    () => {
      const w = waiters.get(id);
      if (!w) return;
      waiters.delete(id);
      clearTimeout(w.timer);
      w.resolve(result);
    },
    (err) => console.error(`floor: update failed: ${(err as Error).message}`),
  );
}

let mqtt: Awaited<ReturnType<typeof connectMqtt>>;
let server: http.Server;
try {
  await db.query(
    `CREATE TABLE IF NOT EXISTS ${table} (
      id uuid PRIMARY KEY, project_id text NOT NULL, command_type text NOT NULL, payload jsonb NOT NULL,
      status text NOT NULL, result jsonb, created_at timestamptz NOT NULL DEFAULT now(), completed_at timestamptz)`,
  );
  mqtt = await connectMqtt(mqttUrl, { clientId: `floor-${process.pid}`, ...urlAuth(mqttUrl) });
  mqtt.on('message', (_topic, payload) => (SIGNED ? onSignedReply(payload) : onReply(payload)));
  await mqtt.subscribeAsync(floorReplies(), { qos: 1 });
  server = http.createServer((req, res) => {
    const url = req.url ?? '';
    if (req.method !== 'POST' || (url !== '/sync' && url !== '/send')) {
      req.resume();
      return answer(res, 404, { error: { code: 'NOT_FOUND' } });
    }
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      handle(url, Buffer.concat(chunks), res).catch((err: Error) =>
        answer(res, 500, { error: { code: 'INTERNAL', message: err.message } }),
      );
    });
  });
  // the suites alternate floor and hub for seconds at a time: keep the callers' sockets open
  server.keepAliveTimeout = 120_000;
  server.on('connection', (s) => s.setNoDelay(true));
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
} catch (err) {
  send({ op: 'start-failed', error: (err as Error).message });
  process.exit(1);
}

async function stop(): Promise<never> {
  server.close();
  server.closeAllConnections();
  await endClient(mqtt).catch(() => undefined);
  await db.end().catch(() => undefined);
  process.exit(0);
}

process.on('message', (m: { op: string }) => {
  if (m.op === 'stats') {
    send({
      op: 'stats',
      inserted: inserts.rows,
      insert_batches: inserts.batches,
      updated: updates.rows,
      update_batches: updates.batches,
      sync_timeouts: syncTimeouts,
      bad_replies: badReplies,
      acks,
    });
  }
  if (m.op === 'stop') void stop();
});
// the parent went away (crashed bench): do not linger
process.on('disconnect', () => void stop());
send({ op: 'ready', url: `http://127.0.0.1:${(server.address() as AddressInfo).port}` });
