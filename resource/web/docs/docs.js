// /docs: the hub's REST API, rendered in the page from /openapi.json (the document the server
// generates from the schemas it validates with). Nothing is loaded from elsewhere (the hub may
// have no internet, and the page runs under the dashboard's strict Content-Security-Policy), and
// data only ever reaches the page through textContent.

const $ = (id) => document.getElementById(id);

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

const METHODS = ['get', 'post', 'put', 'patch', 'delete'];

/** A schema as indented JSON, with `$ref`s shortened to the component's name. */
function schemaText(schema) {
  return JSON.stringify(
    schema,
    (k, v) => (k === '$ref' && typeof v === 'string' ? v.replace('#/components/schemas/', '') : v),
    2,
  );
}

function refName(schema) {
  const ref = schema?.$ref;
  return typeof ref === 'string' ? ref.replace('#/components/schemas/', '') : null;
}

function schemaBlock(schema) {
  const name = refName(schema);
  if (name) return el('p', {}, 'schema: ', el('a', { href: `#schema-${name}` }, name));
  return el('pre', {}, schemaText(schema));
}

function operation(path, method, op) {
  const body = el('div', { class: 'op-body' });
  if (op.description) body.append(el('p', {}, op.description));
  const params = op.parameters ?? [];
  if (params.length) {
    const rows = params.map((p) =>
      el(
        'tr',
        {},
        el('td', { class: 'mono' }, p.name),
        el('td', {}, p.in),
        el('td', {}, p.required ? 'required' : ''),
        el('td', { class: 'mono' }, p.schema ? (refName(p.schema) ?? p.schema.type ?? '') : ''),
        el('td', {}, p.description ?? p.schema?.description ?? ''),
      ),
    );
    body.append(
      el('h4', {}, 'Parameters'),
      el(
        'table',
        {},
        el('thead', {}, el('tr', {}, ...['name', 'in', '', 'type', ''].map((h) => el('th', {}, h)))),
        el('tbody', {}, ...rows),
      ),
    );
  }
  const reqSchema = op.requestBody?.content?.['application/json']?.schema;
  if (reqSchema) body.append(el('h4', {}, 'Request body'), schemaBlock(reqSchema));
  const responses = Object.entries(op.responses ?? {});
  if (responses.length) {
    body.append(el('h4', {}, 'Responses'));
    for (const [status, r] of responses) {
      const s = r.content?.['application/json']?.schema;
      body.append(
        el('div', { class: 'response' }, el('strong', {}, status), ' ', r.description ?? ''),
        s ? schemaBlock(s) : '',
      );
    }
  }
  return el(
    'details',
    { class: 'op', 'data-op': `${method.toUpperCase()} ${path}` },
    el(
      'summary',
      {},
      el('span', { class: 'method' }, method.toUpperCase()),
      ' ',
      el('span', { class: 'path' }, path),
      op.summary ? el('span', { class: 'muted' }, ` · ${op.summary}`) : '',
    ),
    body,
  );
}

async function main() {
  const res = await fetch('/openapi.json');
  if (!res.ok) throw new Error(`/openapi.json answered ${res.status}`);
  const doc = await res.json();
  $('docs-title').textContent = `${doc.info?.title ?? 'API'} ${doc.info?.version ?? ''}`.trim();
  $('docs-info').textContent = doc.info?.description ?? '';
  const ops = [];
  for (const [path, item] of Object.entries(doc.paths ?? {})) {
    for (const m of METHODS) if (item[m]) ops.push(operation(path, m, item[m]));
  }
  $('operations').replaceChildren(...ops);
  const schemas = Object.entries(doc.components?.schemas ?? {}).map(([name, s]) =>
    el(
      'details',
      { id: `schema-${name}`, class: 'op' },
      el('summary', {}, el('span', { class: 'path' }, name)),
      el('pre', {}, schemaText(s)),
    ),
  );
  $('schemas').replaceChildren(...schemas);
  document.body.dataset.ready = String(ops.length);
}

main().catch((err) => {
  $('docs-error').hidden = false;
  $('docs-error').textContent = String(err?.message ?? err);
});
