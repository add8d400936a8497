/**
 * The raw MQTT baselines the hub suites compare against, measured on the same broker in the
 * same run: a QoS 1 echo round trip (bench process → broker → echo peer → broker → bench
 * process, the same two broker hops and process layout as a sync command through the hub) and
 * the broker's one-way QoS 1 throughput into one subscriber (as the hub's bridge is one).
 */
import { type ChildProcess, fork } from 'node:child_process';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import { fileURLToPath } from 'node:url';
import type { MqttClient } from 'mqtt';
import { connectMqtt, endClient } from './agents.js';
import { sleep } from './env.js';

const here = path.dirname(fileURLToPath(import.meta.url));

export interface Peer {
  pid: number;
  stats(): Promise<{ count: number; first: number; last: number }>;
  stop(): Promise<void>;
}

export async function startPeer(mode: 'echo' | 'sink', url: string, filter = ''): Promise<Peer> {
  const child: ChildProcess = fork(path.join(here, 'peer-child.js'), [mode, url, filter], { stdio: 'inherit' });
  const waiting: Array<(s: { count: number; first: number; last: number }) => void> = [];
  await new Promise<void>((resolve, reject) => {
    child.once('exit', (code) => reject(new Error(`${mode} peer exited (${code})`)));
    child.on('message', (m: { op: string; count: number; first: number; last: number }) => {
      if (m.op === 'ready') resolve();
      if (m.op === 'stats') waiting.shift()?.(m);
    });
  });
  child.removeAllListeners('exit');
  return {
    pid: child.pid!,
    stats: () =>
      new Promise((r) => {
        waiting.push(r);
        child.send({ op: 'stats' });
      }),
    async stop() {
      const gone = new Promise<void>((r) => child.once('exit', () => r()));
      child.send({ op: 'stop' });
      await Promise.race([gone, sleep(3000)]);
      if (child.exitCode === null) child.kill('SIGKILL');
    },
  };
}

/** A payload the size of a small signed command (~500 bytes of JSON). */
export const ECHO_PAYLOAD = JSON.stringify({
  message_id: '00000000-0000-4000-8000-000000000000',
  type: 'command',
  project_id: 'bench-000000',
  timestamp: 0,
  version: '1.0',
  command_type: 'echo',
  payload: { text: 'x'.repeat(200), n: 1 },
  signature: '0'.repeat(64),
});

export interface EchoResult {
  /** round-trip times, ms */
  rtts: number[];
  /** completed round trips per second */
  rate: number;
}

/**
 * `inFlight` QoS 1 echo requests outstanding at all times for `durationMs` (after `warmupMs`),
 * through an echo peer in another process. One requester client, as a hub is one client.
 */
export async function echoRun(
  url: string,
  opts: { inFlight: number; durationMs: number; warmupMs?: number; peer?: Peer },
): Promise<EchoResult> {
  const peer = opts.peer ?? (await startPeer('echo', url));
  const client: MqttClient = await connectMqtt(url, { clientId: `bench-echo-req-${process.pid}` });
  const me = `r${process.pid}`;
  await client.subscribeAsync(`bench/echo/res/${me}/+`, { qos: 1 });
  const sentAt = new Map<string, number>();
  const rtts: number[] = [];
  let measuring = false;
  let stop = false;
  let seq = 0;
  let done = 0;
  let idle: (() => void) | undefined;
  const fire = () => {
    const id = String(seq++);
    sentAt.set(id, performance.now());
    client.publish(`bench/echo/req/${me}/${id}`, ECHO_PAYLOAD, { qos: 1 });
  };
  client.on('message', (topic) => {
    const id = topic.slice(topic.lastIndexOf('/') + 1);
    const t0 = sentAt.get(id);
    if (t0 === undefined) return;
    sentAt.delete(id);
    if (measuring) {
      rtts.push(performance.now() - t0);
      done++;
    }
    if (!stop) fire();
    else if (sentAt.size === 0) idle?.();
  });
  for (let i = 0; i < opts.inFlight; i++) fire();
  await sleep(opts.warmupMs ?? 500);
  measuring = true;
  const t0 = performance.now();
  await sleep(opts.durationMs);
  const elapsed = performance.now() - t0;
  measuring = false;
  stop = true;
  const rate = (done / elapsed) * 1000;
  if (sentAt.size > 0) await Promise.race([new Promise<void>((r) => (idle = r)), sleep(5000)]);
  await endClient(client);
  if (!opts.peer) await peer.stop();
  return { rtts, rate };
}
