/**
 * The sync suite's leg timeline (bench/sync-legs.ts, bench/legs-preload.ts): the preload records
 * a real process's HTTP requests and socket reads and writes in the right classes, and the
 * timeline cuts each call into its seven legs by the order of those events, leaving out a call
 * that does not take the steps.
 */
import assert from 'node:assert/strict';
import { fork } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { after, describe, test } from 'node:test';
import { LEGS, legNotes, legTimeline, parseLegEvents, readLegTimeline, tailNote } from '../../bench/sync-legs.js';

const PRELOAD = new URL('../../bench/legs-preload.js', import.meta.url).href;

/** Events as the preload writes them, one per line: `<µs> <event> <class> <socket>`. */
const lines = (...events: string[]) => `${events.join('\n')}\n`;

describe('leg timeline: cutting calls into legs', () => {
  test('a hub-like call: the audit record and a heartbeat between, PUBACKs after the answer', () => {
    const t = legTimeline(
      parseLegEvents(
        lines(
          '100 Q h 1',
          '300 W d 2', // the send's INSERT
          '900 R d 2',
          '1000 W m 3', // the publish
          '1100 W d 4', // the audit record, on another connection
          '1200 R m 3', // the broker's PUBACK
          '1500 R d 4',
          '2000 R m 3', // the agent's ack
          '2100 R m 3', // its result
          '2300 W d 2', // the ack + result write
          '3000 R d 2',
          '3200 W h 1', // the answer
          '3300 W m 3', // PUBACKs of the ack and the result, after the answer
          '4000 Q h 1',
          '4100 W d 2',
          '4200 R d 2',
          '4300 W m 3',
          '4400 R m 3',
          '4500 W d 2',
          '4600 R d 2',
          '4700 W h 1',
        ),
      ),
    );
    assert.equal(t.skipped, 0);
    assert.deepEqual(
      t.legs.map((l) => l[0]),
      [200, 600, 100, 1100, 200, 700, 200],
    );
    assert.deepEqual(t.totals, [3100, 700]);
    assert.deepEqual(
      t.legs.map((l) => l[1]),
      [100, 100, 100, 100, 100, 100, 100],
    );
  });

  test('the last statement is the last one answered before the answer, not a write still out', () => {
    const t = legTimeline(
      parseLegEvents(
        lines(
          '0 Q h 1',
          '10 W d 2',
          '20 R d 2',
          '30 W m 3',
          '40 R m 3',
          '50 W d 2',
          '60 R d 2',
          '70 W d 5', // a statement of something else, answered after the HTTP answer
          '80 W h 1',
          '90 R d 5',
        ),
      ),
    );
    assert.equal(t.skipped, 0);
    assert.deepEqual(
      t.legs.map((l) => l[0]),
      [10, 10, 10, 10, 10, 10, 20],
    );
  });

  test('calls without the steps are left out and counted', () => {
    const t = legTimeline(
      parseLegEvents(
        lines(
          '0 Q h 1', // no statement at all (a refused call)
          '10 W h 1',
          '20 Q h 1', // no publish
          '30 W d 2',
          '40 R d 2',
          '50 W h 1',
          '60 Q h 1', // never answered
          '70 W d 2',
          '',
          'partial',
        ),
      ),
    );
    assert.equal(t.totals.length, 0);
    assert.equal(t.skipped, 3);
    const notes = legNotes(t, t);
    assert.match(notes[0], /0 calls \(3 out of order, left out\)/);
    assert.equal(LEGS.length, 7);
  });
});

describe('leg timeline: the slowest calls', () => {
  test('the tail note counts, for the slowest 2 %, which legs were past their own p98', () => {
    // 200 calls: 198 even ones (every leg 50 µs and a little more, call by call) and two slow
    // ones, short in every leg but one: the database (leg 6) in one, the agent (leg 4) in the other
    const legs: number[][] = LEGS.map(() => Array.from({ length: 200 }, (_, i) => 50 + i / 100));
    for (const l of legs) l[10] = l[20] = 10;
    legs[5][10] = 5_000;
    legs[3][20] = 9_000;
    const totals = Array.from({ length: 200 }, (_, i) => legs.reduce((s, l) => s + l[i], 0));
    const t = { legs, totals, skipped: 0 };
    // the tail is the five slowest (the 98th percentile is the fifth): the two slow calls and the
    // three slowest even ones, each past every leg's p98; of the slow two, only their slow leg is
    assert.equal(tailNote(t), '5 calls, median 364 µs; legs past their own p98: 1:3 2:3 3:3 4:4 5:3 6:4 7:3');
    assert.equal(tailNote({ legs: LEGS.map(() => []), totals: [], skipped: 0 }), 'no calls');
    assert.ok(legNotes(t, t)[2].startsWith("the slowest 2 % of calls (the p99's tail), hub / floor: 5 calls"));
  });
});

describe('leg timeline: the preload in a real process', { timeout: 60_000 }, () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'gmq-legs-'));
  const servers: net.Server[] = [];
  after(async () => {
    for (const s of servers) s.close();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  /** A TCP server on a free port; `reply` answers each chunk (after `delayMs`). */
  const serve = async (reply: string, delayMs: number): Promise<number> => {
    const server = net.createServer((s) => s.on('data', () => setTimeout(() => s.write(reply), delayMs)));
    servers.push(server);
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    return (server.address() as net.AddressInfo).port;
  };

  test('requests, database and broker traffic are recorded in their classes and cut into legs', async () => {
    const dbPort = await serve('row', 0);
    const brokerPort = await serve('result', 20);
    // a process taking the sync path's steps: statement, publish, agent's message, statement, answer
    const script = path.join(dir, 'side.mjs');
    fs.writeFileSync(
      script,
      `import http from 'node:http';
import net from 'node:net';
const connect = (port) => new Promise((r) => { const s = net.connect(port, '127.0.0.1', () => r(s)); });
const ask = (s, text) => new Promise((r) => { s.once('data', r); s.write(text); });
const db = await connect(Number(process.argv[2]));
const broker = await connect(Number(process.argv[3]));
const server = http.createServer(async (req, res) => {
  await ask(db, 'insert');
  await ask(broker, 'publish');
  await ask(db, 'update');
  res.end('ok');
});
server.listen(0, '127.0.0.1', () => process.send(server.address().port));
process.on('message', () => process.exit(0));
`,
    );
    const out = path.join(dir, 'events.txt');
    const child = fork(script, [String(dbPort), String(brokerPort)], {
      execArgv: ['--import', PRELOAD],
      env: { ...process.env, BENCH_LEGS_OUT: out, BENCH_LEGS_MQTT_PORT: String(brokerPort) },
    });
    const exited = new Promise((r) => child.once('exit', r));
    const port = await new Promise<number>((r) => child.once('message', (m) => r(Number(m))));
    for (let i = 0; i < 3; i++) {
      const res = await fetch(`http://127.0.0.1:${port}/`);
      assert.equal(await res.text(), 'ok');
    }
    child.send('exit');
    await exited;

    const events = parseLegEvents(fs.readFileSync(out, 'utf8'));
    const kinds = new Set(events.map((e) => `${e.event} ${e.cls}`));
    for (const k of ['Q h', 'W d', 'R d', 'W m', 'R m', 'W h']) assert.ok(kinds.has(k), `${k} recorded`);
    // the HTTP server's reads go to its parser: requests stand for them; nothing else is a server socket
    assert.ok(!kinds.has('R h'));
    const t = readLegTimeline(out);
    assert.equal(t.totals.length, 3);
    assert.equal(t.skipped, 0);
    for (const leg of t.legs) for (const us of leg) assert.ok(us >= 0);
    // the broker's reply waits 20 ms: that leg (4) is each call's longest
    for (let call = 0; call < 3; call++) {
      const longest = t.legs.reduce((best, leg, i) => (leg[call] > t.legs[best][call] ? i : best), 0);
      assert.equal(longest, 3, `call ${call}: ${t.legs.map((l) => l[call]).join(', ')}`);
    }
  });
});
