// Jobs (GET /jobs): one row per job with a bar of its counts, kept live by `job.progress` events
// (the JobView) and re-read now and then (an instance's events carry only the jobs it drives);
// cancel for a scheduled or running job, the hub's refusal shown as it gave it.
import { $, api, badge, el, onClickOf, pager, refusal, time } from './lib.js';

const PAGE = 10;
// Segments of the bar, in this order; `pending` is what is left of the total.
const SEGMENTS = ['completed', 'failed', 'timeout', 'cancelled', 'in_flight'];
const ENDED = new Set(['completed', 'aborted', 'cancelled']);

const jobs = new Map(); // job_id → JobView, the page shown
let page = { total: 0, limit: PAGE, offset: 0 };

export async function loadJobs() {
  const r = await api('GET', `/jobs?limit=${PAGE}&offset=${page.offset}`);
  if (!r.ok) return;
  jobs.clear();
  for (const j of r.json.items) jobs.set(j.job_id, j);
  page = { total: r.json.total, limit: r.json.limit, offset: r.json.offset };
  render();
}

export function onJobProgress(job) {
  if (jobs.has(job.job_id)) jobs.set(job.job_id, job);
  else if (page.offset === 0 && newerThanShown(job)) {
    // a job made since the page was read: the newest, on the first page
    jobs.set(job.job_id, job);
    page.total++;
  } else return;
  render();
}

function newerThanShown(job) {
  const shown = [...jobs.values()];
  return shown.length < PAGE || shown.every((j) => j.created_at < job.created_at);
}

/** How far a job is: its terminal targets (completed, failed, timeout, cancelled) of its total. */
function done(c) {
  return c.completed + c.failed + c.timeout + c.cancelled;
}

function bar(c) {
  const total = Math.max(c.total, 1);
  return el(
    'div',
    { class: 'bar', title: `${SEGMENTS.map((k) => `${k} ${c[k]}`).join(' · ')} · pending ${c.pending}` },
    ...SEGMENTS.filter((k) => c[k] > 0).map((k) => {
      const seg = el('span', { class: `seg seg-${k}` });
      seg.style.width = `${(100 * c[k]) / total}%`;
      return seg;
    }),
  );
}

function render() {
  const list = [...jobs.values()].sort((a, b) => b.created_at.localeCompare(a.created_at)).slice(0, PAGE);
  $('jobs').tBodies[0].replaceChildren(
    ...list.map((j) => {
      const c = j.counts;
      const pct = c.total ? Math.round((100 * done(c)) / c.total) : 0;
      const kind =
        j.status === 'completed'
          ? 'online'
          : ENDED.has(j.status)
            ? 'failed'
            : j.status === 'scheduled'
              ? 'queued'
              : 'pending';
      return el(
        'tr',
        { 'data-job': j.job_id },
        el(
          'td',
          { title: j.job_id },
          el('span', { class: 'mono' }, j.job_id.slice(0, 8)),
          el('div', { class: 'muted' }, time(j.created_at)),
        ),
        el('td', {}, j.command_type),
        el('td', { class: 'status', title: j.reason ?? '' }, badge(j.status, kind)),
        el(
          'td',
          { class: 'progress', 'data-percent': String(pct) },
          bar(c),
          el('span', { class: 'muted' }, `${done(c)} / ${c.total} · ${pct}%`),
          c.failed + c.timeout ? el('span', { class: 'muted' }, ` · ${c.failed + c.timeout} failed`) : '',
        ),
        el(
          'td',
          {},
          j.status === 'scheduled' || j.status === 'running'
            ? el('button', { type: 'button', class: 'small job-cancel', 'data-job': j.job_id }, 'Cancel')
            : '',
        ),
      );
    }),
  );
  $('jobs-empty').hidden = list.length > 0;
  pager('jobs', page);
}

onClickOf($('jobs'), 'button.job-cancel', 'data-job', async (id) => {
  if (!confirm(`Cancel job ${id}? Its targets not sent yet are never sent.`)) return;
  const r = await api('POST', `/jobs/${encodeURIComponent(id)}/cancel`);
  $('jobs-refusal').hidden = r.ok;
  if (!r.ok) {
    $('jobs-refusal').textContent = refusal(r);
    return;
  }
  onJobProgress(r.json);
});

$('jobs-prev').addEventListener('click', () => {
  page.offset = Math.max(0, page.offset - PAGE);
  loadJobs();
});
$('jobs-next').addEventListener('click', () => {
  page.offset += PAGE;
  loadJobs();
});
