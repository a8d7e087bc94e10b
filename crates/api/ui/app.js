// Logport's Logs screens: a client of the public API, with no framework and no build.
//
// The token lives in sessionStorage only and goes out as `Authorization: Bearer`;
// files are fetched with it and saved from a blob, so it never lands in a URL.
// Column choices and the last slice are remembered in localStorage (they are not
// secrets). Every error shown is the API's own problem+json title and detail.
'use strict';

const TOKEN_KEY = 'logport.token';
const SLICE_KEY = 'logport.slice';
const COLUMNS_KEY = (slice) => `logport.columns.${slice}`;
const ACTIVE = new Set(['queued', 'running']);
const NO_VALUE_OPS = new Set(['is_null', 'not_null']);
const LIST_OPS = new Set(['in', 'not_in']);
const OP_TEXT = {
  eq: '=', ne: '≠', in: 'one of', not_in: 'none of', lt: '<', lte: '≤', gt: '>', gte: '≥',
  between: 'from, to', prefix: 'starts with', contains: 'contains', is_null: 'is NULL', not_null: 'not NULL',
};
/// Downloads larger than this are saved without the SHA-256 check (it needs a copy in memory).
const VERIFY_MAX_BYTES = 512 * 1024 * 1024;

const $ = (id) => document.getElementById(id);
const numberFormat = new Intl.NumberFormat('en');

const state = {
  token: null,
  slices: [],
  slice: null, // GET /v1/slices/{slice}
  sliceCache: new Map(),
  filters: [], // {key, field, op, a, b}
  filterSeq: 0,
  previewAbort: null,
  previewTimer: null,
  lastEstimate: null, // {key, rows}
  jobs: new Map(),
  jobOrder: [],
  estimates: new Map(), // job id → rows estimated when it was created here
  pollTimer: null,
  confirmTimers: new Map(),
};

// ---------------------------------------------------------------------------------
// Small helpers

/** `el('td', {class: 'num'}, 'text', child)`: never parses HTML. */
function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null || v === false) continue;
    if (k === 'class') node.className = v;
    else if (k === 'text') node.textContent = v;
    else if (k.startsWith('on')) node.addEventListener(k.slice(2), v);
    else if (k in node && typeof v !== 'string') node[k] = v;
    else node.setAttribute(k, v === true ? '' : v);
  }
  for (const c of children.flat()) {
    if (c === undefined || c === null || c === false) continue;
    node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return node;
}

function fmtBytes(n) {
  if (!Number.isFinite(n)) return '';
  const units = ['B', 'KB', 'MB', 'GB', 'TB'];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i += 1; }
  return `${i === 0 ? n : n.toFixed(n < 10 ? 1 : 0)} ${units[i]}`;
}

const fmtInt = (n) => numberFormat.format(n);
const shortId = (id) => id.slice(0, 8);
const todayUtc = (offsetDays = 0) => new Date(Date.now() + offsetDays * 86400000).toISOString().slice(0, 10);

function announce(text) {
  const s = $('status');
  s.textContent = '';
  // A changed text node is what screen readers announce.
  window.requestAnimationFrame(() => { s.textContent = text; });
}

function storageGet(store, key) {
  try { return store.getItem(key); } catch { return null; }
}
function storageSet(store, key, value) {
  try { store.setItem(key, value); } catch { /* private mode or full: not remembered */ }
}

// ---------------------------------------------------------------------------------
// The API

class Problem extends Error {
  constructor(status, body) {
    const b = body && typeof body === 'object' ? body : {};
    const text = typeof body === 'string' ? body.trim() : '';
    super(b.detail || text || `the server answered ${status}`);
    this.status = status;
    this.title = b.title || (status ? `HTTP ${status}` : 'Request failed');
    this.detail = this.message;
    this.field = b.field || null;
    this.errors = Array.isArray(b.errors) ? b.errors : [];
  }
}

async function readBody(resp) {
  const text = await resp.text();
  if (!text) return null;
  try { return JSON.parse(text); } catch { return text; }
}

/** fetch with the token; throws a Problem unless 2xx. */
async function request(path, { method = 'GET', body, signal, accept = 'application/json' } = {}) {
  const headers = { Authorization: `Bearer ${state.token}`, Accept: accept };
  const init = { method, headers, signal, cache: 'no-store', credentials: 'omit' };
  if (body !== undefined) {
    headers['Content-Type'] = 'application/json';
    init.body = JSON.stringify(body);
  }
  let resp;
  try {
    resp = await fetch(path, init);
  } catch (e) {
    if (e.name === 'AbortError') throw e;
    throw new Problem(0, { title: 'The server cannot be reached', detail: `${e.message} — is logport serve running?` });
  }
  if (!resp.ok) {
    const problem = new Problem(resp.status, await readBody(resp));
    if (resp.status === 401 && state.token && !$('app').hidden) signOut(problem);
    throw problem;
  }
  return resp;
}

async function api(path, options) {
  const resp = await request(path, options);
  return resp.status === 204 ? null : readBody(resp);
}

// ---------------------------------------------------------------------------------
// Problems on screen

/** The control a problem's `field` names, if it is on this screen. */
function controlFor(field) {
  if (!field) return null;
  const direct = {
    slice: 'slice', date_since: 'since', date_until: 'until', date_dimension: 'dimension',
    timezone: 'timezone', app_id: 'app-id', limit: 'limit', format: 'format',
    compression: 'compression', part_max_rows: 'part-rows',
  }[field];
  if (direct) return $(direct);
  if (field === 'fields' || field.startsWith('fields[')) return $('column-search');
  const m = /^filters\[(\d+)\](?:\.(\w+)(?:\[(\d+)\])?)?/.exec(field);
  if (m) {
    const f = state.filters[Number(m[1])];
    if (!f) return $('add-filter');
    const member = m[2];
    if (member === 'field') return $(`f${f.key}-field`);
    if (member === 'op') return $(`f${f.key}-op`);
    if (member === 'values' && m[3] === '1') return $(`f${f.key}-b`) || $(`f${f.key}-a`);
    return $(`f${f.key}-a`) || $(`f${f.key}-op`);
  }
  return null;
}

function labelOf(control) {
  if (!control) return '';
  const label = control.labels && control.labels[0];
  const li = control.closest('li[data-key]');
  const where = li ? `filter ${[...li.parentNode.children].indexOf(li) + 1}, ` : '';
  return where + (label ? label.textContent.trim() : control.id);
}

function clearInvalid() {
  for (const c of document.querySelectorAll('[aria-invalid="true"]')) c.removeAttribute('aria-invalid');
}

function clearProblem() {
  $('error').hidden = true;
  $('error').replaceChildren();
  clearInvalid();
}

function showProblem(p, { focus = false } = {}) {
  if (p && p.name === 'AbortError') return;
  const problem = p instanceof Problem ? p : new Problem(0, { title: 'Something went wrong', detail: String(p && p.message || p) });
  clearInvalid();
  const control = controlFor(problem.field);
  const parts = [el('strong', {}, problem.status ? `${problem.title} (${problem.status})` : problem.title), ' ', problem.detail];
  if (problem.field) {
    parts.push(el('span', { class: 'field' }, ` — ${control ? `check ${labelOf(control)}` : `member ${problem.field}`}`));
  }
  if (problem.errors.length) {
    parts.push(el('ul', {}, problem.errors.slice(0, 10).map((e) => el('li', {}, `line ${e.line}${e.field ? ` (${e.field})` : ''}: ${e.detail}`))));
  }
  const box = $('error');
  box.replaceChildren(...parts);
  box.hidden = false;
  if (control) control.setAttribute('aria-invalid', 'true');
  if (focus) box.focus();
}

// ---------------------------------------------------------------------------------
// Sign in and out

function showSignIn() {
  $('app').hidden = true;
  $('account').hidden = true;
  $('signin').hidden = false;
  $('token').value = '';
  $('token').focus();
}

async function signIn(token) {
  state.token = token;
  $('signin-button').disabled = true;
  try {
    const list = await api('/v1/slices');
    storageSet(sessionStorage, TOKEN_KEY, token);
    state.slices = list.slices || [];
    clearProblem();
    await enterApp();
  } catch (p) {
    state.token = null;
    try { sessionStorage.removeItem(TOKEN_KEY); } catch { /* nothing stored */ }
    showSignIn();
    showProblem(p);
    $('token').setAttribute('aria-invalid', 'true');
  } finally {
    $('signin-button').disabled = false;
  }
}

function signOut(problem) {
  try { sessionStorage.removeItem(TOKEN_KEY); } catch { /* nothing stored */ }
  state.token = null;
  clearTimeout(state.pollTimer);
  clearTimeout(state.previewTimer);
  if (state.previewAbort) state.previewAbort.abort();
  state.jobs.clear();
  state.jobOrder = [];
  state.estimates.clear();
  $('jobs').tBodies[0].replaceChildren();
  showSignIn();
  if (problem) showProblem(problem);
  else { clearProblem(); announce('Signed out.'); }
}

async function enterApp() {
  const select = $('slice');
  select.replaceChildren();
  const groups = new Map();
  for (const s of state.slices) {
    const g = s.group || 'Logs';
    if (!groups.has(g)) groups.set(g, el('optgroup', { label: g }));
    groups.get(g).append(el('option', { value: s.name }, s.name));
  }
  select.append(...groups.values());
  const saved = storageGet(localStorage, SLICE_KEY);
  if (saved && state.slices.some((s) => s.name === saved)) select.value = saved;
  if (!$('since').value) $('since').value = todayUtc(-6);
  if (!$('until').value) $('until').value = todayUtc();
  $('signin').hidden = true;
  $('app').hidden = false;
  $('account').hidden = false;
  selectTab('preview', false);
  await loadSlice(select.value);
  select.focus();
  announce('Signed in.');
  loadJobs().catch(showProblem);
}

// ---------------------------------------------------------------------------------
// Slice, columns, filters

async function loadSlice(name) {
  if (!name) return;
  let detail = state.sliceCache.get(name);
  if (!detail) {
    try {
      detail = await api(`/v1/slices/${encodeURIComponent(name)}`);
    } catch (p) {
      showProblem(p);
      return;
    }
    state.sliceCache.set(name, detail);
  }
  state.slice = detail;
  storageSet(localStorage, SLICE_KEY, name);
  $('slice-description').textContent = detail.description || '';
  state.filters = state.filters.filter((f) => fieldInfo(f.field) && fieldInfo(f.field).filterable);
  renderColumns(savedColumns());
  renderFilters();
  onQueryChange(0);
}

const fieldInfo = (name) => state.slice && state.slice.fields.find((f) => f.name === name);

function defaultColumns() {
  return state.slice.fields.filter((f) => f.default).map((f) => f.name);
}

function savedColumns() {
  try {
    const saved = JSON.parse(storageGet(localStorage, COLUMNS_KEY(state.slice.name)) || 'null');
    if (Array.isArray(saved)) {
      const known = saved.filter((n) => fieldInfo(n));
      if (known.length) return known;
    }
  } catch { /* not remembered */ }
  return defaultColumns();
}

function chosenColumns() {
  return [...$('column-list').querySelectorAll('input[type=checkbox]:checked')].map((c) => c.value);
}

function renderColumns(chosen) {
  const set = new Set(chosen);
  const list = $('column-list');
  list.replaceChildren(...state.slice.fields.map((f) => el('label', { title: f.description || '' },
    el('input', { type: 'checkbox', value: f.name, checked: set.has(f.name), 'data-column': f.name }),
    el('span', {}, f.name),
    el('span', { class: 'type' }, f.type))));
  filterColumnList();
  columnsChanged(false);
}

function columnsChanged(save = true) {
  const chosen = chosenColumns();
  $('column-count').textContent = `${chosen.length} of ${state.slice.fields.length} columns; exported in this order.`;
  if (save) storageSet(localStorage, COLUMNS_KEY(state.slice.name), JSON.stringify(chosen));
}

function filterColumnList() {
  const q = $('column-search').value.trim().toLowerCase();
  for (const label of $('column-list').children) {
    const name = label.querySelector('input').value;
    label.hidden = q !== '' && !name.toLowerCase().includes(q) && !(label.title || '').toLowerCase().includes(q);
  }
}

function baseType(type) {
  let t = type;
  for (;;) {
    const m = /^(Nullable|LowCardinality)\((.*)\)$/.exec(t);
    if (!m) return t;
    t = m[2];
  }
}

function enumNames(type) {
  const t = baseType(type);
  if (!t.startsWith('Enum')) return [];
  return [...t.matchAll(/'((?:[^'\\]|\\.)*)'\s*=/g)].map((m) => m[1].replace(/\\(.)/g, '$1'));
}

/** A filter value as the field's type wants it in JSON. */
function typed(text, type) {
  const t = baseType(type);
  const v = text.trim();
  if (/^U?Int\d+$/.test(t) && /^-?\d+$/.test(v) && Number.isSafeInteger(Number(v))) return Number(v);
  if (/^Float\d+$/.test(t) && v !== '' && Number.isFinite(Number(v))) return Number(v);
  return text;
}

function placeholderFor(type) {
  const t = baseType(type);
  if (t === 'DateTime') return '2026-11-05 10:00:00';
  if (t === 'Date') return '2026-11-05';
  if (/^(U?Int|Float)/.test(t)) return 'a number';
  return '';
}

function addFilter() {
  const first = state.slice.fields.find((f) => f.filterable);
  if (!first) return;
  state.filterSeq += 1;
  const f = { key: state.filterSeq, field: first.name, op: first.ops[0], a: '', b: '' };
  state.filters.push(f);
  renderFilters();
  $(`f${f.key}-field`).focus();
  onQueryChange();
}

function removeFilter(key) {
  const i = state.filters.findIndex((f) => f.key === key);
  state.filters.splice(i, 1);
  renderFilters();
  const next = state.filters[Math.min(i, state.filters.length - 1)];
  (next ? $(`f${next.key}-remove`) : $('add-filter')).focus();
  announce(`Filter ${i + 1} removed.`);
  onQueryChange();
}

function renderFilters() {
  const focused = document.activeElement && document.activeElement.id;
  const filterable = state.slice.fields.filter((f) => f.filterable);
  const items = state.filters.map((f, i) => {
    const info = fieldInfo(f.field);
    const ops = info.ops || [];
    if (!ops.includes(f.op)) f.op = ops[0];
    const id = (s) => `f${f.key}-${s}`;
    const fieldSelect = el('select', { id: id('field'), 'data-role': 'field' },
      filterable.map((x) => el('option', { value: x.name, selected: x.name === f.field }, x.name)));
    const opSelect = el('select', { id: id('op'), 'data-role': 'op' },
      ops.map((op) => el('option', { value: op, selected: op === f.op }, OP_TEXT[op] ? `${op} (${OP_TEXT[op]})` : op)));
    const names = enumNames(info.type);
    const listId = names.length ? id('choices') : undefined;
    const input = (which, label) => el('div', {},
      el('label', { for: id(which) }, label),
      el('input', {
        id: id(which), type: 'text', 'data-role': which, value: f[which], spellcheck: 'false',
        autocomplete: 'off', placeholder: placeholderFor(info.type), list: listId,
      }));
    let values = [];
    if (LIST_OPS.has(f.op)) values = [input('a', 'Values, separated by commas')];
    else if (f.op === 'between') values = [input('a', 'From'), input('b', 'To')];
    else if (!NO_VALUE_OPS.has(f.op)) values = [input('a', 'Value')];
    return el('li', { 'data-key': f.key, 'aria-label': `Filter ${i + 1}` },
      el('div', { class: 'row' },
        el('div', {}, el('label', { for: id('field') }, 'Field'), fieldSelect),
        el('div', {}, el('label', { for: id('op') }, 'Condition'), opSelect)),
      values.length ? el('div', { class: 'values' }, values) : null,
      listId ? el('datalist', { id: listId }, names.map((n) => el('option', { value: n }))) : null,
      el('p', { class: 'help' }, info.description || ''),
      el('button', {
        type: 'button', class: 'secondary small remove', id: id('remove'),
        'aria-label': `Remove filter ${i + 1} (${f.field})`, onclick: () => removeFilter(f.key),
      }, 'Remove'));
  });
  $('filter-list').replaceChildren(...items);
  $('filters-empty').hidden = state.filters.length > 0;
  if (focused && $(focused)) $(focused).focus();
}

function onFilterEdit(event) {
  const li = event.target.closest('li[data-key]');
  const role = event.target.dataset.role;
  if (!li || !role) return;
  const f = state.filters.find((x) => x.key === Number(li.dataset.key));
  if (role === 'field') {
    f.field = event.target.value;
    renderFilters();
  } else if (role === 'op') {
    f.op = event.target.value;
    renderFilters();
  } else {
    f[role] = event.target.value;
  }
  onQueryChange();
}

function filterRequest(f) {
  const info = fieldInfo(f.field);
  const out = { field: f.field, op: f.op };
  if (NO_VALUE_OPS.has(f.op)) return out;
  if (LIST_OPS.has(f.op)) {
    out.values = f.a.split(',').map((v) => v.trim()).filter((v) => v !== '').map((v) => typed(v, info.type));
  } else if (f.op === 'between') {
    out.values = [typed(f.a, info.type), typed(f.b, info.type)];
  } else {
    out.value = typed(f.a, info.type);
  }
  return out;
}

// ---------------------------------------------------------------------------------
// Requests

/** The body shared by preview, evaluate and export. */
function queryRequest() {
  const r = { slice: $('slice').value, date_since: $('since').value, date_until: $('until').value };
  if ($('dimension').value !== 'event') r.date_dimension = $('dimension').value;
  const tz = $('timezone').value.trim();
  if (tz && tz !== 'UTC') r.timezone = tz;
  const app = $('app-id').value.trim();
  if (app) r.app_id = /^\d+$/.test(app) && Number.isSafeInteger(Number(app)) ? Number(app) : app;
  r.fields = chosenColumns();
  if (state.filters.length) r.filters = state.filters.map(filterRequest);
  return r;
}

function exportRequest() {
  const r = queryRequest();
  r.format = $('format').value;
  if ($('compression').value !== 'none') r.compression = $('compression').value;
  const rows = $('part-rows').value.trim();
  if (rows) r.part_max_rows = /^\d+$/.test(rows) && Number.isSafeInteger(Number(rows)) ? Number(rows) : rows;
  return r;
}

function onQueryChange(delay = 350) {
  clearInvalid();
  updateApiPanel();
  if ($('live').checked || delay === 0) schedulePreview(delay);
}

function schedulePreview(delay) {
  clearTimeout(state.previewTimer);
  state.previewTimer = setTimeout(runPreview, delay);
}

async function runPreview() {
  if (!state.token || !state.slice) return;
  if (state.previewAbort) state.previewAbort.abort();
  const ctrl = new AbortController();
  state.previewAbort = ctrl;
  const query = queryRequest();
  const key = JSON.stringify(query);
  const wrap = $('preview-wrap');
  wrap.setAttribute('aria-busy', 'true');
  $('refresh').disabled = true;
  try {
    const body = { ...query, limit: Number($('limit').value) };
    const [preview, estimate] = await Promise.all([
      api(`/v1/logs/${encodeURIComponent(query.slice)}/preview`, { method: 'POST', body, signal: ctrl.signal }),
      api('/v1/exports/evaluate', { method: 'POST', body: query, signal: ctrl.signal }),
    ]);
    renderPreview(preview, query);
    renderEstimate(estimate);
    state.lastEstimate = { key, rows: estimate.estimated_rows };
    clearProblem();
    announce(estimate.estimated_rows === null
      ? `Preview: ${fmtInt(preview.rows)} rows shown.`
      : `Preview: ${fmtInt(preview.rows)} rows shown, about ${fmtInt(estimate.estimated_rows)} match.`);
  } catch (p) {
    if (p.name === 'AbortError') return;
    $('preview-caption').textContent = 'Not updated: see the message above.';
    $('estimate').textContent = '';
    showProblem(p);
  } finally {
    if (state.previewAbort === ctrl) {
      state.previewAbort = null;
      wrap.removeAttribute('aria-busy');
      $('refresh').disabled = false;
    }
  }
}

function cell(v) {
  if (v === null || v === undefined) return el('td', {}, el('span', { class: 'null' }, 'NULL'));
  const text = typeof v === 'object' ? JSON.stringify(v) : String(v);
  // The full value on hover: long ones are cut with an ellipsis.
  return el('td', { class: typeof v === 'number' ? 'num' : null, title: text.length > 30 ? text : null }, text);
}

function renderPreview(p, query) {
  const table = $('preview');
  table.tHead.replaceChildren(el('tr', {}, p.fields.map((f) => el('th', { scope: 'col' }, f))));
  table.tBodies[0].replaceChildren(...p.data.map((row) => el('tr', {}, p.fields.map((f) => cell(row[f])))));
  const by = query.date_dimension === 'received' ? 'received_time' : 'event_time';
  // A preview answers at most LOGPORT_PREVIEW_MAX_BYTES of rows: fewer when they are wide.
  const cut = p.truncated ? ' (cut at the preview size limit: export for every row)' : '';
  $('preview-caption').textContent = p.rows
    ? `${fmtInt(p.rows)} newest matching rows of ${p.slice}, by ${by} (UTC)${cut}`
    : (p.truncated ? `The newest row of ${p.slice} is larger than a preview may show: export it.` : `No rows of ${p.slice} match.`);
}

function renderEstimate(e) {
  const out = $('estimate');
  out.classList.toggle('impossible', !e.possible);
  out.textContent = e.possible
    ? `≈ ${fmtInt(e.estimated_rows)} rows · ≈ ${fmtBytes(e.estimated_bytes)} to export`
    : `Cannot be exported at once: ${e.reason}`;
}

// ---------------------------------------------------------------------------------
// The API request panel

const shellQuote = (s) => `'${String(s).replace(/'/g, `'\\''`)}'`;
const enc = (s) => encodeURIComponent(String(s)).replace(/%2C/gi, ',');

function appmetricaRequest(r) {
  const notes = [];
  let format = r.format;
  if (format !== 'csv' && format !== 'json') {
    const to = format === 'jsonl' ? 'json' : 'csv';
    notes.push(`AppMetrica-style exports are CSV or JSON; ${format} is shown as ${to}.`);
    format = to;
  }
  const q = [];
  if (r.app_id !== undefined) q.push(['application_id', r.app_id]);
  else notes.push('application_id is required by AppMetrica-style requests: fill in App ID.');
  q.push(['date_since', r.date_since], ['date_until', r.date_until]);
  if (r.date_dimension === 'received') q.push(['date_dimension', 'receive']);
  q.push(['fields', r.fields.join(',')]);
  const reserved = new Set(['application_id', 'date_since', 'date_until', 'date_dimension', 'fields', 'limit', 'use_utf8_bom', 'parts_count', 'part_number']);
  for (const f of r.filters || []) {
    if (reserved.has(f.field)) notes.push(`The filter on ${f.field} cannot be expressed (the name is a parameter); left out.`);
    else if (f.op === 'eq') q.push([f.field, f.value]);
    else if (f.op === 'in') for (const v of f.values) q.push([f.field, v]);
    else notes.push(`“${f.field} ${f.op}” cannot be expressed: AppMetrica filters are equalities; left out.`);
  }
  if (r.timezone) notes.push('AppMetrica-style dates are read in UTC; the time zone is left out.');
  if (r.compression) notes.push('For compression, send Accept-Encoding: gzip.');
  if (r.part_max_rows) notes.push('The answer is one file; rows per file is left out.');
  const query = q.map(([k, v]) => `${enc(k)}=${enc(v)}`).join('&');
  return { url: `${window.location.origin}/logs/v1/export/${enc(r.slice)}.${format}?${query}`, notes };
}

function updateApiPanel() {
  if (!state.slice) return;
  const r = exportRequest();
  const parquet = r.format === 'parquet';
  $('compression').disabled = parquet;
  if (parquet) { $('compression').value = 'none'; delete r.compression; }
  $('api-curl').value = [
    `curl -sS -X POST ${shellQuote(`${window.location.origin}/v1/exports`)} \\`,
    '  -H "Authorization: Bearer $LOGPORT_TOKEN" \\',
    "  -H 'Content-Type: application/json' \\",
    `  -d ${shellQuote(JSON.stringify(r, null, 2))}`,
  ].join('\n');
  const am = appmetricaRequest(r);
  $('api-appmetrica').value = am.url;
  $('api-appmetrica-note').replaceChildren(...am.notes.map((n) => el('li', {}, n)));
}

async function copyFrom(id, button) {
  const area = $(id);
  try {
    await navigator.clipboard.writeText(area.value);
  } catch {
    area.select();
    document.execCommand('copy');
  }
  announce('Copied.');
  button.focus();
}

// ---------------------------------------------------------------------------------
// Exports

async function createExport(event) {
  event.preventDefault();
  const body = exportRequest();
  const button = $('export-button');
  button.disabled = true;
  try {
    const job = await api('/v1/exports', { method: 'POST', body });
    const key = JSON.stringify(queryRequest());
    if (state.lastEstimate && state.lastEstimate.key === key) state.estimates.set(job.id, state.lastEstimate.rows);
    clearProblem();
    upsertJob(job, true);
    selectTab('jobs', true);
    announce(`Export ${shortId(job.id)} queued.`);
  } catch (p) {
    showProblem(p);
  } finally {
    button.disabled = false;
  }
}

function upsertJob(job, first = false) {
  state.jobs.set(job.id, job);
  if (!state.jobOrder.includes(job.id)) {
    if (first) state.jobOrder.unshift(job.id);
    else state.jobOrder.push(job.id);
  }
  renderJobs();
  schedulePoll();
}

async function loadJobs() {
  const r = await api('/v1/exports?limit=25');
  // The list leaves out parts; those of a finished job never change, so each job's
  // are asked for once.
  const jobs = await Promise.all(r.exports.map((j) => {
    if (j.status !== 'succeeded') return j;
    const known = state.jobs.get(j.id);
    if (known && known.status === 'succeeded' && known.parts.length) return known;
    return api(`/v1/exports/${j.id}`).catch(() => j);
  }));
  const listed = jobs.map((j) => j.id);
  // Jobs created here but not yet listed (a race) stay on top.
  const extra = state.jobOrder.filter((id) => !listed.includes(id) && state.jobs.has(id) && ACTIVE.has(state.jobs.get(id).status));
  for (const j of jobs) state.jobs.set(j.id, j);
  state.jobOrder = [...extra, ...listed];
  renderJobs();
  schedulePoll();
}

function schedulePoll() {
  clearTimeout(state.pollTimer);
  const active = state.jobOrder.filter((id) => ACTIVE.has(state.jobs.get(id).status)).length;
  const badge = $('jobs-badge');
  badge.hidden = active === 0;
  badge.textContent = active ? `${active} active` : '';
  if (active && state.token) {
    state.pollTimer = setTimeout(() => loadJobs().catch((p) => { showProblem(p); schedulePollLater(); }), 1000);
  }
}

function schedulePollLater() {
  clearTimeout(state.pollTimer);
  if (state.token) state.pollTimer = setTimeout(() => loadJobs().catch(schedulePollLater), 5000);
}

function progressOf(job) {
  const p = job.progress || { rows: 0, bytes: 0, parts: 0 };
  const total = state.estimates.get(job.id) ?? (job.request && job.request.limit) ?? null;
  const rows = `${fmtInt(p.rows)} rows`;
  if (job.status === 'queued') return { text: 'waiting for a worker', value: null, max: null };
  if (job.status === 'running') {
    const of = total ? ` of ≈ ${fmtInt(total)}` : '';
    return { text: `${fmtInt(p.rows)}${of} rows · ${fmtBytes(p.bytes)}`, value: p.rows, max: total || null };
  }
  if (job.status === 'failed') return { text: job.error ? job.error.message : 'failed', value: null, max: null };
  const files = `${p.parts} file${p.parts === 1 ? '' : 's'}`;
  return { text: `${rows} · ${fmtBytes(p.bytes)} · ${files}`, value: null, max: null };
}

function renderJobs() {
  const tbody = $('jobs').tBodies[0];
  if (!state.jobOrder.length) {
    tbody.replaceChildren(el('tr', {}, el('td', { colspan: 6, class: 'help' }, 'No exports yet. Choose what you need and press Export.')));
    return;
  }
  const existing = new Map([...tbody.rows].filter((r) => r.dataset.id).map((r) => [r.dataset.id, r]));
  const rows = state.jobOrder.map((id) => {
    const tr = existing.get(id) || newJobRow(id);
    updateJobRow(tr, state.jobs.get(id));
    return tr;
  });
  const same = rows.length === tbody.rows.length && rows.every((r, i) => tbody.rows[i] === r);
  if (!same) tbody.replaceChildren(...rows);
}

function newJobRow(id) {
  return el('tr', { 'data-id': id, id: `job-${id}` },
    el('td', { class: 'created' }), el('td', { class: 'what' }), el('td', { class: 'status' }),
    el('td', { class: 'progress' }), el('td', { class: 'files-cell' }), el('td', { class: 'actions-cell' }));
}

function updateJobRow(tr, job) {
  const [created, what, status, progress, files, actions] = tr.cells;
  const when = new Date(job.created_at);
  if (!created.firstChild) created.append(el('time', { datetime: job.created_at, title: job.created_at }, when.toLocaleString()));
  if (!what.firstChild) {
    const r = job.request || {};
    what.append(el('div', {}, job.slice), el('div', { class: 'help' }, `${r.format || 'csv'}${r.compression && r.compression !== 'none' ? ` + ${r.compression}` : ''} · `, el('code', { title: job.id }, shortId(job.id))));
  }
  status.replaceChildren(el('span', { class: `state state-${job.status}` }, job.status));
  const p = progressOf(job);
  const bar = p.value !== null && p.max
    ? el('progress', { value: Math.min(p.value, p.max), max: p.max, 'aria-label': `Progress of export ${shortId(job.id)}` })
    : job.status === 'running' ? el('progress', { 'aria-label': `Progress of export ${shortId(job.id)}` }) : null;
  progress.replaceChildren(...[bar, bar ? ' ' : null, p.text].filter(Boolean));
  // Buttons are rebuilt only when they change, so keyboard focus survives polling.
  const sig = `${job.status}|${job.parts.map((x) => x.sha256).join(',')}`;
  if (tr.dataset.sig === sig) return;
  const hadFocus = tr.contains(document.activeElement) ? document.activeElement.dataset.action : null;
  tr.dataset.sig = sig;
  files.replaceChildren(el('div', { class: 'files' }, job.parts.map((part) => el('button', {
    type: 'button', class: 'secondary small', 'data-action': `part-${part.n}`,
    'aria-label': `Download ${part.file || `part ${part.n}`} of export ${shortId(job.id)}, ${fmtBytes(part.bytes)}`,
    onclick: (e) => downloadPart(job.id, part, e.currentTarget),
  }, `${part.file || `part ${part.n}`} (${fmtBytes(part.bytes)})`))));
  const buttons = [];
  if (ACTIVE.has(job.status)) {
    buttons.push(el('button', {
      type: 'button', class: 'secondary small', 'data-action': 'cancel',
      'aria-label': `Cancel export ${shortId(job.id)}`, onclick: (e) => cancelJob(job.id, e.currentTarget),
    }, 'Cancel'));
  } else if (job.status !== 'expired') {
    buttons.push(el('button', {
      type: 'button', class: 'danger small', 'data-action': 'delete',
      'aria-label': `Delete the files of export ${shortId(job.id)}`, onclick: (e) => deleteJob(job.id, e.currentTarget),
    }, 'Delete'));
  }
  actions.replaceChildren(el('div', { class: 'row-actions' }, buttons));
  if (hadFocus) {
    const again = tr.querySelector(`[data-action="${hadFocus}"]`);
    (again || tr.querySelector('button') || $('jobs-refresh')).focus();
  }
}

async function cancelJob(id, button) {
  button.disabled = true;
  try {
    const job = await api(`/v1/exports/${id}/cancel`, { method: 'POST' });
    upsertJob(job);
    announce(`Export ${shortId(id)} canceled.`);
  } catch (p) {
    showProblem(p);
    button.disabled = false;
  }
}

async function deleteJob(id, button) {
  // Two presses: the first asks, the second deletes (no modal dialog to trap focus).
  if (!button.classList.contains('confirm')) {
    button.classList.add('confirm');
    button.textContent = 'Press again to delete';
    announce(`Press Delete again to remove the files of export ${shortId(id)}.`);
    clearTimeout(state.confirmTimers.get(id));
    state.confirmTimers.set(id, setTimeout(() => {
      button.classList.remove('confirm');
      button.textContent = 'Delete';
    }, 6000));
    return;
  }
  clearTimeout(state.confirmTimers.get(id));
  button.disabled = true;
  try {
    await api(`/v1/exports/${id}`, { method: 'DELETE' });
    upsertJob(await api(`/v1/exports/${id}`));
    announce(`The files of export ${shortId(id)} were deleted.`);
    $('jobs-refresh').focus();
  } catch (p) {
    showProblem(p);
    button.disabled = false;
  }
}

async function sha256Hex(blob) {
  const digest = await crypto.subtle.digest('SHA-256', await blob.arrayBuffer());
  return [...new Uint8Array(digest)].map((b) => b.toString(16).padStart(2, '0')).join('');
}

async function downloadPart(jobId, part, button) {
  button.disabled = true;
  const name = `${jobId}-${part.file || `part-${part.n}`}`;
  announce(`Downloading ${part.file || `part ${part.n}`}…`);
  try {
    const resp = await request(part.url, { accept: '*/*' });
    const blob = await resp.blob();
    let checked = '';
    if (window.crypto && crypto.subtle && blob.size <= VERIFY_MAX_BYTES) {
      const sum = await sha256Hex(blob);
      if (sum !== part.sha256) {
        throw new Problem(0, { title: 'The download is damaged', detail: `its SHA-256 is ${sum}, not ${part.sha256}; download it again` });
      }
      checked = ', SHA-256 verified';
    }
    const url = URL.createObjectURL(blob);
    const a = el('a', { href: url, download: name, hidden: true });
    document.body.append(a);
    a.click();
    a.remove();
    setTimeout(() => URL.revokeObjectURL(url), 60000);
    announce(`Saved ${name} (${fmtBytes(blob.size)}${checked}).`);
  } catch (p) {
    showProblem(p);
  } finally {
    button.disabled = false;
  }
}

// ---------------------------------------------------------------------------------
// Tabs (WAI-ARIA tabs with automatic activation)

const TABS = ['preview', 'export', 'jobs'];

function selectTab(name, focus) {
  for (const t of TABS) {
    const tab = $(`tab-${t}`);
    const on = t === name;
    tab.setAttribute('aria-selected', String(on));
    tab.tabIndex = on ? 0 : -1;
    $(`panel-${t}`).hidden = !on;
  }
  if (focus) $(`tab-${name}`).focus();
  if (name === 'jobs' && state.token) loadJobs().catch(showProblem);
}

function onTabKey(event) {
  const i = TABS.indexOf(event.target.id.replace('tab-', ''));
  const to = { ArrowRight: i + 1, ArrowLeft: i - 1, Home: 0, End: TABS.length - 1 }[event.key];
  if (to === undefined) return;
  event.preventDefault();
  selectTab(TABS[(to + TABS.length) % TABS.length], true);
}

// ---------------------------------------------------------------------------------
// Wiring

function init() {
  $('signin-form').addEventListener('submit', (e) => {
    e.preventDefault();
    const token = $('token').value.trim();
    if (!token) {
      showProblem(new Problem(0, { title: 'A token is needed', detail: 'paste the API token you were given' }));
      $('token').setAttribute('aria-invalid', 'true');
      $('token').focus();
      return;
    }
    signIn(token);
  });
  $('sign-out').addEventListener('click', () => signOut());
  $('slice').addEventListener('change', (e) => loadSlice(e.target.value));
  for (const id of ['since', 'until', 'dimension', 'timezone', 'app-id']) {
    $(id).addEventListener('input', () => onQueryChange());
    $(id).addEventListener('change', () => onQueryChange());
  }
  $('column-list').addEventListener('change', () => { columnsChanged(); onQueryChange(); });
  $('column-search').addEventListener('input', filterColumnList);
  const setColumns = (names) => { renderColumns(names); columnsChanged(); onQueryChange(); };
  $('columns-default').addEventListener('click', () => setColumns(defaultColumns()));
  $('columns-all').addEventListener('click', () => setColumns(state.slice.fields.map((f) => f.name)));
  $('columns-none').addEventListener('click', () => setColumns([]));
  $('add-filter').addEventListener('click', addFilter);
  $('filter-list').addEventListener('input', onFilterEdit);
  $('filter-list').addEventListener('change', (e) => { if (e.target.tagName === 'SELECT') onFilterEdit(e); });
  $('limit').addEventListener('change', () => schedulePreview(0));
  $('live').addEventListener('change', () => { if ($('live').checked) schedulePreview(0); });
  $('refresh').addEventListener('click', () => schedulePreview(0));
  $('query').addEventListener('submit', (e) => { e.preventDefault(); schedulePreview(0); });
  for (const id of ['format', 'compression', 'part-rows']) {
    $(id).addEventListener('input', updateApiPanel);
    $(id).addEventListener('change', updateApiPanel);
  }
  $('export-form').addEventListener('submit', createExport);
  for (const b of document.querySelectorAll('button.copy')) {
    b.addEventListener('click', () => copyFrom(b.dataset.copy, b));
  }
  $('jobs-refresh').addEventListener('click', () => loadJobs().then(() => announce('Exports refreshed.')).catch(showProblem));
  for (const t of TABS) {
    $(`tab-${t}`).addEventListener('click', () => selectTab(t, false));
    $(`tab-${t}`).addEventListener('keydown', onTabKey);
  }
  const saved = storageGet(sessionStorage, TOKEN_KEY);
  if (saved) signIn(saved);
  else showSignIn();
}

init();
