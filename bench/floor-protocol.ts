/**
 * The floor's two kinds (BENCH_FLOOR): what the hand-coded baseline of the sync, sync-concurrent
 * and async suites puts on the wire.
 *
 *  - `unsigned` (the default, issue 13's floor: "no framework and no signing"): the command as
 *    plain JSON, one reply `{ id, result }` from an echo agent.
 *  - `signed`: the same server and statements, speaking the protocol's message shapes and
 *    signatures as the hub and its agents must (docs/wire-protocol.md#signing): the server signs
 *    each command with the project's secret (`signedCommandJson`, as the hub's send does); its
 *    agent parses it, checks signature, clock and replay, and answers with a signed `command_ack`
 *    and a signed `exec_result`, two QoS 1 publishes, as bench/agents.ts SimAgent does for the hub;
 *    the server parses and checks both (`parseUplink`, `verifyInbound`) and writes the result.
 *    What it measures: how much of the hub's distance from the unsigned floor the protocol itself
 *    costs any implementation on this machine (the agents' signing shares its cores), and so
 *    what is left that is the hub's own.
 *
 * Each project's secret is derived from its id with a fixed bench key, on both sides.
 */
import { createHmac } from 'node:crypto';

export type FloorKind = 'unsigned' | 'signed';

/**
 * The floors a run measures (BENCH_FLOOR): `unsigned` (the default), `signed`, or `both`: the
 * async suite runs the two one after the other, the sync suites alternate them with the hub within
 * each run, and each prints the hub against both and the signed floor against the unsigned, all in
 * the same run. The goals stay against the first.
 */
export function floorKinds(env: NodeJS.ProcessEnv = process.env): FloorKind[] {
  const v = env.BENCH_FLOOR ?? 'unsigned';
  if (v === 'both') return ['unsigned', 'signed'];
  if (v !== 'unsigned' && v !== 'signed') throw new Error(`BENCH_FLOOR must be unsigned, signed or both, not ${v}`);
  return [v];
}

/** The floor a process serves: the first of `floorKinds` (a forked floor is given its kind alone). */
export function floorKind(env: NodeJS.ProcessEnv = process.env): FloorKind {
  return floorKinds(env)[0];
}

/** How the suites' notes name the floor's agents. */
export function floorAgentLabel(kind: FloorKind = floorKind()): string {
  return kind === 'signed'
    ? 'signed agents (the protocol: signature, clock and replay checked, command_ack + exec_result signed)'
    : 'unsigned echo agents';
}

/** How the suites name a floor: the floor is "floor", the other "signed floor". */
export const floorName = (kind: FloorKind) => (kind === 'signed' ? 'signed floor' : 'floor');

const BENCH_KEY = 'gmq-bench-floor';

/** A project's secret on the signed floor: the same on the server and its agent, never stored. */
export function floorSecret(projectId: string): string {
  return createHmac('sha256', BENCH_KEY).update(projectId).digest('hex');
}
