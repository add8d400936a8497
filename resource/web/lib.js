// What every part of the dashboard shares: the API token, REST calls, and building the page
// from data (always as text: data is never put in the page as HTML).

export const API = '/api/exchange-hub';
export const FINAL = new Set(['completed', 'failed', 'timeout', 'cancelled']);
const TOKEN_KEY = 'gmq-hub.token';

export const $ = (id) => document.getElementById(id);

// ─── token ─────────────────────────────────────────────────────────────────────────────────
export const token = () => sessionStorage.getItem(TOKEN_KEY) ?? '';
let tokenWaiters = [];
let onToken = () => {};

/** What to do once a token was entered (app.js reconnects the live feed). */
export function whenTokenSet(fn) {
  onToken = fn;
}

export function askToken() {
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
  onToken();
});

// ─── REST ──────────────────────────────────────────────────────────────────────────────────
async function call(method, url, body) {
  for (;;) {
    const headers = {};
    if (token()) headers.authorization = `Bearer ${token()}`;
    if (body !== undefined) headers['content-type'] = 'application/json';
    const res = await fetch(url, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
    if (res.status === 401) {
      await askToken();
      continue;
    }
    return res;
  }
}

/** A REST call under the API's base path: `{status, ok, json}`; a 401 asks for a token and retries. */
export async function api(method, path, body) {
  const res = await call(method, API + path, body);
  const text = await res.text();
  let json = null;
  try {
    json = text ? JSON.parse(text) : null;
  } catch {
    json = { error: { code: 'BAD_RESPONSE', message: text.slice(0, 200) } };
  }
  return { status: res.status, ok: res.ok, json };
}

/** A text resource outside the API's base path (/metrics), behind the same token. */
export async function getText(url) {
  const res = await call('GET', url);
  return { status: res.status, ok: res.ok, text: await res.text() };
}

/** The hub's refusal as the operator reads it: `CODE: message`. */
export const refusal = (r) => `${r.json?.error?.code ?? r.status}: ${r.json?.error?.message ?? 'refused'}`;

// ─── building the page ─────────────────────────────────────────────────────────────────────
export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === 'class') node.className = v;
    else if (k.startsWith('data-')) node.setAttribute(k, v);
    else node[k] = v;
  }
  for (const c of children) node.append(c instanceof Node ? c : document.createTextNode(c ?? ''));
  return node;
}

/**
 * `open(key)` for a click on an element of `root` that matches `selector`, told apart by its
 * attribute `attr`. The lists render again on every live update, so a press and its release can
 * land on two renderings of one row: the browser's `click` wants one element and then fires
 * nowhere (a click, a person's or a test's, that opens nothing). Here the press and the release
 * need only name the same key. A click without a pointer (the keyboard on a button) counts too.
 */
export function onClickOf(root, selector, attr, open) {
  const keyOf = (e) => (e.target instanceof Element ? e.target.closest(selector)?.getAttribute(attr) : null) ?? null;
  let pressed = null;
  root.addEventListener('pointerdown', (e) => {
    pressed = e.button === 0 ? keyOf(e) : null;
  });
  root.addEventListener('pointerup', (e) => {
    const key = keyOf(e);
    const same = key !== null && key === pressed && e.button === 0;
    pressed = null;
    if (same) open(key);
  });
  root.addEventListener('click', (e) => {
    const key = e.detail === 0 ? keyOf(e) : null;
    if (key !== null) open(key);
  });
}

export const badge = (text, kind) => el('span', { class: `badge badge-${kind}` }, text);

// A moment as the operator reads it: the date, the time and the zone, in this browser's zone
// (`2026-03-01 14:05:09 GMT+1`); the exact UTC instant is the cell's title.
const pad = (n) => String(n).padStart(2, '0');
function zoneOf(d) {
  try {
    return (
      new Intl.DateTimeFormat(undefined, { timeZoneName: 'short' })
        .formatToParts(d)
        .find((p) => p.type === 'timeZoneName')?.value ?? ''
    );
  } catch {
    return '';
  }
}
export function time(iso) {
  if (!iso) return '—';
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return '—';
  const day = `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())}`;
  return `${day} ${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())} ${zoneOf(d)}`.trim();
}

export function ago(iso) {
  const t = Date.parse(iso ?? '');
  if (Number.isNaN(t)) return '';
  const s = Math.max(0, Math.round((Date.now() - t) / 1000));
  if (s < 120) return `${s} s ago`;
  if (s < 7200) return `${Math.round(s / 60)} min ago`;
  return `${Math.round(s / 3600)} h ago`;
}

/**
 * A table cell for a moment: full time, its UTC instant as the title, and a ticking "… ago" on a
 * line of its own (side by side, two dated columns pushed the projects table past its panel).
 */
export function timeCell(iso, cls = '') {
  return el(
    'td',
    { class: `time ${cls}`.trim(), title: iso ?? '', 'data-ts': iso ?? '' },
    time(iso),
    iso ? el('span', { class: 'ago muted' }, ago(iso)) : '',
  );
}

export function tickAges() {
  for (const cell of document.querySelectorAll('td.time[data-ts]')) {
    const span = cell.querySelector('.ago');
    if (span && cell.dataset.ts) span.textContent = ago(cell.dataset.ts);
  }
}

export function ms(n) {
  if (n === null || n === undefined) return '—';
  return n < 1000 ? `${Math.round(n)} ms` : `${(n / 1000).toFixed(1)} s`;
}

/** Previous/next buttons and "1–50 of 120" for a `{total, limit, offset}` page. */
export function pager(prefix, page) {
  const { total, limit, offset } = page;
  $(`${prefix}-prev`).disabled = offset <= 0;
  $(`${prefix}-next`).disabled = offset + limit >= total;
  $(`${prefix}-page`).textContent = total ? `${offset + 1}–${Math.min(offset + limit, total)} of ${total}` : '0 of 0';
}
