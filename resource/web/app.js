// The exchange hub dashboard: plain JavaScript, no build step, nothing loaded from elsewhere.
// State comes from the REST API once, then from the live WebSocket; on a reconnect the page
// resumes the feed where it left off, or re-reads everything when the hub says `resync`.
// Data is only ever put in the page with textContent, never as HTML.

const API = '/api/exchange-hub';
const TOKEN_KEY = 'gmq-hub.token';
const FINAL = new Set(['completed', 'failed', 'timeout', 'cancelled']);
const MAX_COMMANDS = 100;

const $ = (id) => document.getElementById(id);
const projects = new Map(); // project_id → ProjectView
const commands = new Map(); // command_id → CommandView (+ result)
let feed = { epoch: null, last: 0 };
let socket = null;
let reconnectDelay = 500;

// ─── token ─────────────────────────────────────────────────────────────────────────────────
const token = () => sessionStorage.getItem(TOKEN_KEY) ?? '';
let tokenWaiters = [];

function askToken() {
  return new Promise((resolve) => {
    tokenWaiters.push(resolve);
    const dialog = $('token-dialog');
    if (!dialog.open) dialog.showModal();
    $('token-input').focus();
  });
}

$('token-form').addEventListener('submit', (e) => {
  e.preventDefault();
  sessionStorage.setItem(TOKEN_KEY, $('token-input').value.trim());
  $('token-input').value = '';
  $('token-dialog').close();
  const waiting = tokenWaiters;
  tokenWaiters = [];
  for (const resolve of waiting) resolve();
  connect(true);
});
$('token-button').addEventListener('click', () => askToken().then(() => loadAll()));

// ─── REST ──────────────────────────────────────────────────────────────────────────────────
async function api(method, path, body) {
  for (;;) {
    const headers = {};
    if (token()) headers.authorization = `Bearer ${token()}`;
    if (body !== undefined) headers['content-type'] = 'application/json';
    const res = await fetch(API + path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    if (res.status === 401) {
      await askToken();
      continue;
    }
    const text = await res.text();
    let json = null;
    try {
      json = text ? JSON.parse(text) : null;
    } catch {
      json = { error: { code: 'BAD_RESPONSE', message: text.slice(0, 200) } };
    }
    return { status: res.status, ok: res.ok, json };
  }
}

// ─── rendering helpers ─────────────────────────────────────────────────────────────────────
function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === 'class') node.className = v;
    else if (k.startsWith('data-')) node.setAttribute(k, v);
    else node[k] = v;
  }
  for (const c of children) node.append(c instanceof Node ? c : document.createTextNode(c ?? ''));
  return node;
}

function time(iso) {
  if (!iso) return '—';
  const d = new Date(iso);
  return Number.isNaN(d.getTime()) ? '—' : d.toLocaleTimeString();
}

function ms(n) {
  if (n === null || n === undefined) return '—';
  return n < 1000 ? `${Math.round(n)} ms` : `${(n / 1000).toFixed(1)} s`;
}

const badge = (text, kind) => el('span', { class: `badge badge-${kind}` }, text);

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
        el('td', {}, time(p.state_since)),
        el('td', {}, time(p.last_heartbeat_at)),
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
}

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
    const kind = c.status === 'completed' ? 'online' : FINAL.has(c.status) ? 'failed' : 'pending';
    const total = c.completed_at ? Date.parse(c.completed_at) - Date.parse(c.created_at) : null;
    body.append(
      el(
        'tr',
        { 'data-command': c.command_id, class: inflight ? 'inflight' : '' },
        el('td', { title: c.command_id }, time(c.created_at)),
        el('td', {}, c.project_id),
        el('td', {}, c.command_type),
        el('td', { class: 'status' }, badge(c.status, kind), c.late_result ? badge('late result', 'warn') : ''),
        el('td', {}, ms(total)),
        el('td', { class: 'output mono' }, c.result ? summary(c.result) : (c.error ?? '—')),
      ),
    );
  }
  $('commands-empty').hidden = list.length > 0;
  $('inflight-count').textContent = `${list.filter((c) => !FINAL.has(c.status)).length} in flight`;
}

function summary(result) {
  const text = result.output || result.error || '';
  return `${result.status} (${result.exit_code}) ${text.length > 80 ? `${text.slice(0, 77)}...` : text}`;
}

function keepCommand(view, result) {
  const prev = commands.get(view.command_id);
  commands.set(view.command_id, { ...prev, ...view, result: result ?? prev?.result ?? null });
  if (commands.size > MAX_COMMANDS) {
    const oldest = [...commands.values()].sort((a, b) => a.created_at.localeCompare(b.created_at))[0];
    commands.delete(oldest.command_id);
  }
}

async function loadCommands() {
  const r = await api('GET', '/commands?limit=50');
  if (!r.ok) return;
  commands.clear();
  for (const c of r.json.items) keepCommand(c);
  renderCommands();
}

$('commands').addEventListener('click', async (e) => {
  const row = e.target.closest('tr[data-command]');
  if (!row) return;
  const r = await api('GET', `/command/${row.dataset.command}`);
  show(r);
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
    if (view) {
      keepCommand(view, view.result);
      renderCommands();
    }
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
async function loadModules() {
  const r = await api('GET', '/modules');
  if (!r.ok) return;
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
      keepCommand(ev.data);
      renderCommands();
      return;
    case 'command.result':
      keepCommand(ev.data.command, ev.data.result);
      renderCommands();
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
  await Promise.all([loadProjects(), loadCommands(), loadModules()]);
}

// REST first asks for a token when one is needed; the socket then subscribes and re-reads.
loadAll().then(() => connect(true));
setInterval(loadModules, 15_000);
