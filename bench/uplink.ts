/**
 * The hub's edge for one uplink, in process and without a broker: what the bridge does to
 * every uplink before the bus carries it (modules/shared/protocol/parse.ts parseUplink, then
 * modules/mqtt-bridge/verify.ts: project, signature, clock, replay), over the messages of
 * 20 000 projects in the shape the heartbeat suite's agents send, and over a command's two
 * uplinks (its command_ack and exec_result) as the command suites' agents send them. The full
 * `heartbeat` suite moves by a third from run to run on these machines; this part of its cost
 * does not, so a change to the edge can be measured here first.
 *
 * Baseline (the floor, same run): what any receiver of a signed JSON message has to do, JSON.parse
 * of the text and one HMAC-SHA256 over it (its cost only: the floor does not cut the signature
 * out first). A third row times the free-form check of a heartbeat payload (shared/sanitize.ts
 * findUnsafeJson, which every payload passes), after the command payloads went through it as in
 * a hub, against the reporting walk it runs only for a refused value. A fourth reads the same
 * heartbeats as MQTT PUBLISH packets from 64 KiB reads (packets cut where the reads end), as the
 * bridge's connection does (shared/mqtt-packet-lean.ts, PUBLISH read in place), against
 * mqtt-packet's own parse of the same reads.
 */

import { createHmac, randomUUID } from 'node:crypto';
import { performance } from 'node:perf_hooks';
import mqttPacket from 'mqtt-packet';
import type { ModuleBus } from '../core/bus.js';
import { UplinkVerifier } from '../modules/mqtt-bridge/verify.js';
import { mqttPacketParse } from '../modules/shared/mqtt-packet-lean.js';
import { parseUplink, TOPIC_MESSAGE_UP } from '../modules/shared/protocol.js';
import { DEFAULT_JSON_LIMITS, findUnsafeJson, locateUnsafeJson } from '../modules/shared/sanitize.js';
import { heartbeatPayload, signedData } from './agents.js';
import { envNumber } from './env.js';
import { machine, median, type SuiteResult, vsFloor } from './harness.js';

const RUNS = 5;

interface Project {
  project_id: string;
  secret: string;
}

/** A read model already holding every project, as the bridge's is once each has been seen. */
async function warmVerifier(projects: Project[]): Promise<UplinkVerifier> {
  const byId = new Map(projects.map((p) => [p.project_id, p]));
  const bus = {
    request: async (_topic: string, req: { project_id: string }) => ({
      project_id: req.project_id,
      enabled: true,
      state: 'online',
      secrets: [byId.get(req.project_id)!.secret],
    }),
  } as unknown as ModuleBus;
  const v = new UplinkVerifier({ bus, now: () => Date.now(), credentialsTtlMs: 3_600_000 });
  for (const p of projects) {
    const r = v.verify('data', { project_id: p.project_id } as never);
    if (r instanceof Promise) await r;
  }
  return v;
}

export async function runUplinkSuite(): Promise<SuiteResult> {
  const projectCount = envNumber('BENCH_UPLINK_PROJECTS', 20_000);
  const perRun = envNumber('BENCH_UPLINK_MESSAGES', 100_000, 40_000);
  const projects: Project[] = Array.from({ length: projectCount }, (_, i) => ({
    project_id: `bench-${i}`,
    secret: `s${i}`.padEnd(64, 'x'),
  }));
  // fresh message ids for every pass: the replay check must see each id once
  const heartbeats = () =>
    Array.from({ length: perRun }, (_, i) => {
      const p = projects[i % projectCount];
      return {
        secret: p.secret,
        bytes: Buffer.from(signedData(p.project_id, p.secret, 'heartbeat', heartbeatPayload(p.project_id))),
      };
    });
  // what a command brings back, as the bench agents write it: its command_ack, then an echo's exec_result
  const commandUplinks = () =>
    Array.from({ length: perRun }, (_, i) => {
      const p = projects[(i >> 1) % projectCount];
      const commandId = randomUUID();
      const now = Date.now();
      const text =
        i % 2 === 0
          ? signedData(p.project_id, p.secret, 'command_ack', { command_id: commandId })
          : signedData(p.project_id, p.secret, 'exec_result', {
              command_id: commandId,
              status: 'success',
              exit_code: 0,
              output: JSON.stringify({ hello: p.project_id, n: i }),
              error: '',
              start_time: now,
              end_time: now,
              duration: 0,
            });
      return { secret: p.secret, bytes: Buffer.from(text) };
    });
  type Batch = ReturnType<typeof heartbeats>;
  const verifier = await warmVerifier(projects);
  let bytesEach = 0;

  const edge = (msgs: Batch): number => {
    const t0 = performance.now();
    for (const m of msgs) {
      const r = parseUplink(TOPIC_MESSAGE_UP, m.bytes, {});
      if (!r.ok) throw new Error(`bench uplink refused: ${r.code} ${r.reason}`);
      const v = verifier.verify(r.value.kind, r.value.msg, r.value.sent);
      if (v instanceof Promise || !v.ok) throw new Error('bench uplink not verified synchronously');
      verifier.commit(v.replayKey);
    }
    return ((performance.now() - t0) * 1000) / msgs.length;
  };
  const floor = (msgs: Batch): number => {
    const t0 = performance.now();
    let sink = 0;
    for (const m of msgs) {
      const text = m.bytes.toString('utf8');
      const obj = JSON.parse(text) as { signature?: string };
      const mac = createHmac('sha256', m.secret).update(text).digest('hex');
      if (mac === obj.signature) sink++;
    }
    if (sink < 0) throw new Error('unreachable');
    return ((performance.now() - t0) * 1000) / msgs.length;
  };

  const payloads = Array.from({ length: 1_000 }, (_, i) => JSON.parse(JSON.stringify(heartbeatPayload(`bench-${i}`))));
  const checks = envNumber('BENCH_UPLINK_CHECKS', 1_000_000, 300_000);
  const timeCheck = (check: (v: unknown) => boolean): number => {
    const t0 = performance.now();
    let safe = 0;
    for (let i = 0; i < checks; i++) if (check(payloads[i % payloads.length])) safe++;
    if (safe !== checks) throw new Error('a bench payload was refused');
    return ((performance.now() - t0) * 1e6) / checks;
  };
  const firstPass = (v: unknown) => findUnsafeJson(v) === null;
  const reporting = (v: unknown) => locateUnsafeJson(v, DEFAULT_JSON_LIMITS) === null;

  // the heartbeats as the broker delivers them to the bridge: QoS 1 PUBLISH packets in 64 KiB reads
  const reads = (msgs: Batch): Buffer[] => {
    const stream = Buffer.concat(
      msgs.map((m, i) =>
        mqttPacket.generate({
          cmd: 'publish',
          topic: TOPIC_MESSAGE_UP,
          payload: m.bytes,
          qos: 1,
          messageId: (i % 65_535) + 1,
          retain: false,
          dup: false,
        }),
      ),
    );
    const out: Buffer[] = [];
    for (let at = 0; at < stream.length; at += 65_536) out.push(stream.subarray(at, at + 65_536));
    return out;
  };
  const timeRead = (chunks: Buffer[], count: number, inPlace: boolean): number => {
    const parser = mqttPacket.parser({ protocolVersion: 4 });
    let packets = 0;
    parser.on('packet', () => packets++);
    const t0 = performance.now();
    for (const c of chunks) {
      if (inPlace) parser.parse(c);
      else (mqttPacketParse as (b: Buffer) => number).call(parser, c);
    }
    const ns = ((performance.now() - t0) * 1e6) / count;
    if (packets !== count) throw new Error(`bench uplink: ${packets} of ${count} packets read`);
    return ns;
  };

  // warm-up (JIT), then alternating runs so drift on a noisy machine hits both alike
  edge(heartbeats());
  floor(heartbeats());
  edge(commandUplinks());
  floor(commandUplinks());
  timeCheck(firstPass);
  timeCheck(reporting);
  const hub: number[] = [];
  const base: number[] = [];
  const cmdHub: number[] = [];
  const cmdBase: number[] = [];
  const check: number[] = [];
  const walk: number[] = [];
  const readInPlace: number[] = [];
  const readByPacket: number[] = [];
  let cmdBytes = 0;
  for (let r = 0; r < RUNS; r++) {
    const msgs = heartbeats();
    bytesEach = msgs[0].bytes.length;
    hub.push(edge(msgs));
    base.push(floor(msgs));
    const cmds = commandUplinks();
    cmdBytes = (cmds[0].bytes.length + cmds[1].bytes.length) / 2;
    cmdHub.push(edge(cmds));
    cmdBase.push(floor(cmds));
    check.push(timeCheck(firstPass));
    walk.push(timeCheck(reporting));
  }
  const readChunks = reads(heartbeats());
  timeRead(readChunks, perRun, true);
  timeRead(readChunks, perRun, false);
  // after the rows above, so the garbage mqtt-packet's parse leaves is not collected in their time
  for (let r = 0; r < RUNS; r++) {
    readInPlace.push(timeRead(readChunks, perRun, true));
    readByPacket.push(timeRead(readChunks, perRun, false));
  }
  const c = median(check);
  const w = median(walk);
  return {
    suite: 'uplink',
    machine: machine(),
    rows: [
      vsFloor('parse and verify one heartbeat', 'µs', median(hub), median(base)),
      vsFloor("parse and verify a command's ack or result", 'µs', median(cmdHub), median(cmdBase)),
      {
        metric: 'free-form check of a heartbeat payload',
        value: c,
        unit: 'ns',
        baseline: w,
        against: 'walk',
        ratio: w / c,
      },
      {
        metric: 'read one heartbeat PUBLISH from the socket’s reads',
        value: median(readInPlace),
        unit: 'ns',
        baseline: median(readByPacket),
        against: 'mqtt-packet',
        ratio: median(readByPacket) / median(readInPlace),
      },
    ],
    notes: [
      `median of ${RUNS} runs of ${perRun.toLocaleString('en-US')} heartbeats of ${projectCount.toLocaleString('en-US')} projects (${bytesEach} bytes each), alternating; the floor: JSON.parse of the text and one HMAC-SHA256 over it, the same messages`,
      `a command's uplinks: ${perRun.toLocaleString('en-US')} a run, a command_ack and an echo's exec_result for each command (${Math.round(cmdBytes)} bytes on average), as the bench agents write them; the same floor`,
      `free-form check: median of ${RUNS} × ${checks.toLocaleString('en-US')} heartbeat payloads; baseline: the reporting walk (locateUnsafeJson), which builds a path for every value; ratio = baseline / check (above 1: the check is faster)`,
      `PUBLISH read: median of ${RUNS} reads (after the other rows) of the ${perRun.toLocaleString('en-US')} heartbeats as QoS 1 packets in ${readChunks.length} reads of 64 KiB (packets cut where a read ends), by the hub's parser (PUBLISH read in place, shared/mqtt-packet-lean.ts); baseline: mqtt-packet's own parse of the same reads; ratio = baseline / hub (above 1: the hub's is faster)`,
    ],
  };
}
