/**
 * `npm run fuzz:uplink [-- --uplinks N --batch B --seed S]`: the full uplink fuzz run (default
 * 10^6 uplinks) against a real hub in this process. Prints progress on stderr and one figure
 * line on stdout; exits 1 when a property was violated.
 */
import { figureLine, runUplinkFuzz } from './uplink-fuzz.js';

function arg(name: string, fallback: number): number {
  const i = process.argv.indexOf(`--${name}`);
  const v = i >= 0 ? Number(process.argv[i + 1]) : Number.NaN;
  return Number.isFinite(v) && v > 0 ? v : fallback;
}

const uplinks = arg('uplinks', 1_000_000);
const seed = arg('seed', Date.now() % 2 ** 31);
const fig = await runUplinkFuzz({
  uplinks,
  batch: arg('batch', 1_000),
  checkEvery: arg('check-every', 10),
  seed,
  progress: (line) => process.stderr.write(`${new Date().toISOString()} ${line}\n`),
});
process.stdout.write(`${figureLine(fig)} seed ${seed}\n`);
if (fig.violations.length > 0) {
  for (const v of fig.violations) process.stderr.write(`violation: ${v}\n`);
  process.exit(1);
}
process.exit(0);
