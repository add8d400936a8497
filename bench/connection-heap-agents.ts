/**
 * The agents of the `connection-heap` suite (bench/connection-heap-child.ts): N connections to
 * 127.0.0.1:<port> made by the bench's simulated agents (bench/agents.ts: client id
 * `agent-<project>`, `clean: false`, the two downlink subscriptions at QoS 1), 50 at a time. Tells
 * its parent how many are up, then holds them until it is killed. argv: port, N, the projects'
 * secret.
 */
import { deriveMqttPassword } from '../modules/shared/credentials.js';
import { connectAgents } from './agents.js';

async function main(): Promise<void> {
  const [port, n] = process.argv.slice(2, 4).map(Number);
  const secret = process.argv[4] ?? '';
  const projects = Array.from({ length: n }, (_, i) => {
    const project_id = `bench-${i}`;
    return { project_id, secret, password: deriveMqttPassword(project_id, secret) };
  });
  const held = await connectAgents(`mqtt://127.0.0.1:${port}`, projects, true, 50, true);
  process.send?.({ connected: held.length });
  setInterval(() => {}, 60_000);
}

void main();
