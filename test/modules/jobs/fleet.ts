/**
 * Many simulated agents in one process (run as a child of the test: `node fleet.js <spec.json>`):
 * one MQTT client speaks the wire protocol for every project in the spec. It registers each
 * project (signed register → register_ack → register_complete, and again on `reregister`),
 * acknowledges each command it receives and answers it with an exec_result after `exec_ms`
 * (failure when the payload says `fail: true`). It drops a command whose message_id it has
 * executed (as a real agent does) but acknowledges it again, with its result when it has one
 * (the hub asks again for a result it lost, reask.ts), and it reports on stdout, one JSON
 * line each: `registered`, every execution, and `stats` (the most commands it ever ran at once).
 */
import fs from 'node:fs';
import os from 'node:os';
import mqtt from 'mqtt';
import {
  buildCommand,
  buildData,
  commandDownTopic,
  messageDownTopic,
  TOPIC_COMMAND_UP,
  TOPIC_MESSAGE_UP,
} from '../../../modules/shared/protocol.js';
import { verifySignature } from '../../../modules/shared/signing.js';

export interface FleetSpec {
  url: string;
  client_id: string;
  projects: Array<{ project_id: string; secret: string }>;
  exec_ms: number;
}

function out(line: Record<string, unknown>): void {
  process.stdout.write(`${JSON.stringify(line)}\n`);
}

async function main(): Promise<void> {
  const spec = JSON.parse(fs.readFileSync(process.argv[2], 'utf8')) as FleetSpec;
  const secrets = new Map(spec.projects.map((p) => [p.project_id, p.secret]));
  const executed = new Set<string>();
  const registered = new Set<string>();
  /** Results sent, by command id: a duplicate of a command already run is answered with its result again. */
  const results = new Map<string, { project_id: string; payload: unknown }>();
  let running = 0;
  let maxRunning = 0;
  let duplicates = 0;
  const client = await mqtt.connectAsync(spec.url, { clientId: spec.client_id, clean: true, reconnectPeriod: 200 });
  const publish = (topic: string, msg: unknown) => client.publishAsync(topic, JSON.stringify(msg), { qos: 1 });
  const data = (projectId: string, type: string, payload: unknown) =>
    publish(TOPIC_MESSAGE_UP, buildData(projectId, type, payload, { secret: secrets.get(projectId)! }));
  const register = (projectId: string) =>
    publish(
      TOPIC_COMMAND_UP,
      buildCommand(
        projectId,
        'register',
        {
          node_name: 'fleet',
          instance_id: `fleet-${os.hostname()}-${process.pid}`,
          version: '0.0.0-fleet',
          pid: process.pid,
          start_time: Date.now(),
          capabilities: ['echo'],
          metadata: {},
          node_version: process.version,
        },
        secrets.get(projectId)!,
      ),
    );

  client.on('message', (topic, raw) => {
    let msg: {
      project_id?: string;
      type?: string;
      data_type?: string;
      message_id?: string;
      payload?: { accepted?: boolean; fail?: boolean };
    };
    try {
      msg = JSON.parse(raw.toString('utf8'));
    } catch {
      return;
    }
    const pid = msg.project_id ?? '';
    const secret = secrets.get(pid);
    if (!secret || !verifySignature(msg, secret)) return;
    if (topic === messageDownTopic(pid)) {
      if (msg.data_type === 'register_ack' && msg.payload?.accepted === true) {
        void data(pid, 'register_complete', { instance_id: `fleet-${os.hostname()}-${process.pid}` }).then(() => {
          if (registered.has(pid)) return;
          registered.add(pid);
          if (registered.size === spec.projects.length) out({ ev: 'registered', n: registered.size });
        });
      } else if (msg.data_type === 'reregister') void register(pid);
      return;
    }
    if (topic !== commandDownTopic(pid) || msg.type !== 'command' || !msg.message_id) return;
    const id = msg.message_id;
    void data(pid, 'command_ack', { command_id: id });
    if (executed.has(id)) {
      // a re-publish before the ack, or the hub asking again for a result it lost (reask.ts)
      duplicates++;
      const r = results.get(id);
      if (r) void data(r.project_id, 'exec_result', r.payload);
      return;
    }
    executed.add(id);
    running++;
    maxRunning = Math.max(maxRunning, running);
    const start = Date.now();
    const fail = msg.payload?.fail === true;
    setTimeout(() => {
      running--;
      const end = Date.now();
      out({ ev: 'exec', command_id: id, project_id: pid });
      const payload = {
        command_id: id,
        status: fail ? 'failure' : 'success',
        exit_code: fail ? 1 : 0,
        output: fail ? '' : 'ok',
        error: fail ? 'asked to fail' : '',
        start_time: start,
        end_time: end,
        duration: end - start,
      };
      results.set(id, { project_id: pid, payload });
      void data(pid, 'exec_result', payload);
    }, spec.exec_ms);
  });
  await client.subscribeAsync({ 'wdd/RDMC/command/down/+': { qos: 1 }, 'wdd/RDMC/message/down/+': { qos: 1 } });
  // registrations in groups, so the hub is not handed a thousand handshakes in one instant
  for (let i = 0; i < spec.projects.length; i += 100) {
    await Promise.all(spec.projects.slice(i, i + 100).map((p) => register(p.project_id)));
  }
  setInterval(() => out({ ev: 'stats', max_running: maxRunning, running, executed: executed.size, duplicates }), 200);
  process.on('SIGTERM', () => {
    out({ ev: 'stats', max_running: maxRunning, running, executed: executed.size, duplicates });
    void client.endAsync().finally(() => process.exit(0));
  });
}

main().catch((err) => {
  process.stderr.write(`${(err as Error).stack}\n`);
  process.exit(1);
});
