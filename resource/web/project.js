// One project's panel (a click on its row): disable/enable and rotate its secret, each confirmed
// first; the rotated secret is shown once in a box that forgets it when dismissed (it is never
// stored anywhere, so a reload cannot bring it back); and its presence history, paged.
import { $, api, badge, el, pager, refusal, timeCell } from './lib.js';

const HISTORY_PAGE = 5;
let openId = null;
let history = { total: 0, limit: HISTORY_PAGE, offset: 0 };
let afterChange = () => {};

/** What to re-read once a project was changed here (app.js passes its project list reload). */
export function whenProjectChanged(fn) {
  afterChange = fn;
}

export function openProject(project) {
  if (openId !== project.project_id) {
    openId = project.project_id;
    history = { total: 0, limit: HISTORY_PAGE, offset: 0 };
    forgetSecret();
    $('project-refusal').hidden = true;
  }
  // a click on the row re-reads the history too (a change is in it with the status flush)
  loadHistory();
  $('project-panel').hidden = false;
  showProject(project);
}

/** The panel follows its project's row (state, enabled) when the project list is re-read. */
export function showProject(project) {
  if (project.project_id !== openId) return;
  $('project-id').textContent = project.project_id;
  $('project-state').replaceChildren(badge(project.state, project.state));
  const enabled = project.enabled !== false;
  $('project-panel').dataset.enabled = String(enabled);
  $('project-disable').hidden = !enabled;
  $('project-enable').hidden = enabled;
}

/** A presence change of the open project shows in its history with the next flush: re-read it then. */
export function onStatus(ev) {
  if (ev.project_id === openId && history.offset === 0) setTimeout(loadHistory, 1500);
}

async function loadHistory() {
  const id = openId;
  if (!id) return;
  const r = await api(
    'GET',
    `/project/${encodeURIComponent(id)}/history?limit=${HISTORY_PAGE}&offset=${history.offset}`,
  );
  if (id !== openId || !r.ok) return;
  history = { total: r.json.total, limit: r.json.limit, offset: r.json.offset };
  $('history').tBodies[0].replaceChildren(
    ...r.json.items.map((h) =>
      el(
        'tr',
        {},
        timeCell(h.at),
        el('td', {}, badge(h.from_state, h.from_state), ' → ', badge(h.to_state, h.to_state)),
        el('td', { class: 'reason' }, h.reason ?? ''),
      ),
    ),
  );
  $('history-empty').hidden = r.json.items.length > 0;
  pager('history', history);
}

async function act(path, question) {
  const id = openId;
  if (!confirm(question)) return null;
  $('project-refusal').hidden = true;
  const r = await api('POST', `/projects/${encodeURIComponent(id)}/${path}`);
  if (!r.ok) {
    $('project-refusal').textContent = refusal(r);
    $('project-refusal').hidden = false;
    return null;
  }
  await afterChange(id);
  return r;
}

function forgetSecret() {
  // the secret leaves the page for good
  $('rotated-secret').textContent = '';
  $('rotated-password').textContent = '';
  $('rotated-box').hidden = true;
}

$('project-disable').addEventListener('click', () =>
  act('disable', `Disable ${openId}? Its agent is refused by the broker and taken offline.`),
);
$('project-enable').addEventListener('click', () => act('enable', `Enable ${openId} again?`));
$('project-rotate').addEventListener('click', async () => {
  const r = await act('rotate', `Rotate the secret of ${openId}? The old one keeps working for a while (overlap).`);
  if (!r) return;
  $('rotated-secret').textContent = r.json.secret;
  $('rotated-password').textContent = r.json.mqtt_password;
  $('rotated-box').hidden = false;
});
$('rotated-dismiss').addEventListener('click', forgetSecret);
$('project-close').addEventListener('click', () => {
  openId = null;
  forgetSecret();
  $('project-panel').hidden = true;
});
$('history-prev').addEventListener('click', () => {
  history.offset = Math.max(0, history.offset - HISTORY_PAGE);
  loadHistory();
});
$('history-next').addEventListener('click', () => {
  history.offset += HISTORY_PAGE;
  loadHistory();
});
