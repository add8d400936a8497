// The exchange hub dashboard: plain JavaScript modules, no build step, nothing loaded from
// elsewhere. State comes from the REST API once, then from the live WebSocket; on a reconnect the
// page resumes the feed where it left off, or re-reads everything when the hub says `resync`.
// Data is only ever put in the page with textContent, never as HTML. The parts: lib.js (token,
// REST, page helpers), detail.js (a command), jobs.js, project.js (actions, history), charts.js.

import { SAMPLE_MS, sample } from './charts.js';
import { onCommand as detailFollows, onLog, openDetail } from './detail.js';
import { loadJobs, onJobProgress } from './jobs.js';
import {
  $,
  API,
  api,
  askToken,
  badge,
  el,
  FINAL,
  ms,
  onClickOf,
  pager,
  tickAges,
  time,
  timeCell,
  token,
  whenTokenSet,
} from './lib.js';
import { onStatus as historyFollows, openProject, showProject, whenProjectChanged } from './project.js';

// Heartbeats change no presence state, so no event carries them: the project list is re-read at
// this pace (while the tab is visible), and the "… ago" beside each time ticks every second.
const PROJECTS_REFRESH_MS = 5_000;
// Jobs driven by another hub instance send no events here: their rows are re-read at this pace.
const JOBS_REFRESH_MS = 5_000;
// Results of finished commands are not in the list answer: read one by one after a (re)load.
const DETAIL_CONCURRENCY = 6;

const projects = new Map(); // project_id → ProjectView
const commands = new Map(); // command_id → CommandView (+ result): the page of the list shown
// The commands list's filters and page asked for (GET /commands query), and the page shown
// (the answer's total, limit and offset: a request still on its way must not relabel it).
const listing = { project_id: '', status: '', command_type: '', limit: 50, offset: 0 };
let shown = { total: 0, limit: 50, offset: 0 };
let feed = { epoch: null, last: 0 };
let socket = null;
let reconnectDelay = 500;

whenTokenSet(() => connect(true));
$('token-button').addEventListener('click', () => askToken().then(() => loadAll()));

// ─── projects ──────────────────────────────────────────────────────────────────────────────
function renderProjects() {
  const body = $('projects').tBodies[0];
  body.replaceChildren();
  const list = [...projects.values()].sort((a, b) => a.project_id.localeCompare(b.project_id));
  for (const p of list) {
    body.append(
      el(
        'tr',
        { 'data-project': p.project_id, class: p.enabled === false ? 'disabled' : '' },
        el(
          'td',
          {},
          el('strong', {}, p.project_id),
          p.name && p.name !== p.project_id ? el('div', { class: 'muted' }, p.name) : '',
        ),
        el('td', { class: 'state' }, badge(p.state, p.state)),
        timeCell(p.state_since, 'since'),
        timeCell(p.last_heartbeat_at, 'heartbeat'),
        el('td', { class: 'muted' }, p.agent_version ?? ''),
      ),
    );
  }
  $('projects-empty').hidden = list.length > 0;
  const online = list.filter((p) => p.state === 'online').length;
  $('online-count').textContent = `${online} online / ${list.length}`;

  const select = $('send-project');
  const chosen = select.value;
  select.replaceChildren();
  for (const p of list) {
    select.append(el('option', { value: p.project_id }, `${p.project_id} (${p.state})`));
  }
  const firstOnline = list.find((p) => p.state === 'online');
  if (chosen && projects.has(chosen)) select.value = chosen;
  else if (firstOnline) select.value = firstOnline.project_id;

  // the commands filter offers the same projects
  const filter = $('filter-project');
  filter.replaceChildren(
    el('option', { value: '' }, 'all'),
    ...list.map((p) => el('option', { value: p.project_id }, p.project_id)),
  );
  filter.value = listing.project_id;
  for (const p of list) showProject(p);
}

onClickOf($('projects'), 'tr[data-project]', 'data-project', (id) => {
  const p = projects.get(id);
  if (p) openProject(p);
});

whenProjectChanged(async (id) => {
  const r = await api('GET', `/project/${encodeURIComponent(id)}/status`);
  if (r.ok) projects.set(id, { ...projects.get(id), ...r.json });
  renderProjects();
});

async function loadProjects() {
  const r = await api('GET', '/projects?limit=1000&include_disabled=true');
  if (!r.ok) return;
  projects.clear();
  for (const p of r.json.items) projects.set(p.project_id, p);
  renderProjects();
}

async function onStatus(ev) {
  const known = projects.get(ev.project_id);
  if (known) {
    projects.set(ev.project_id, { ...known, state: ev.state, state_since: new Date(ev.at).toISOString() });
    historyFollows(ev);
  } else {
    const r = await api('GET', `/project/${encodeURIComponent(ev.project_id)}/status`);
    if (r.ok) projects.set(ev.project_id, r.json);
  }
  renderProjects();
}

// ─── commands ──────────────────────────────────────────────────────────────────────────────
function renderCommands() {
  const body = $('commands').tBodies[0];
  body.replaceChildren();
  const list = [...commands.values()].sort((a, b) => b.created_at.localeCompare(a.created_at));
  for (const c of list) {
    const inflight = !FINAL.has(c.status);
    const queued = isQueued(c);
    const kind = c.status === 'completed' ? 'online' : FINAL.has(c.status) ? 'failed' : queued ? 'queued' : 'pending';
    const total = c.completed_at ? Date.parse(c.completed_at) - Date.parse(c.created_at) : null;
    const status =
      c.status === 'scheduled'
        ? el('span', { title: `starts at ${c.schedule_at}` }, badge('scheduled', 'queued'))
        : queued
          ? el('span', { title: `waiting for ${c.project_id} to come online` }, badge('queued', kind))
          : badge(c.status, kind);
    body.append(
      el(
        'tr',
        { 'data-command': c.command_id, class: [inflight ? 'inflight' : '', queued ? 'queued' : ''].join(' ').trim() },
        el('td', { title: `${c.created_at} · ${c.command_id}` }, time(c.created_at)),
        el('td', {}, c.project_id),
        el('td', {}, c.command_type),
        el('td', { class: 'status' }, status, c.late_result ? badge('late result', 'warn') : ''),
        el('td', {}, ms(total)),
        el('td', { class: 'output mono' }, c.result ? summary(c.result) : (c.error ?? (inflight ? '' : '—'))),
      ),
    );
  }
  $('commands-empty').hidden = list.length > 0;
  pager('commands', shown);
  $('inflight-count').textContent = `${list.filter((c) => !FINAL.has(c.status)).length} in flight`;
}

/**
 * Queued: the caller asked to wait for an offline project (`offline_policy: queue`) and nothing
 * was published yet; a plain pending command is about to go out. Same status on the wire, two
 * different things for the operator.
 */
function isQueued(c) {
  return c.status === 'pending' && c.offline_policy === 'queue' && !c.sent_at && !c.attempts;
}

function summary(result) {
  const text = result.output || result.error || '';
  return `${result.status} (${result.exit_code}) ${text.length > 80 ? `${text.slice(0, 77)}...` : text}`;
}

function keepCommand(view, result) {
  const prev = commands.get(view.command_id);
  commands.set(view.command_id, { ...prev, ...view, result: result ?? prev?.result ?? null });
}

/**
 * A command from a live event: a row shown follows it; a new one joins only the first page, and
 * only when it matches the filters (the newest first: the oldest row of the page makes room).
 */
function liveCommand(view, result) {
  detailFollows(view, result);
  if (commands.has(view.command_id)) keepCommand(view, result);
  else if (shown.offset === 0 && matches(view)) {
    keepCommand(view, result);
    shown.total++;
    if (commands.size > shown.limit) {
      const oldest = [...commands.values()].sort((a, b) => a.created_at.localeCompare(b.created_at))[0];
      commands.delete(oldest.command_id);
    }
  } else return;
  renderCommands();
}

function matches(c) {
  return (
    (!listing.project_id || c.project_id === listing.project_id) &&
    (!listing.status || c.status === listing.status) &&
    (!listing.command_type || c.command_type === listing.command_type)
  );
}

let commandsRequest = 0;

async function loadCommands() {
  const q = new URLSearchParams({ limit: String(listing.limit), offset: String(listing.offset) });
  for (const k of ['project_id', 'status', 'command_type']) if (listing[k]) q.set(k, listing[k]);
  // filters change faster than the hub answers: only the newest request's answer is shown
  const mine = ++commandsRequest;
  const r = await api('GET', `/commands?${q}`);
  if (mine !== commandsRequest) return;
  $('commands-refusal').hidden = r.ok;
  if (!r.ok) {
    $('commands-refusal').textContent = `${r.json?.error?.code}: ${r.json?.error?.message}`;
    return;
  }
  commands.clear();
  for (const c of r.json.items) keepCommand(c);
  shown = { total: r.json.total, limit: r.json.limit, offset: r.json.offset };
  renderCommands();
  // the list has no results: read the finished ones' details, a few at a time
  const finished = r.json.items.filter((c) => FINAL.has(c.status)).map((c) => c.command_id);
  const next = async () => {
    for (let id = finished.shift(); id; id = finished.shift()) {
      if (mine !== commandsRequest) return; // another page is shown now
      const d = await api('GET', `/command/${encodeURIComponent(id)}`);
      if (d.ok && d.json?.result && commands.has(id)) {
        keepCommand(d.json, d.json.result);
        renderCommands();
      }
    }
  };
  await Promise.all(Array.from({ length: DETAIL_CONCURRENCY }, next));
}

onClickOf($('commands'), 'tr[data-command]', 'data-command', openDetail);

// a filter changed: back to the first page
$('commands-filter').addEventListener('change', () => {
  listing.project_id = $('filter-project').value;
  listing.status = $('filter-status').value;
  listing.command_type = $('filter-type').value.trim();
  listing.limit = Number($('filter-limit').value);
  listing.offset = 0;
  loadCommands();
});
$('commands-filter').addEventListener('submit', (e) => e.preventDefault());
$('commands-prev').addEventListener('click', () => {
  listing.offset = Math.max(0, shown.offset - listing.limit);
  loadCommands();
});
$('commands-next').addEventListener('click', () => {
  listing.offset = shown.offset + shown.limit;
  loadCommands();
});

// ─── send ──────────────────────────────────────────────────────────────────────────────────
function show(r) {
  $('send-status').replaceChildren(
    badge(String(r.status), r.ok ? 'online' : r.status === 504 ? 'warn' : 'failed'),
    ' ',
    r.ok ? (r.json?.status ?? '') : (r.json?.error?.code ?? ''),
  );
  $('send-result').textContent = JSON.stringify(r.json, null, 2);
}

$('send-form').addEventListener('submit', async (e) => {
  e.preventDefault();
  let payload;
  try {
    payload = JSON.parse($('send-payload').value || '{}');
  } catch (err) {
    show({ status: 'payload', ok: false, json: { error: { code: 'JSON', message: String(err.message) } } });
    return;
  }
  const body = { project_id: $('send-project').value, command_type: $('send-type').value.trim(), payload };
  const timeout = Number($('send-timeout').value);
  if (timeout > 0) body.timeout_ms = timeout;
  const sync = $('send-sync').checked;
  $('send-button').disabled = true;
  $('send-status').textContent = sync ? 'waiting for the result…' : 'sending…';
  $('send-result').textContent = '';
  try {
    const r = await api('POST', sync ? '/command/sync' : '/command/send', body);
    show(r);
    const view = r.json?.command_id && r.json.status ? r.json : r.json?.command;
    if (view) liveCommand(view, view.result);
  } finally {
    $('send-button').disabled = false;
  }
});

// ─── provisioning ──────────────────────────────────────────────────────────────────────────
$('provision-form').addEventListener('submit', async (e) => {
  e.preventDefault();
  const body = {};
  if ($('provision-id').value.trim()) body.project_id = $('provision-id').value.trim();
  if ($('provision-name').value.trim()) body.name = $('provision-name').value.trim();
  const r = await api('POST', '/projects', body);
  $('provision-error').hidden = r.ok;
  if (!r.ok) {
    $('provision-error').textContent = `${r.json?.error?.code}: ${r.json?.error?.message}`;
    return;
  }
  $('secret-project').textContent = r.json.project_id;
  $('secret-value').textContent = r.json.secret;
  $('secret-user').textContent = r.json.mqtt_username;
  $('secret-pass').textContent = r.json.mqtt_password;
  $('provision-result').hidden = false;
  $('provision-id').value = '';
  $('provision-name').value = '';
  const p = await api('GET', `/project/${encodeURIComponent(r.json.project_id)}/status`);
  if (p.ok) projects.set(p.json.project_id, p.json);
  renderProjects();
});

$('secret-dismiss').addEventListener('click', () => {
  // the secret leaves the page for good
  for (const id of ['secret-project', 'secret-value', 'secret-user', 'secret-pass']) $(id).textContent = '';
  $('provision-result').hidden = true;
});

// ─── modules ───────────────────────────────────────────────────────────────────────────────
// Jobs are a module of their own: a hub that does not run it has no /jobs to read.
let jobsRunning = false;

async function loadModules() {
  const r = await api('GET', '/modules');
  if (!r.ok) return;
  jobsRunning = r.json.items.some((m) => m.provider === 'jobs' && m.state === 'running');
  $('jobs-off').hidden = jobsRunning;
  if (!jobsRunning) $('jobs-empty').hidden = true;
  $('modules').replaceChildren(
    ...r.json.items.map((m) =>
      el(
        'li',
        { 'data-module': m.name },
        badge(m.state, m.state === 'running' ? 'online' : m.state === 'disabled' ? 'offline' : 'failed'),
        ' ',
        el('strong', {}, m.name),
        el('span', { class: 'muted' }, ` ${m.type}${m.restarts ? ` · ${m.restarts} restarts` : ''}`),
      ),
    ),
  );
}

// ─── live feed ─────────────────────────────────────────────────────────────────────────────
function setLive(state) {
  const b = $('live');
  b.textContent = state;
  b.className = `badge ${state === 'live' ? 'badge-online' : 'badge-off'}`;
}

function onEvent(ev) {
  feed.last = ev.id;
  switch (ev.type) {
    case 'project.status':
      onStatus(ev.data);
      return;
    case 'command.state':
      liveCommand(ev.data);
      return;
    case 'command.result':
      liveCommand(ev.data.command, ev.data.result);
      return;
    case 'command.log':
      onLog(ev.data);
      return;
    case 'job.progress':
      onJobProgress(ev.data);
      return;
    default:
      return;
  }
}

function connect(fresh = false) {
  if (socket) {
    socket.onclose = null;
    socket.close();
  }
  const proto = location.protocol === 'https:' ? 'wss' : 'ws';
  const q = token() ? `?token=${encodeURIComponent(token())}` : '';
  const ws = new WebSocket(`${proto}://${location.host}${API}/ws${q}`);
  socket = ws;
  ws.onmessage = (m) => {
    let msg;
    try {
      msg = JSON.parse(m.data);
    } catch {
      return;
    }
    if (msg.op === 'hello') {
      const resume = !fresh && feed.epoch ? { epoch: feed.epoch, last_event_id: feed.last } : {};
      if (!resume.epoch) feed = { epoch: msg.epoch, last: msg.last_event_id };
      ws.send(JSON.stringify({ op: 'subscribe', all: true, ...resume }));
    } else if (msg.op === 'subscribed') {
      setLive('live');
      reconnectDelay = 500;
      // read the state after subscribing, so nothing that happens in between is missed
      if (fresh) loadAll();
    } else if (msg.op === 'resync') {
      // the hub restarted or we were away too long: read everything again
      feed = { epoch: msg.epoch, last: msg.last_event_id };
      loadAll();
    } else if (msg.op === 'event') onEvent(msg);
  };
  ws.onclose = () => {
    setLive('reconnecting');
    setTimeout(() => connect(), reconnectDelay);
    reconnectDelay = Math.min(reconnectDelay * 2, 10_000);
  };
}

async function loadAll() {
  await Promise.all([loadProjects(), loadCommands(), loadModules().then(refreshJobs)]);
}

function refreshJobs() {
  if (jobsRunning) return loadJobs();
}

// REST first asks for a token when one is needed; the socket then subscribes and re-reads.
loadAll().then(() => connect(true));
setInterval(loadModules, 15_000);
setInterval(() => {
  if (document.visibilityState === 'visible') loadProjects();
}, PROJECTS_REFRESH_MS);
setInterval(tickAges, 1_000);
setInterval(() => {
  if (document.visibilityState === 'visible') refreshJobs();
}, JOBS_REFRESH_MS);
sample();
setInterval(() => {
  if (document.visibilityState === 'visible') sample();
}, SAMPLE_MS);
