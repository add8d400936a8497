/**
 * The raw baselines' far end, in its own process as the hub is (hub-child.ts), so a baseline
 * and the hub it is compared with sit in the same place: the bench process drives, a child
 * answers. One mqtt.js client on a TCP_NODELAY socket:
 *   echo <url>            answers every QoS 1 publish on bench/echo/req/... on bench/echo/res/...
 *   sink <url> <filter>   counts QoS 1 messages on <filter> (one-way broker throughput)
 * IPC: { op: 'stats' } → { op: 'stats', count, first, last }; { op: 'stop' } → exits.
 */
import { connectMqtt } from './agents.js';

const [mode, url, filter] = process.argv.slice(2);
const client = await connectMqtt(url, { clientId: `bench-${mode}-${process.pid}` });
let count = 0;
let first = 0;
let last = 0;

if (mode === 'echo') {
  await client.subscribeAsync('bench/echo/req/#', { qos: 1 });
  client.on('message', (topic, payload) => {
    count++;
    client.publish(`bench/echo/res/${topic.slice('bench/echo/req/'.length)}`, payload, { qos: 1 });
  });
} else if (mode === 'sink') {
  await client.subscribeAsync(filter, { qos: 1 });
  client.on('message', () => {
    const now = performance.now() + performance.timeOrigin;
    if (count === 0) first = now;
    last = now;
    count++;
  });
} else {
  throw new Error(`unknown peer mode ${mode}`);
}

process.on('message', (m: { op: string }) => {
  if (m.op === 'stats') process.send?.({ op: 'stats', count, first, last });
  if (m.op === 'stop') client.end(true, {}, () => process.exit(0));
});
process.on('disconnect', () => process.exit(0));
process.send?.({ op: 'ready' });
