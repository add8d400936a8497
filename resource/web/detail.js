// One command's detail (GET /command/:id): its fields, timings, payload, result and the log lines
// its agent streams (`command.log` events), kept live while it is open; cancel (pending or
// scheduled) and replay (a dead command) with the hub's refusal shown as it gave it.
import { $, api, badge, el, FINAL, ms, refusal, time } from './lib.js';

// Log lines arrive only live (the detail has none): kept per command so a detail opened late
// still shows what came before. Bounded, oldest command forgotten first.
const LOG_COMMANDS = 200;
const LOG_LINES = 1000;
const logs = new Map(); // command_id → Map(seq → content)

let openId = null;
let current = null; // the CommandDetail shown
let dead = false;

export function onLog(ev) {
  let lines = logs.get(ev.command_id);
  if (!lines) {
    lines = new Map();
    logs.set(ev.command_id, lines);
    if (logs.size > LOG_COMMANDS) logs.delete(logs.keys().next().value);
  }
  if (lines.size < LOG_LINES) lines.set(ev.seq, ev.content);
  if (ev.command_id === openId) renderLog();
}

/** A state or result event: the open detail follows it; a final state re-reads the timings. */
export function onCommand(view, result) {
  if (!current || view.command_id !== openId) return;
  const wasFinal = FINAL.has(current.status);
  current = { ...current, ...view, result: result ?? current.result };
  render();
  if (FINAL.has(view.status) && !wasFinal) load(openId);
}

export async function openDetail(id) {
  openId = id;
  current = null;
  $('detail-refusal').hidden = true;
  $('detail-panel').hidden = false;
  // the last command's status must not stand for this one while it loads
  delete $('detail-panel').dataset.status;
  $('detail-id').textContent = id;
  await load(id);
  $('detail-panel').scrollIntoView({ block: 'nearest' });
}

/** Retries of a detail read the hub could not answer (5xx, or no answer at all), with backoff. */
const LOAD_RETRIES = 5;

async function load(id) {
  let r;
  for (let attempt = 0; ; attempt++) {
    // a busy hub answers 503 with Retry-After: the panel must not stay empty for a moment's load
    r = await api('GET', `/command/${encodeURIComponent(id)}`).catch((err) => ({
      status: 0,
      ok: false,
      json: { error: { code: 'NETWORK', message: String(err?.message ?? err) } },
    }));
    if (id !== openId) return;
    if (r.ok || (r.status >= 400 && r.status < 500) || attempt >= LOAD_RETRIES) break;
    await new Promise((resolve) => setTimeout(resolve, 500 * 2 ** attempt));
    if (id !== openId) return;
  }
  if (!r.ok) {
    showRefusal(r);
    return;
  }
  current = r.json;
  dead = FINAL.has(current.status) && current.status !== 'completed' ? await isDead(id) : false;
  render();
}

/** Only the dead list says a command's outbox row went dead (replayable). */
async function isDead(id) {
  for (let offset = 0; ; offset += 500) {
    const r = await api('GET', `/commands/dead?limit=500&offset=${offset}`);
    if (!r.ok) return false;
    if (r.json.items.some((c) => c.command_id === id)) return true;
    if (offset + 500 >= r.json.total) return false;
  }
}

function render() {
  const c = current;
  if (!c) return;
  $('detail-panel').dataset.status = c.status;
  $('detail-status').replaceChildren(
    badge(c.status, c.status === 'completed' ? 'online' : FINAL.has(c.status) ? 'failed' : 'pending'),
  );
  const fields = [
    ['project', c.project_id],
    ['type', c.command_type],
    ['job', c.job_id ?? '—'],
    ['attempts', String(c.attempts)],
    ['created', time(c.created_at)],
    ['scheduled for', c.schedule_at ? time(c.schedule_at) : '—'],
    ['sent', time(c.sent_at)],
    ['acked', time(c.acked_at)],
    ['completed', time(c.completed_at)],
    ['error', c.error ?? '—'],
  ];
  $('detail-fields').replaceChildren(...fields.flatMap(([k, v]) => [el('dt', {}, k), el('dd', {}, v)]));
  const t = c.timings ?? {};
  $('detail-timings').replaceChildren(
    ...['queue', 'delivery', 'execution', 'total'].map((k) =>
      el('li', { 'data-timing': k }, el('span', { class: 'muted' }, `${k} `), ms(t[`${k}_ms`])),
    ),
  );
  $('detail-payload').textContent = JSON.stringify(c.payload ?? null, null, 2);
  $('detail-result').textContent = c.result ? JSON.stringify(c.result, null, 2) : '—';
  $('detail-cancel').hidden = !(c.status === 'pending' || c.status === 'scheduled');
  $('detail-replay').hidden = !dead;
  renderLog();
}

function renderLog() {
  const lines = [...(logs.get(openId)?.entries() ?? [])].sort((a, b) => a[0] - b[0]).map(([, text]) => text);
  $('detail-log').textContent = lines.join('');
  $('detail-log-empty').hidden = lines.length > 0;
}

function showRefusal(r) {
  $('detail-refusal').textContent = refusal(r);
  $('detail-refusal').hidden = false;
}

async function act(path) {
  const id = openId;
  $('detail-refusal').hidden = true;
  const r = await api('POST', path);
  if (id !== openId) return;
  if (!r.ok) {
    showRefusal(r);
    return;
  }
  dead = false;
  await load(id);
}

$('detail-cancel').addEventListener('click', () => act(`/command/${encodeURIComponent(openId)}/cancel`));
$('detail-replay').addEventListener('click', () => act(`/commands/dead/${encodeURIComponent(openId)}/replay`));
$('detail-close').addEventListener('click', () => {
  openId = null;
  current = null;
  $('detail-panel').hidden = true;
});
