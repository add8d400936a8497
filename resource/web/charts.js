// Latency and throughput from the hub's own /metrics, sampled every few seconds while the page
// is visible: throughput is the rise of hub_commands_final_total (all statuses) per second, and
// latency the mean of hub_command_stage_seconds{stage="total"} over the commands that finished
// between two samples (Δsum / Δcount). Drawn as small inline SVG lines; nothing is stored.
import { $, getText } from './lib.js';

export const SAMPLE_MS = 3_000;
const KEEP = 60; // samples shown: three minutes
const W = 300;
const H = 60;
const SVG = 'http://www.w3.org/2000/svg';

let last = null; // the previous sample's totals
const throughput = []; // {at, value} commands/s
const latency = []; // {at, value} ms, or null when nothing finished

/** `name{labels} value` lines of the Prometheus text format, comments skipped. */
export function parseMetrics(text) {
  const out = [];
  for (const line of text.split('\n')) {
    if (!line || line.startsWith('#')) continue;
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)/.exec(line);
    if (!m) continue;
    const labels = {};
    for (const l of (m[2] ?? '').matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g)) labels[l[1]] = l[2];
    out.push({ name: m[1], labels, value: Number(m[3]) });
  }
  return out;
}

function totals(samples) {
  const sum = (pred) => samples.filter(pred).reduce((n, s) => n + (Number.isFinite(s.value) ? s.value : 0), 0);
  return {
    at: Date.now(),
    finals: sum((s) => s.name === 'hub_commands_final_total'),
    latencySum: sum((s) => s.name === 'hub_command_stage_seconds_sum' && s.labels.stage === 'total'),
    latencyCount: sum((s) => s.name === 'hub_command_stage_seconds_count' && s.labels.stage === 'total'),
  };
}

export async function sample() {
  const r = await getText('/metrics');
  if (!r.ok) return;
  const now = totals(parseMetrics(r.text));
  // a counter that went down: the hub restarted; start again from here
  if (last && now.finals >= last.finals && now.latencyCount >= last.latencyCount) {
    const seconds = Math.max((now.at - last.at) / 1000, 0.001);
    push(throughput, { at: now.at, value: (now.finals - last.finals) / seconds });
    const n = now.latencyCount - last.latencyCount;
    push(latency, { at: now.at, value: n > 0 ? (1000 * (now.latencySum - last.latencySum)) / n : null });
    draw();
  }
  last = now;
}

function push(series, point) {
  series.push(point);
  if (series.length > KEEP) series.shift();
}

function line(svgId, series, format) {
  const svg = $(svgId);
  const values = series.map((p) => p.value).filter((v) => v !== null);
  const max = Math.max(...values, 0);
  const scale = max > 0 ? (H - 4) / max : 0;
  const step = W / (KEEP - 1);
  const offset = KEEP - series.length;
  // a gap (no command finished) breaks the latency line instead of drawing a zero
  const runs = [[]];
  series.forEach((p, i) => {
    if (p.value === null) runs.push([]);
    else runs.at(-1).push(`${((offset + i) * step).toFixed(1)},${(H - 2 - p.value * scale).toFixed(1)}`);
  });
  svg.replaceChildren(
    ...runs
      .filter((r) => r.length)
      .map((r) => {
        const poly = document.createElementNS(SVG, 'polyline');
        poly.setAttribute('points', r.length === 1 ? `${r[0]} ${r[0]}` : r.join(' '));
        return poly;
      }),
  );
  svg.dataset.samples = String(series.length);
  svg.dataset.max = String(max);
  const latest = [...series].reverse().find((p) => p.value !== null);
  $(`${svgId}-value`).textContent = latest ? format(latest.value) : '—';
  $(`${svgId}-max`).textContent = `max ${format(max)}`;
}

function draw() {
  line('chart-throughput', throughput, (v) => `${v.toFixed(2)} /s`);
  line('chart-latency', latency, (v) => (v < 1000 ? `${Math.round(v)} ms` : `${(v / 1000).toFixed(1)} s`));
}
