/**
 * `npm run fuzz:rest`: the REST fuzzer at full size (10^5 cases unless `--cases N`), against a
 * real hub on the test PostgreSQL. Prints one figure line (and each violation, at most 20);
 * exits 1 on any violation. `--seed S` replays a run.
 */
import { figureLine, fuzzRest, type Violation } from './rest-fuzz.js';

const showViolation = (v: Violation) =>
  `VIOLATION [${v.property}] ${v.detail}\n  request: ${v.request}${v.status ? `\n  answer: ${v.status} ${v.body}` : ''}`;

function arg(name: string, def: number): number {
  const i = process.argv.indexOf(`--${name}`);
  if (i < 0) return def;
  const v = Number(process.argv[i + 1]);
  if (!Number.isInteger(v) || v < 0) throw new Error(`--${name} expects a whole number`);
  return v;
}

const cases = arg('cases', 100_000);
const seed = arg('seed', Date.now() % 2 ** 31);
const concurrency = arg('concurrency', 8);
let lastReport = 0;
let shownViolations = 0;
const f = await fuzzRest({
  cases,
  seed,
  concurrency,
  progress: (p) => {
    // violations as they come, so a long run can be looked at before it ends
    for (const v of p.violations.slice(shownViolations, 20)) process.stderr.write(`${showViolation(v)}\n`);
    shownViolations = Math.max(shownViolations, Math.min(p.violations.length, 20));
    if (process.stderr.isTTY || p.cases - lastReport >= 5_000) {
      lastReport = p.cases;
      process.stderr.write(`… ${figureLine(p)}\n`);
    }
  },
});
for (const v of f.violations.slice(0, 20)) console.log(showViolation(v));
if (process.argv.includes('--verbose')) {
  console.error(`statuses: ${JSON.stringify(f.statuses)}`);
  for (const line of f.errorSamples) console.error(`error log: ${line}`);
}
console.log(figureLine(f));
process.exit(f.violations.length > 0 ? 1 : 0);
