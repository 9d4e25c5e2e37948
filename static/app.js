// statecast dashboard: one websocket, one in-memory index, and DOM updates per change.
//
// Event text is attacker-controlled. Everything that comes from the server is put on the page with
// textContent / setAttribute('title' | 'datetime' | 'data-*') only — never innerHTML, never a URL
// attribute. The page's Content-Security-Policy forbids inline scripts and styles as a second line.
//
// Protocol (GET /ws, JSON text frames):
//   {"type":"snapshot","seq":S,"epoch":E,"reset":R,"events":[E…]}  replaces all state
//   {"type":"change","seq":N,"previous_state":P,"event":E}          one change, seq increasing
//   {"type":"change",…,"removed":true}       E left the server's index (expired past --expired-keep)
//   {"type":"stats","clients":C,"events":T,"changes":K}            periodic heartbeat
//   {"type":"error","error":"…"}                                   answer to a bad subscribe
// Client → server: {"type":"subscribe","query":Q} (a fresh snapshot, or an error frame).
// URL: /ws?query=Q filters from the start; /ws?since=SEQ&epoch=E resumes after a reconnect (the
// server replays the missed changes, or sends a snapshot with reset:true when it cannot).
// Queries, epoch and resume are feature-detected, so the page also works with older servers.

// ---------------------------------------------------------------------------------------------
// Small helpers

const $ = (id) => document.getElementById(id);

/** Creates an element with a class and optional text (always set as text). */
function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined && text !== null) node.textContent = String(text);
  return node;
}

/** Riemann's states collapse into five display classes, in order of severity. */
function stateClass(state) {
  const s = String(state ?? '').trim().toLowerCase();
  if (s === 'ok') return 'ok';
  if (s === 'critical' || s === 'failure' || s === 'fatal' || s === 'error') return 'critical';
  if (s === 'warning' || s === 'warn') return 'warning';
  if (s === 'expired') return 'expired';
  return 'other';
}
const RANK = { critical: 0, warning: 1, expired: 2, other: 3, ok: 4 };
const CLASS_ORDER = ['critical', 'warning', 'expired', 'other', 'ok'];
const PALETTE = {
  critical: '#e03131', warning: '#f59f00', expired: '#6c757d', other: '#1c7ed6', ok: '#2b8a3e',
};

/** Fields of Riemann's JSON event form; every other top-level key is a custom attribute. */
const STANDARD = new Set(['host', 'service', 'state', 'description', 'metric', 'tags', 'time', 'ttl']);

function keyOf(ev) {
  return JSON.stringify([ev.host ?? null, ev.service ?? null]);
}

/** Event time in ms since the epoch, or null. Accepts ISO strings and unix seconds. */
function parseTime(t) {
  if (typeof t === 'number' && Number.isFinite(t)) return t * 1000;
  if (typeof t === 'string') {
    const ms = Date.parse(t);
    return Number.isNaN(ms) ? null : ms;
  }
  return null;
}

const absFormat = new Intl.DateTimeFormat(undefined, {
  weekday: 'short', year: 'numeric', month: 'short', day: 'numeric',
  hour: '2-digit', minute: '2-digit', second: '2-digit', timeZoneName: 'short',
});
const clockFormat = new Intl.DateTimeFormat(undefined, {
  hour: '2-digit', minute: '2-digit', second: '2-digit',
});
const absolute = (ms) => absFormat.format(new Date(ms));
const clock = (ms) => clockFormat.format(new Date(ms));

const pad2 = (n) => String(n).padStart(2, '0');
/** "42s", "5m 03s", "2h 07m", "3d 04h". */
function relative(ms) {
  const s = Math.max(0, Math.floor(ms / 1000));
  if (s < 60) return `${s}s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m}m ${pad2(s % 60)}s`;
  const h = Math.floor(m / 60);
  if (h < 24) return `${h}h ${pad2(m % 60)}m`;
  return `${Math.floor(h / 24)}d ${pad2(h % 24)}h`;
}

function formatMetric(m) {
  if (m === undefined || m === null) return '';
  if (typeof m !== 'number' || !Number.isFinite(m)) return String(m);
  if (Number.isInteger(m)) return m.toLocaleString();
  const a = Math.abs(m);
  if (a !== 0 && a < 0.001) return m.toPrecision(3);
  return m.toLocaleString(undefined, { maximumFractionDigits: a >= 100 ? 1 : a >= 1 ? 2 : 4 });
}

// ---------------------------------------------------------------------------------------------
// The index: every (host, service) with a state, as the server last described it.

/**
 * entry = { key, event, cls, since, sinceExact, row }
 *   since      ms when the current state began (change time), or a lower bound from a snapshot
 *   sinceExact false when only a snapshot told us about it (the state began at or before `since`)
 *   row        the <tr> while the entry is a problem within the rendered window, else null
 *
 * Only the first `renderLimit` problems have rows: a meltdown with 20,000 problems must not turn
 * the page into a 20,000-row table (layout alone would freeze it). The rest are counted, and
 * "show more" extends the window.
 */
const index = new Map();
/** Problem entries in display order: worst state first, then longest-standing. */
let problems = [];
const counts = { critical: 0, warning: 0, expired: 0, other: 0, ok: 0 };

function compareEntries(a, b) {
  return (RANK[a.cls] - RANK[b.cls])
    || (a.since - b.since)
    || String(a.event.host ?? '').localeCompare(String(b.event.host ?? ''))
    || String(a.event.service ?? '').localeCompare(String(b.event.service ?? ''))
    || (a.key < b.key ? -1 : a.key > b.key ? 1 : 0);
}

/** Position at which `entry` belongs in `problems` (binary search). */
function insertionPoint(entry) {
  let lo = 0;
  let hi = problems.length;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if (compareEntries(problems[mid], entry) < 0) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

const tbody = $('problem-rows');
const RENDER_STEP = 200;
let renderLimit = RENDER_STEP;

function dropRow(entry) {
  if (entry.row) entry.row.remove();
  entry.row = null;
  entry.cells = null;
}

/**
 * Puts a problem entry in its sorted place. Its row, if it has one, is reused (and should be
 * filled by the caller); inside the window it is created when missing, outside it is dropped.
 */
function insertProblem(entry) {
  const at = insertionPoint(entry);
  problems.splice(at, 0, entry);
  if (at >= renderLimit) {
    dropRow(entry);
    return;
  }
  if (!entry.row) createRow(entry);
  const next = problems[at + 1];
  tbody.insertBefore(entry.row, next && next.row ? next.row : null);
  // The window holds renderLimit rows: whoever was pushed out of it loses its row.
  if (problems.length > renderLimit) dropRow(problems[renderLimit]);
}

/** Takes an entry out of the order. Its row stays (for reuse) until the caller drops it. */
function removeProblem(entry) {
  // Callers remove before changing the entry, so it is still where the order puts it.
  let at = insertionPoint(entry);
  if (problems[at] !== entry) at = problems.indexOf(entry);
  if (at < 0) return;
  problems.splice(at, 1);
  // Someone moves up into the window.
  if (at < renderLimit && problems.length >= renderLimit) {
    const moved = problems[renderLimit - 1];
    if (!moved.row) {
      createRow(moved);
      tbody.append(moved.row);
    }
  }
}

/** Makes the DOM match the first renderLimit problems, with as few moves as possible. */
function renderWindow() {
  const shown = Math.min(problems.length, renderLimit);
  for (let i = renderLimit; i < problems.length; i += 1) if (problems[i].row) dropRow(problems[i]);
  let cursor = tbody.firstChild;
  for (let i = 0; i < shown; i += 1) {
    const entry = problems[i];
    if (entry.row) fillRow(entry);
    else createRow(entry);
    if (entry.row === cursor) cursor = cursor.nextSibling;
    else tbody.insertBefore(entry.row, cursor);
  }
  while (cursor) {
    const next = cursor.nextSibling;
    cursor.remove();
    cursor = next;
  }
}

// ---------------------------------------------------------------------------------------------
// Rows: created once per problem, then only the changed cells are touched.

function createRow(entry) {
  const tr = el('tr', 'row');
  tr.dataset.key = entry.key;
  tr.tabIndex = 0; // Enter opens the details
  if (entry.key === selectedKey) tr.classList.add('selected');
  const cells = {
    host: el('td', 'c-host'),
    service: el('td', 'c-service'),
    state: el('td', 'c-state'),
    metric: el('td', 'c-metric'),
    desc: el('td', 'c-desc'),
    age: el('td', 'c-age'),
    tags: el('td', 'c-tags'),
  };
  cells.badge = el('span', 'badge');
  cells.state.append(cells.badge);
  cells.time = el('time');
  cells.age.append(cells.time);
  cells.descText = el('span', 'desc-text');
  cells.desc.append(cells.descText);
  tr.append(cells.host, cells.service, cells.state, cells.metric, cells.desc, cells.age, cells.tags);
  entry.row = tr;
  entry.cells = cells;
  fillRow(entry);
  return tr;
}

function setText(node, text) {
  if (node.textContent !== text) node.textContent = text;
}

function setTitle(node, text) {
  if (text) node.setAttribute('title', text);
  else node.removeAttribute('title');
}

function fillName(td, value, label) {
  if (value === undefined || value === null || value === '') {
    td.classList.add('none');
    setText(td, `(no ${label})`);
  } else {
    td.classList.remove('none');
    setText(td, String(value));
  }
  td.dataset.label = label;
}

function fillRow(entry) {
  const ev = entry.event;
  const c = entry.cells;
  entry.row.dataset.state = entry.cls;
  fillName(c.host, ev.host, 'host');
  fillName(c.service, ev.service, 'service');
  c.badge.className = `badge s-${entry.cls}`;
  setText(c.badge, String(ev.state));
  const metric = formatMetric(ev.metric);
  setText(c.metric, metric);
  setTitle(c.metric, metric ? String(ev.metric) : '');
  const desc = ev.description == null ? '' : String(ev.description);
  setText(c.descText, desc);
  setTitle(c.desc, desc);
  fillAge(entry, Date.now());

  // Tags, then custom attributes as key=value.
  c.tags.replaceChildren();
  if (Array.isArray(ev.tags)) {
    for (const tag of ev.tags) c.tags.append(el('span', 'tag', tag));
  }
  for (const [k, v] of Object.entries(ev)) {
    if (STANDARD.has(k) || v === null || typeof v === 'object') continue;
    const attr = el('span', 'attr', `${k}=${v}`);
    attr.setAttribute('title', `${k}=${v}`);
    c.tags.append(attr);
  }
}

function fillAge(entry, now) {
  const t = entry.cells.time;
  const text = (entry.sinceExact ? '' : '≥ ') + relative(now - entry.since);
  setText(t, text);
  const stamp = `${entry.since}|${entry.sinceExact}|${entry.event.state}|${entry.event.time}`;
  if (t.dataset.stamp !== stamp) {
    t.dataset.stamp = stamp;
    t.setAttribute('datetime', new Date(entry.since).toISOString());
    const updated = parseTime(entry.event.time);
    let tip = entry.sinceExact
      ? `${entry.event.state} since ${absolute(entry.since)}`
      : `${entry.event.state} since at least ${absolute(entry.since)} (the state began before this dashboard connected)`;
    if (updated !== null && updated !== entry.since) tip += `\nlast update ${absolute(updated)}`;
    t.setAttribute('title', tip);
  }
}

/** Highlights a row that just changed. Alternating between two identically animated classes
 *  restarts the animation without forcing a layout. */
function flash(row) {
  const next = row.classList.contains('flash-a') ? 'flash-b' : 'flash-a';
  row.classList.remove('flash-a', 'flash-b');
  row.classList.add(next);
}

// ---------------------------------------------------------------------------------------------
// Applying server messages to the index.

let lastSeq = null;

function applySnapshot(msg) {
  const events = Array.isArray(msg.events) ? msg.events : [];
  const since = Array.isArray(msg.since) ? msg.since : null; // optional: when each state began
  const now = Date.now();
  const seen = new Set();
  for (const k of CLASS_ORDER) counts[k] = 0;
  const nextProblems = [];
  const changedKeys = new Set();

  events.forEach((ev, i) => {
    if (!ev || typeof ev !== 'object' || ev.state === undefined || ev.state === null || ev.state === '') return;
    const key = keyOf(ev);
    seen.add(key);
    const cls = stateClass(ev.state);
    const prev = index.get(key);
    const evTime = parseTime(ev.time) ?? now;
    let began = since ? parseTime(since[i]) : null;
    let exact = began !== null;
    if (began === null) {
      if (prev && prev.event.state === ev.state && prev.since <= evTime) {
        began = prev.since;
        exact = prev.sinceExact;
      } else {
        began = evTime;
        exact = false;
      }
    }
    const entry = prev ?? { key, row: null, cells: null };
    const changed = !prev || prev.event.state !== ev.state;
    entry.event = ev;
    entry.cls = cls;
    entry.since = began;
    entry.sinceExact = exact;
    index.set(key, entry);
    counts[cls] += 1;
    if (cls === 'ok') {
      dropRow(entry);
    } else {
      if (changed && prev) changedKeys.add(key);
      nextProblems.push(entry);
    }
  });

  for (const [key, entry] of index) {
    if (!seen.has(key)) {
      dropRow(entry);
      index.delete(key);
    }
  }

  nextProblems.sort(compareEntries);
  problems = nextProblems;
  renderWindow();
  if (grid.built) gridRefresh();
  else if (view === 'grid') gridRebuild();
  for (const key of changedKeys) {
    const row = index.get(key)?.row;
    if (row) flash(row);
  }

  if (typeof msg.seq === 'number') lastSeq = msg.seq;
  headerScheduled = true;
  renderHeader(); // snapshots are rare: render now rather than next frame
  if (selectedKey) renderDetails();
  resolveSince();
  return problems.length;
}

function applyChange(msg) {
  if (typeof msg.seq === 'number') {
    if (lastSeq !== null && msg.seq <= lastSeq) return; // already have it (resume overlap)
    lastSeq = msg.seq;
  }
  const ev = msg.event;
  if (!ev || typeof ev !== 'object' || ev.state === undefined || ev.state === null) return;
  const key = keyOf(ev);
  const cls = stateClass(ev.state);
  const now = Date.now();
  if (msg.removed === true) {
    forgetEntry(key, ev, now);
    return;
  }
  let entry = index.get(key);
  const previousState = msg.previous_state ?? entry?.event.state ?? null;

  if (entry) {
    counts[entry.cls] -= 1;
    if (entry.cls !== 'ok') removeProblem(entry);
  } else {
    entry = { key, row: null, cells: null };
    index.set(key, entry);
  }
  entry.event = ev;
  entry.cls = cls;
  entry.since = parseTime(ev.time) ?? now;
  entry.sinceExact = true;
  counts[cls] += 1;

  if (cls === 'ok') {
    dropRow(entry);
  } else {
    if (entry.row) fillRow(entry);
    insertProblem(entry);
    if (entry.row) flash(entry.row);
  }
  gridUpdate(entry);
  logTransition(ev, previousState, now);
  scheduleHeader();
  if (key === selectedKey) {
    if (Array.isArray(details.history)) {
      details.history.unshift(msg);
      details.history.length = Math.min(details.history.length, HISTORY_SHOWN);
    }
    renderDetails();
  }
}

/**
 * The server removed a key (it stayed expired for longer than the server keeps expired keys):
 * it leaves every view, as it is gone from every fresh snapshot.
 */
function forgetEntry(key, ev, now) {
  if (key === selectedKey) closeDetails();
  const entry = index.get(key);
  if (entry) {
    counts[entry.cls] -= 1;
    if (entry.cls !== 'ok') removeProblem(entry);
    dropRow(entry);
    index.delete(key);
    gridForget(ev);
  }
  const who = `${ev.host ?? '(no host)'} · ${ev.service ?? '(no service)'}`;
  pushLog(logNote(`${who} removed: expired for longer than the server keeps expired services`, now));
  scheduleHeader();
}

// ---------------------------------------------------------------------------------------------
// Details: one (host, service) with its recent transitions (from /api/history when the server
// keeps history). Opened by clicking a row or pressing Enter on it.

const HISTORY_SHOWN = 50;
/** How far back (in seq) to look for a service's transitions. */
const HISTORY_WINDOW = 100_000;
const detailsPanel = $('details');
const detailsBody = $('details-body');
let selectedKey = null;
/** history: array of change messages newest first, or null; note: text shown instead. */
const details = { history: null, note: '', sinceNode: null };

const shortFormat = new Intl.DateTimeFormat(undefined, {
  month: 'short', day: 'numeric', hour: '2-digit', minute: '2-digit', second: '2-digit',
});

function rowOf(key) {
  return index.get(key)?.row ?? null;
}

function openDetails(key) {
  if (selectedKey) rowOf(selectedKey)?.classList.remove('selected');
  selectedKey = key;
  rowOf(key)?.classList.add('selected');
  details.history = null;
  details.note = 'Loading history…';
  detailsPanel.hidden = false;
  document.body.classList.add('details-open');
  renderDetails();
  detailsPanel.focus();
  loadHistory(key);
}

function closeDetails() {
  if (!selectedKey) return;
  const row = rowOf(selectedKey);
  row?.classList.remove('selected');
  selectedKey = null;
  detailsPanel.hidden = true;
  document.body.classList.remove('details-open');
  row?.focus();
}

/** A Riemann query literal: JSON string escapes are the query language's; absent is nil. */
const queryLiteral = (v) => (v === null || v === undefined ? 'nil' : JSON.stringify(String(v)));

/**
 * Reads `/api/history` for `query` from seq `since` onwards, page by page (oldest first), keeping
 * at most `keepLast` changes. Resolves to { changes, complete, note }: `complete` is false when
 * the pages ran out before the end of history; `note` explains a failure.
 */
async function fetchHistory(query, since, keepLast, maxPages = 5) {
  const PAGE = 10_000;
  let changes = [];
  let from = since;
  for (let page = 0; page < maxPages; page += 1) {
    const url = new URL('api/history', location.href);
    url.searchParams.set('query', query);
    url.searchParams.set('since', String(from));
    url.searchParams.set('limit', String(PAGE));
    if (dashboardToken) url.searchParams.set('token', dashboardToken);
    let body = null;
    let res;
    try {
      res = await fetch(url, { headers: { Accept: 'application/json' } });
      if ((res.headers.get('content-type') ?? '').includes('json')) body = await res.json();
    } catch (err) {
      return { changes, complete: false, note: `Could not load history: ${err.message}` };
    }
    if (!res.ok || !body || !Array.isArray(body.changes)) {
      if (res.status === 404) historyAvailable = false; // no endpoint, or --data-dir off
      const note = body?.error ? `No history: ${body.error}` : 'This server does not keep transition history.';
      return { changes, complete: false, note };
    }
    changes = changes.concat(body.changes.filter((c) => c && c.event && typeof c.seq === 'number'));
    if (changes.length > keepLast) changes = changes.slice(-keepLast);
    if (body.changes.length < PAGE) return { changes, complete: true, note: '' };
    from = body.changes.at(-1).seq;
  }
  return { changes, complete: false, note: '' };
}

/** Whether /api/history answered (it is absent on old servers and with --data-dir off). */
let historyAvailable = true;

/** Sets when an entry's current state began, as history says, and moves its row if needed. */
function pinSince(entry, began) {
  if (entry.sinceExact || began === null) return;
  entry.sinceExact = true;
  if (entry.cls !== 'ok') {
    removeProblem(entry);
    entry.since = began;
    insertProblem(entry);
    if (entry.row) fillAge(entry, Date.now());
  } else {
    entry.since = began;
  }
}

function keyQuery(key) {
  const [host, service] = JSON.parse(key);
  return `host = ${queryLiteral(host)} and service = ${queryLiteral(service)}`;
}

async function loadHistory(key) {
  const since = Math.max(0, (lastSeq ?? 0) - HISTORY_WINDOW);
  const { changes, complete, note } = await fetchHistory(keyQuery(key), since, HISTORY_SHOWN);
  if (key !== selectedKey) return; // the user moved on
  const mine = changes.filter((c) => keyOf(c.event) === key);
  const failed = note !== '';
  details.history = failed && mine.length === 0 ? null : mine.reverse();
  details.note = failed ? note
    : mine.length === 0 ? 'No transitions recorded recently.'
      : !complete ? 'Older transitions not shown.' : '';
  // History pins down when the current state began, which a snapshot alone cannot say.
  const entry = index.get(key);
  const latest = details.history?.[0];
  if (complete && entry && latest && latest.event.state === entry.event.state) {
    pinSince(entry, parseTime(latest.event.time));
  }
  renderDetails();
}

/** Serial number of the latest snapshot, so an outdated resolution pass stops. */
let resolveGeneration = 0;

/**
 * After a snapshot, asks history when each problem's current state began (a snapshot only says
 * when the service last reported). Batched, bounded, and skipped when the server has no history.
 */
async function resolveSince() {
  const generation = ++resolveGeneration;
  if (!historyAvailable || lastSeq === null) return;
  const upto = lastSeq;
  const keys = problems.slice(0, renderLimit).filter((e) => !e.sinceExact).map((e) => e.key).slice(0, 200);
  for (let i = 0; i < keys.length; i += 40) {
    const batch = keys.slice(i, i + 40);
    const query = batch.map((k) => `(${keyQuery(k)})`).join(' or ');
    const since = Math.max(0, upto - HISTORY_WINDOW);
    const { changes, complete } = await fetchHistory(query, since, Infinity, 3);
    if (generation !== resolveGeneration || !complete) return;
    const latest = new Map();
    for (const c of changes) if (c.seq <= upto) latest.set(keyOf(c.event), c);
    for (const [key, c] of latest) {
      const entry = index.get(key);
      if (entry && entry.event.state === c.event.state) pinSince(entry, parseTime(c.event.time));
    }
  }
}

function field(dl, label, value) {
  if (value === undefined || value === null || value === '') return;
  const dt = el('dt', null, label);
  const dd = el('dd');
  if (value instanceof Node) dd.append(value);
  else dd.textContent = String(value);
  dl.append(dt, dd);
}

function detailsSinceText(entry, now) {
  return entry.sinceExact
    ? ` for ${relative(now - entry.since)}, since ${absolute(entry.since)}`
    : ` for at least ${relative(now - entry.since)}, since ${absolute(entry.since)} or earlier`;
}

function renderDetails() {
  details.sinceNode = null;
  if (!selectedKey) return;
  const [host, service] = JSON.parse(selectedKey);
  setText($('details-title'), `${host ?? '(no host)'} · ${service ?? '(no service)'}`);
  const entry = index.get(selectedKey);
  const parts = [];
  if (!entry) {
    parts.push(el('p', 'details-note', 'Not in the current view (filtered out, or gone from the index).'));
  } else {
    const ev = entry.event;
    const now = Date.now();
    const head = el('p', 'details-state');
    head.append(el('span', `badge s-${entry.cls}`, ev.state));
    details.sinceNode = el('span', 'details-since', detailsSinceText(entry, now));
    head.append(details.sinceNode);
    parts.push(head);
    const dl = el('dl', 'details-fields');
    field(dl, 'Description', ev.description);
    field(dl, 'Metric', ev.metric === undefined || ev.metric === null ? null : String(ev.metric));
    if (Array.isArray(ev.tags) && ev.tags.length) {
      const tags = el('span');
      for (const t of ev.tags) tags.append(el('span', 'tag', t));
      field(dl, 'Tags', tags);
    }
    for (const [k, v] of Object.entries(ev)) {
      if (!STANDARD.has(k) && v !== null && typeof v !== 'object') field(dl, k, v);
    }
    const updated = parseTime(ev.time);
    if (updated !== null) field(dl, 'Event time', absolute(updated));
    if (typeof ev.ttl === 'number') field(dl, 'TTL', `${ev.ttl} s`);
    parts.push(dl);
  }
  parts.push(el('h3', null, 'Transitions'));
  if (Array.isArray(details.history) && details.history.length) {
    const ol = el('ol', 'history');
    for (const change of details.history) {
      const li = el('li', 'history-item');
      const at = parseTime(change.event.time);
      const time = el('time', 'history-time', at === null ? '' : shortFormat.format(new Date(at)));
      if (at !== null) time.setAttribute('title', absolute(at));
      const states = el('span', 'log-states');
      if (change.previous_state != null) {
        states.append(el('span', `badge small s-${stateClass(change.previous_state)}`, change.previous_state), el('span', 'arrow', '→'));
      }
      if (change.removed === true) {
        states.append(el('span', 'history-removed', 'removed (expired too long)'));
      } else {
        states.append(el('span', `badge small s-${stateClass(change.event.state)}`, change.event.state));
      }
      li.append(time, states);
      if (change.event.description != null && change.event.description !== '') {
        li.append(el('span', 'history-desc', change.event.description));
      }
      ol.append(li);
    }
    parts.push(ol);
  }
  if (details.note) parts.push(el('p', 'details-note', details.note));
  detailsBody.replaceChildren(...parts);
}

$('show-more').addEventListener('click', () => {
  renderLimit += RENDER_STEP * 5;
  renderWindow();
  scheduleHeader();
  resolveSince();
});

tbody.addEventListener('click', (e) => {
  const tr = e.target.closest('tr.row');
  if (!tr || String(window.getSelection() ?? '') !== '') return; // selecting text is not a click
  openDetails(tr.dataset.key);
});
tbody.addEventListener('keydown', (e) => {
  if ((e.key === 'Enter' || e.key === ' ') && e.target instanceof HTMLElement && e.target.matches('tr.row')) {
    e.preventDefault();
    openDetails(e.target.dataset.key);
  }
});
$('details-close').addEventListener('click', closeDetails);

// ---------------------------------------------------------------------------------------------
// Grid: hosts × services, one cell per pair, coloured by state. Built lazily (the first time the
// grid is shown), a chunk of rows per frame, then kept current one cell per change: a new host
// appends a row, a new service appends a column (one cell per existing row). A snapshot rebuilds.

const gridHead = $('grid-head');
const gridBody = $('grid-rows');
const gridPanel = $('grid-panel');
const GRID_ROWS_PER_CHUNK = 60;
const gridRowOf = new WeakMap(); // <tr> → its row record
const gridCollator = new Intl.Collator(undefined, { numeric: true, sensitivity: 'base' });
const nameKey = (v) => JSON.stringify(v ?? null);
const grid = {
  built: false,      // the DOM exists (or is being built) and is kept current
  hosts: [],         // [{ value, tr, cells }] in row order; tr null until its chunk is built
  hostIndex: new Map(), // nameKey(host) → row index
  services: [],      // service values in column order
  serviceIndex: new Map(), // nameKey(service) → column index
  builtRows: 0,      // rows [0, builtRows) have DOM
  building: false,
  generation: 0,
};

function gridCellClass(host, service) {
  const entry = index.get(JSON.stringify([host ?? null, service ?? null]));
  return entry ? `cell s-${entry.cls}` : 'cell empty-cell';
}

function gridCreateCell(host, service) {
  const td = document.createElement('td');
  td.className = gridCellClass(host, service);
  return td;
}

function gridHeaderCell(service) {
  const th = el('th', 'grid-service');
  th.scope = 'col';
  const label = el('span', service == null ? 'none' : null, service ?? '(no service)');
  th.append(label);
  th.setAttribute('title', service ?? '(no service)');
  th.dataset.service = service ?? '';
  return th;
}

function gridCreateRow(row) {
  const tr = document.createElement('tr');
  const th = el('th', row.value == null ? 'grid-host none' : 'grid-host', row.value ?? '(no host)');
  th.scope = 'row';
  th.setAttribute('title', row.value ?? '(no host)');
  tr.dataset.host = row.value ?? '';
  gridRowOf.set(tr, row);
  tr.append(th);
  row.cells = [];
  for (const service of grid.services) {
    const td = gridCreateCell(row.value, service);
    row.cells.push(td);
    tr.append(td);
  }
  row.tr = tr;
  return tr;
}

/** Builds pending rows, a chunk per frame, so a 500 × 50 grid never blocks the page for long. */
function gridBuildChunk(generation) {
  if (generation !== grid.generation) return;
  const frag = document.createDocumentFragment();
  const end = Math.min(grid.hosts.length, grid.builtRows + GRID_ROWS_PER_CHUNK);
  for (let i = grid.builtRows; i < end; i += 1) frag.append(gridCreateRow(grid.hosts[i]));
  gridBody.append(frag);
  grid.builtRows = end;
  if (grid.builtRows < grid.hosts.length) {
    requestAnimationFrame(() => gridBuildChunk(generation));
    setTimeout(() => gridBuildChunk(generation), 100); // rAF stalls in background tabs
  } else {
    grid.building = false;
    gridPanel.dataset.ready = 'true';
  }
  gridStatus();
}

function gridSchedule() {
  if (grid.building || grid.builtRows >= grid.hosts.length) return;
  grid.building = true;
  delete gridPanel.dataset.ready;
  const generation = grid.generation;
  requestAnimationFrame(() => gridBuildChunk(generation));
}

/** Throws the grid away and lays it out again from the index (sorted hosts and services). */
function gridRebuild() {
  grid.generation += 1;
  grid.built = true;
  grid.building = false;
  const hosts = new Map();
  const services = new Map();
  for (const entry of index.values()) {
    const h = entry.event.host ?? null;
    const s = entry.event.service ?? null;
    hosts.set(nameKey(h), h);
    services.set(nameKey(s), s);
  }
  const order = (a, b) => (a === null ? -1 : b === null ? 1 : gridCollator.compare(String(a), String(b)));
  grid.hosts = [...hosts.values()].sort(order).map((value) => ({ value, tr: null, cells: null }));
  grid.services = [...services.values()].sort(order);
  grid.hostIndex = new Map(grid.hosts.map((r, i) => [nameKey(r.value), i]));
  grid.serviceIndex = new Map(grid.services.map((s, i) => [nameKey(s), i]));
  grid.builtRows = 0;
  gridBody.replaceChildren();
  gridHead.replaceChildren(gridHead.firstElementChild, ...grid.services.map(gridHeaderCell));
  gridSchedule();
  gridStatus();
}

/**
 * After a snapshot: when every host and service of the grid is still there, the grid is kept
 * (cells recoloured where they differ, new hosts and services appended); otherwise rebuilt.
 */
function gridRefresh() {
  const hosts = new Map();
  const services = new Map();
  for (const entry of index.values()) {
    hosts.set(nameKey(entry.event.host), entry.event.host ?? null);
    services.set(nameKey(entry.event.service), entry.event.service ?? null);
  }
  const gone = grid.hosts.some((r) => !hosts.has(nameKey(r.value)))
    || grid.services.some((v) => !services.has(nameKey(v)));
  if (gone) {
    gridRebuild();
    return;
  }
  for (let i = 0; i < grid.builtRows; i += 1) {
    const row = grid.hosts[i];
    grid.services.forEach((service, col) => {
      const cls = gridCellClass(row.value, service);
      const td = row.cells[col];
      if (td.className !== cls) td.className = cls;
      if (td.hasAttribute('title')) td.removeAttribute('title'); // rewritten on the next hover
    });
  }
  for (const entry of index.values()) {
    if (!grid.hostIndex.has(nameKey(entry.event.host)) || !grid.serviceIndex.has(nameKey(entry.event.service))) {
      gridUpdate(entry);
    }
  }
  gridStatus();
}

/** One (host, service) changed: touch its cell only (or append a row / a column). */
function gridUpdate(entry) {
  if (!grid.built) return;
  const host = entry.event.host ?? null;
  const service = entry.event.service ?? null;
  let col = grid.serviceIndex.get(nameKey(service));
  if (col === undefined) {
    col = grid.services.length;
    grid.services.push(service);
    grid.serviceIndex.set(nameKey(service), col);
    gridHead.append(gridHeaderCell(service));
    for (let i = 0; i < grid.builtRows; i += 1) {
      const row = grid.hosts[i];
      const td = gridCreateCell(row.value, service);
      row.cells.push(td);
      row.tr.append(td);
    }
  }
  let r = grid.hostIndex.get(nameKey(host));
  if (r === undefined) {
    r = grid.hosts.length;
    grid.hosts.push({ value: host, tr: null, cells: null });
    grid.hostIndex.set(nameKey(host), r);
    if (!grid.building && grid.builtRows === r) {
      gridBody.append(gridCreateRow(grid.hosts[r]));
      grid.builtRows = r + 1;
    } else {
      gridSchedule();
    }
    gridStatus();
    return; // the new row reads its cells from the index
  }
  const row = grid.hosts[r];
  if (!row.tr) return; // its chunk is not built yet: it will read the index
  const td = row.cells[col];
  const cls = `cell s-${entry.cls}`;
  if (td.className !== cls) td.className = cls;
  if (td.hasAttribute('title')) td.setAttribute('title', gridTitle(entry));
}

/** A key left the index: its cell empties now; a host or service with no cell left goes soon. */
let gridTidyTimer = null;
function gridForget(ev) {
  if (!grid.built) return;
  const r = grid.hostIndex.get(nameKey(ev.host));
  const col = grid.serviceIndex.get(nameKey(ev.service));
  const td = r === undefined || col === undefined ? null : grid.hosts[r].cells?.[col];
  if (td) {
    td.className = 'cell empty-cell';
    td.removeAttribute('title');
  }
  // Removals come in bursts (what expired together goes together): one relayout for the burst.
  if (gridTidyTimer === null) {
    gridTidyTimer = setTimeout(() => {
      gridTidyTimer = null;
      if (grid.built) gridRefresh();
    }, 1000);
  }
}

function gridStatus() {
  setText($('grid-size'), grid.hosts.length
    ? `${grid.hosts.length.toLocaleString()} hosts × ${grid.services.length.toLocaleString()} services`
    : '');
  $('grid-empty').hidden = grid.hosts.length > 0 || !haveSnapshot;
}

function gridTitle(entry) {
  const ev = entry.event;
  const lines = [
    `host: ${ev.host ?? '(no host)'}`,
    `service: ${ev.service ?? '(no service)'}`,
    `state: ${ev.state}`,
  ];
  if (ev.metric !== undefined && ev.metric !== null) lines.push(`metric: ${String(ev.metric)}`);
  if (ev.description != null && ev.description !== '') lines.push(`description: ${String(ev.description)}`);
  const t = parseTime(ev.time);
  if (t !== null) lines.push(`time: ${absolute(t)}`);
  return lines.join('\n');
}

/** The (host, service) key of a grid cell, or null. */
function gridKeyOf(td) {
  if (!(td instanceof HTMLTableCellElement) || td.tagName !== 'TD') return null;
  const row = gridRowOf.get(td.parentElement);
  const col = td.cellIndex - 1;
  if (!row || col < 0 || col >= grid.services.length) return null;
  return JSON.stringify([row.value ?? null, grid.services[col] ?? null]);
}

// Tooltips are written when the pointer (or focus) reaches a cell, not for 25,000 cells up front;
// a cell that has one keeps it current on changes.
function gridHover(e) {
  const td = e.target.closest?.('td');
  const key = td && gridKeyOf(td);
  if (!key) return;
  const entry = index.get(key);
  if (entry) td.setAttribute('title', gridTitle(entry));
  else td.setAttribute('title', `${JSON.parse(key).map((v) => v ?? '(none)').join(' · ')}: no event`);
}
gridBody.addEventListener('mouseover', gridHover);
gridBody.addEventListener('focusin', gridHover);
gridBody.addEventListener('click', (e) => {
  const td = e.target.closest('td');
  const key = td && gridKeyOf(td);
  if (key && index.has(key)) openDetails(key);
});

// ---------------------------------------------------------------------------------------------
// Views: Problems / Grid, as tabs, kept in the URL as ?view=

const VIEWS = ['problems', 'grid'];
const tabs = [...document.querySelectorAll('.tabs [role="tab"]')];
let view = VIEWS.includes(new URLSearchParams(location.search).get('view')) ? new URLSearchParams(location.search).get('view') : 'problems';

function setView(next, { focus = false } = {}) {
  view = VIEWS.includes(next) ? next : 'problems';
  for (const tab of tabs) {
    const on = tab.dataset.view === view;
    tab.setAttribute('aria-selected', String(on));
    tab.tabIndex = on ? 0 : -1;
    if (on && focus) tab.focus();
  }
  $('problems-panel').hidden = view !== 'problems';
  gridPanel.hidden = view !== 'grid';
  document.body.dataset.view = view;
  if (view === 'grid' && !grid.built && haveSnapshot) gridRebuild();
  const url = new URL(location.href);
  if (view === 'problems') url.searchParams.delete('view');
  else url.searchParams.set('view', view);
  if (url.href !== location.href) history.replaceState(null, '', url);
}

for (const tab of tabs) {
  tab.addEventListener('click', () => setView(tab.dataset.view));
  tab.addEventListener('keydown', (e) => {
    const i = tabs.indexOf(tab);
    let j = null;
    if (e.key === 'ArrowRight') j = (i + 1) % tabs.length;
    else if (e.key === 'ArrowLeft') j = (i - 1 + tabs.length) % tabs.length;
    else if (e.key === 'Home') j = 0;
    else if (e.key === 'End') j = tabs.length - 1;
    if (j === null) return;
    e.preventDefault();
    setView(tabs[j].dataset.view, { focus: true });
  });
}

// ---------------------------------------------------------------------------------------------
// Rate chart: events/s and changes/min over the last hour, from the server's cumulative counters
// in `stats`. The series outlives sockets; a counter going backwards (server restart) starts a
// fresh baseline. Drawn by hand on a canvas, at most once per second.

const RATE_WINDOW_MS = 3600_000;
const rates = { events: [], changes: [] }; // [t ms, value]
let rateBase = null; // { at, events, changes }
let chartDrawnAt = 0;
let chartTimer = null;
const chartCanvas = $('rate-chart');

function trimSeries(series, now) {
  let drop = 0;
  while (drop < series.length && series[drop][0] < now - RATE_WINDOW_MS) drop += 1;
  if (drop) series.splice(0, drop);
}

function recordRates(msg) {
  const now = Date.now();
  const ev = typeof msg.events === 'number' ? msg.events : null;
  const ch = typeof msg.changes === 'number' ? msg.changes : null;
  if (ev === null && ch === null) return;
  if (rateBase && now > rateBase.at) {
    const dt = now - rateBase.at;
    if (ev !== null && rateBase.events !== null && ev >= rateBase.events) {
      rates.events.push([now, (ev - rateBase.events) * 1000 / dt]);
    }
    if (ch !== null && rateBase.changes !== null && ch >= rateBase.changes) {
      rates.changes.push([now, (ch - rateBase.changes) * 60_000 / dt]);
    }
  }
  // Backwards counters simply become the new baseline (no point is recorded for them).
  rateBase = { at: now, events: ev, changes: ch };
  trimSeries(rates.events, now);
  trimSeries(rates.changes, now);
  scheduleChart();
}

function scheduleChart() {
  if (chartTimer) return;
  const wait = Math.max(0, 1000 - (Date.now() - chartDrawnAt));
  chartTimer = setTimeout(() => {
    chartTimer = null;
    drawChart();
  }, wait);
}

const fmtRate = (v) => (v >= 100 ? String(Math.round(v)) : v >= 10 ? v.toFixed(1) : v.toFixed(2));

function drawChart() {
  chartDrawnAt = Date.now();
  const lastE = rates.events.at(-1);
  const lastC = rates.changes.at(-1);
  setText($('rate-events-now'), lastE ? fmtRate(lastE[1]) : '–');
  setText($('rate-changes-now'), lastC ? fmtRate(lastC[1]) : '–');
  chartCanvas.dataset.points = String(rates.events.length);
  if (document.hidden) return;
  const dpr = window.devicePixelRatio || 1;
  const w = chartCanvas.clientWidth;
  const h = chartCanvas.clientHeight;
  if (!w || !h) return;
  if (chartCanvas.width !== Math.round(w * dpr) || chartCanvas.height !== Math.round(h * dpr)) {
    chartCanvas.width = Math.round(w * dpr);
    chartCanvas.height = Math.round(h * dpr);
  }
  const ctx = chartCanvas.getContext('2d');
  ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
  ctx.clearRect(0, 0, w, h);
  const css = getComputedStyle(document.documentElement);
  const muted = css.getPropertyValue('--muted').trim() || '#5f6b7a';
  const line = css.getPropertyValue('--line').trim() || '#dfe3e8';
  const now = Date.now();
  const x0 = 44;
  const x1 = w - 8;
  const xOf = (t) => x0 + (x1 - x0) * (1 - (now - t) / RATE_WINDOW_MS);
  const bands = [
    { series: rates.events, colour: css.getPropertyValue('--other').trim() || '#1c7ed6', label: 'events/s', top: 6, bottom: h / 2 - 8 },
    { series: rates.changes, colour: css.getPropertyValue('--warning').trim() || '#f59f00', label: 'changes/min', top: h / 2 + 4, bottom: h - 16 },
  ];
  ctx.font = '11px system-ui, sans-serif';
  ctx.lineWidth = 1;
  for (const band of bands) {
    let max = 0;
    for (const [, v] of band.series) if (v > max) max = v;
    const top = max > 0 ? niceCeil(max) : 1;
    const yOf = (v) => band.bottom - (band.bottom - band.top) * (v / top);
    ctx.strokeStyle = line;
    ctx.beginPath();
    ctx.moveTo(x0, band.bottom + 0.5);
    ctx.lineTo(x1, band.bottom + 0.5);
    ctx.moveTo(x0, band.top + 0.5);
    ctx.lineTo(x1, band.top + 0.5);
    ctx.stroke();
    ctx.fillStyle = muted;
    ctx.textAlign = 'right';
    ctx.textBaseline = 'top';
    ctx.fillText(fmtRate(top).replace(/\.0+$/, ''), x0 - 4, band.top - 2);
    ctx.textBaseline = 'bottom';
    ctx.fillText('0', x0 - 4, band.bottom + 4);
    if (band.series.length) {
      ctx.strokeStyle = band.colour;
      ctx.lineWidth = 1.5;
      ctx.beginPath();
      band.series.forEach(([t, v], i) => {
        const x = xOf(t);
        const y = yOf(v);
        if (i === 0) ctx.moveTo(x, y);
        else ctx.lineTo(x, y);
      });
      ctx.stroke();
      ctx.lineWidth = 1;
    }
  }
  ctx.fillStyle = muted;
  ctx.textBaseline = 'bottom';
  ctx.textAlign = 'left';
  ctx.fillText('−60 min', x0, h);
  ctx.textAlign = 'center';
  ctx.fillText('−30 min', (x0 + x1) / 2, h);
  ctx.textAlign = 'right';
  ctx.fillText('now', x1, h);
}

/** 1, 2, 5 × 10^n at or above v. */
function niceCeil(v) {
  const p = 10 ** Math.floor(Math.log10(v));
  for (const m of [1, 2, 5, 10]) if (m * p >= v) return m * p;
  return 10 * p;
}

window.addEventListener('resize', scheduleChart);
document.addEventListener('visibilitychange', () => { if (!document.hidden) scheduleChart(); });

// ---------------------------------------------------------------------------------------------
// Live log

const LOG_CAP = 200;
const logList = $('log');
const pauseButton = $('pause');
let paused = false;
let pausedBuffer = [];

function logItem(ev, previousState, at) {
  const li = el('li', 'log-item');
  li.dataset.state = stateClass(ev.state);
  const time = el('time', 'log-time', clock(at));
  time.setAttribute('datetime', new Date(at).toISOString());
  time.setAttribute('title', absolute(at));
  const states = el('span', 'log-states');
  if (previousState !== null && previousState !== undefined) {
    states.append(el('span', `badge small s-${stateClass(previousState)}`, previousState), el('span', 'arrow', '→'));
  }
  states.append(el('span', `badge small s-${stateClass(ev.state)}`, ev.state));
  const who = el('span', 'log-who');
  who.append(
    el('span', ev.host == null ? 'log-host none' : 'log-host', ev.host ?? '(no host)'),
    el('span', 'sep', ' · '),
    el('span', ev.service == null ? 'log-service none' : 'log-service', ev.service ?? '(no service)'),
  );
  li.append(time, states, who);
  if (ev.description != null && ev.description !== '') {
    const d = el('span', 'log-desc', ev.description);
    d.setAttribute('title', String(ev.description));
    li.append(d);
  }
  return li;
}

function logNote(text, at) {
  const li = el('li', 'log-item note');
  const time = el('time', 'log-time', clock(at));
  time.setAttribute('title', absolute(at));
  li.append(time, el('span', 'log-note', text));
  return li;
}

function pushLog(li) {
  if (paused) {
    pausedBuffer.push(li);
    if (pausedBuffer.length > LOG_CAP) pausedBuffer.shift();
    updatePauseButton();
    return;
  }
  logList.prepend(li);
  while (logList.childElementCount > LOG_CAP) logList.lastElementChild.remove();
  $('log-empty').hidden = true;
}

function logTransition(ev, previousState, at) {
  pushLog(logItem(ev, previousState, at));
}

function updatePauseButton() {
  pauseButton.setAttribute('aria-pressed', String(paused));
  pauseButton.textContent = paused
    ? (pausedBuffer.length ? `Resume (${pausedBuffer.length} new)` : 'Resume')
    : 'Pause';
  $('log').classList.toggle('paused', paused);
}

function togglePause() {
  paused = !paused;
  if (!paused) {
    const buffered = pausedBuffer;
    pausedBuffer = [];
    for (const li of buffered) pushLog(li);
  }
  updatePauseButton();
}
pauseButton.addEventListener('click', togglePause);

// ---------------------------------------------------------------------------------------------
// Header: counts, title, favicon — coalesced to one update per frame.

let headerScheduled = false;
let lastFavicon = '';

function scheduleHeader() {
  if (headerScheduled) return;
  headerScheduled = true;
  requestAnimationFrame(renderHeader);
  // rAF does not run in background tabs; the title should still be right there.
  setTimeout(renderHeader, 250);
}

function renderHeader() {
  if (!headerScheduled) return;
  headerScheduled = false;
  const n = problems.length;
  setText($('problem-count'), String(n));
  const title = n > 0 ? `(${n}) statecast` : 'statecast';
  if (document.title !== title) document.title = title;

  const summary = $('summary');
  summary.replaceChildren();
  // Only non-ok counts: an event that arrives ok and stays ok is not a change, so the server
  // never pushes it and an "ok" count here would drift.
  for (const cls of CLASS_ORDER) {
    if (counts[cls] === 0 || cls === 'ok') continue;
    const li = el('li', `count s-${cls}`);
    li.dataset.state = cls;
    li.append(el('span', 'count-n', counts[cls]), el('span', 'count-label', ` ${cls}`));
    summary.append(li);
  }

  const more = $('more');
  more.hidden = n <= renderLimit;
  if (n > renderLimit) {
    setText($('more-text'), `Showing the worst ${renderLimit.toLocaleString()} of ${n.toLocaleString()} problems.`);
  }
  $('waiting').hidden = haveSnapshot;
  $('empty').hidden = !haveSnapshot || n > 0;
  $('empty').textContent = serverQuery
    ? 'Nothing matching this filter is in a non-ok state.'
    : 'All clear: nothing is in a non-ok state.';
  if (lastSeq !== null) setText($('seq'), String(lastSeq));

  const worst = !live ? 'stale' : counts.critical ? 'critical' : counts.warning ? 'warning' : n ? 'other' : 'ok';
  if (worst !== lastFavicon) {
    lastFavicon = worst;
    const colour = worst === 'stale' ? '#adb5bd' : PALETTE[worst];
    const svg = `<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 16 16"><circle cx="8" cy="8" r="7" fill="${colour}"/></svg>`;
    $('favicon').setAttribute('href', `data:image/svg+xml,${encodeURIComponent(svg)}`);
  }
}

// Keep "time in state" current. Only text that changed is written.
setInterval(() => {
  if (document.hidden) return;
  const now = Date.now();
  for (let i = 0; i < problems.length && i < renderLimit; i += 1) {
    if (problems[i].row) fillAge(problems[i], now);
  }
  const selected = selectedKey && index.get(selectedKey);
  if (selected && details.sinceNode) setText(details.sinceNode, detailsSinceText(selected, now));
}, 1000);

// ---------------------------------------------------------------------------------------------
// Banner (resets after a gap, server-side closes)

function showBanner(text) {
  setText($('banner-text'), text);
  $('banner').hidden = false;
}
$('banner-close').addEventListener('click', () => { $('banner').hidden = true; });

// ---------------------------------------------------------------------------------------------
// Filter (Riemann query), kept in the URL as ?query=

const filterInput = $('filter');
const filterError = $('filter-error');
/** What the user asked for (and what the URL says). */
let desiredQuery = new URLSearchParams(location.search).get('query')?.trim() ?? '';
/** `--dashboard-token`: taken from the page's own URL (`?token=`) and passed on to /ws and the API. */
const dashboardToken = new URLSearchParams(location.search).get('token') ?? '';
/** What the server confirmed it filters by ('' = everything). */
let serverQuery = '';
/** 'unknown' | 'yes' | 'no': whether this server understands queries. */
let querySupport = 'unknown';
/** A subscribe we sent and have no answer for yet. */
let pending = null;
let pendingTimer = null;
filterInput.value = desiredQuery;

function showFilterMessage(kind, text) {
  if (!text) {
    filterError.hidden = true;
    filterError.textContent = '';
    delete filterError.dataset.kind;
    filterInput.removeAttribute('aria-invalid');
    return;
  }
  filterError.dataset.kind = kind;
  filterError.textContent = text;
  filterError.hidden = false;
  if (kind === 'error') filterInput.setAttribute('aria-invalid', 'true');
  else filterInput.removeAttribute('aria-invalid');
}

function setUrlQuery(q) {
  const url = new URL(location.href);
  if (q) url.searchParams.set('query', q);
  else url.searchParams.delete('query');
  if (url.href !== location.href) history.replaceState(null, '', url);
}

function sendSubscribe(query) {
  if (!ws || ws.readyState !== WebSocket.OPEN) return;
  ws.send(JSON.stringify({ type: 'subscribe', query }));
  pending = { query, at: Date.now(), stats: 0 };
  clearTimeout(pendingTimer);
  // A server that ignores subscribe never answers: call it unsupported after a while
  // (or after two stats heartbeats, see handleStats).
  pendingTimer = setTimeout(() => subscribeUnanswered(), 6000);
  if (querySupport !== 'no' && query) showFilterMessage('info', 'applying filter…');
}

function subscribeUnanswered() {
  if (!pending) return;
  pending = null;
  clearTimeout(pendingTimer);
  querySupport = 'no';
  serverQuery = '';
  markFiltered();
  if (desiredQuery) {
    showFilterMessage('unsupported', 'This server does not support queries yet: showing all events.');
  }
}

function subscribeAnswered(msg) {
  const wasPending = pending;
  pending = null;
  clearTimeout(pendingTimer);
  querySupport = 'yes';
  if (msg.type === 'error') {
    showFilterMessage('error', String(msg.error ?? 'the server rejected this query'));
  } else {
    serverQuery = typeof msg.query === 'string' ? msg.query : wasPending.query;
    openFailuresWithQuery = 0; // the server accepts this query: it may go in the URL again
    showFilterMessage(null);
  }
  markFiltered();
}

function markFiltered() {
  const filtered = querySupport === 'yes' && serverQuery !== '';
  document.body.classList.toggle('filtered', filtered);
  setText($('problems-title'), filtered ? 'Problems (filtered)' : 'Problems');
  scheduleHeader();
}

function applyFilter() {
  const q = filterInput.value.trim();
  desiredQuery = q;
  setUrlQuery(q);
  const open = ws && ws.readyState === WebSocket.OPEN && (snapshotOnThisSocket || resumedOnThisSocket);
  if (q === '') {
    showFilterMessage(null);
    if (open && querySupport === 'yes') {
      sendSubscribe(''); // an empty query is "everything"
    } else if (serverQuery !== '' || querySupport === 'unknown') {
      // Servers that cannot say "everything" over the socket: a fresh connection can.
      serverQuery = '';
      markFiltered();
      reconnectNow();
    }
    return;
  }
  if (open) sendSubscribe(q);
  // Otherwise the next connection carries it.
}

$('filter-form').addEventListener('submit', (e) => {
  e.preventDefault();
  applyFilter();
});
filterInput.addEventListener('search', () => {
  // The clear (×) button of a search field.
  if (filterInput.value === '' && desiredQuery !== '') applyFilter();
});
filterInput.addEventListener('keydown', (e) => {
  if (e.key === 'Escape') {
    filterInput.value = desiredQuery;
    filterInput.blur();
  }
});

// ---------------------------------------------------------------------------------------------
// Keyboard

document.addEventListener('keydown', (e) => {
  if (e.ctrlKey || e.metaKey || e.altKey) return;
  const t = e.target;
  const typing = t instanceof HTMLElement
    && (t.isContentEditable || t.tagName === 'INPUT' || t.tagName === 'TEXTAREA' || t.tagName === 'SELECT');
  if (typing) return;
  if (e.key === 'Escape' && selectedKey) {
    closeDetails();
  } else if (e.key === '/') {
    e.preventDefault();
    filterInput.focus();
    filterInput.select();
  } else if (e.key === 'p') {
    togglePause();
  } else if (e.key === 'g') {
    setView(view === 'grid' ? 'problems' : 'grid');
  }
});

// ---------------------------------------------------------------------------------------------
// Connection: status, reconnect with exponential backoff and jitter, watchdog.

const BACKOFF_MIN_MS = 500;
const BACKOFF_MAX_MS = 10_000;

let ws = null;
let attempt = 0;
let retryTimer = null;
let retryAt = 0;
let live = false;
let haveSnapshot = false;         // ever, on any connection
let snapshotOnThisSocket = false;
let resumedOnThisSocket = false;
let lastMessageAt = 0;
let lastStats = null;             // { at, events }
let statsIntervalMs = null;       // estimated from arrivals
let resumeEpoch = null;           // set when the server advertises resume support
let openFailuresWithQuery = 0;
let lastLiveAt = null;

function setConn(state, text) {
  const conn = $('conn');
  conn.dataset.state = state;
  setText($('conn-text'), text);
  $('retry').hidden = state !== 'reconnecting' && state !== 'offline';
  live = state === 'live';
  document.body.classList.toggle('stale', !live && haveSnapshot);
  setText($('as-of'), !live && lastLiveAt ? `showing data as of ${clock(lastLiveAt)}` : '');
  scheduleHeader();
}

/** Whether the current socket's URL carried the filter (so the server applied it from the start). */
let queryInUrl = false;

function wsUrl() {
  const url = new URL('ws', location.href);
  url.protocol = url.protocol === 'https:' ? 'wss:' : 'ws:';
  url.search = '';
  // A server that rejects the query answers the upgrade with 400, which a browser only sees as a
  // failed connection: after two such failures the filter is sent over the socket instead, where
  // the server's error message can be shown.
  queryInUrl = Boolean(desiredQuery) && openFailuresWithQuery < 2;
  if (queryInUrl) url.searchParams.set('query', desiredQuery);
  if (resumeEpoch !== null && lastSeq !== null) {
    url.searchParams.set('since', String(lastSeq));
    url.searchParams.set('epoch', String(resumeEpoch));
  }
  if (dashboardToken) url.searchParams.set('token', dashboardToken);
  return url.href;
}

function connect() {
  clearTimeout(retryTimer);
  retryTimer = null;
  if (!navigator.onLine) {
    setConn('offline', 'offline');
    return;
  }
  setConn('connecting', attempt ? 'reconnecting…' : 'connecting…');
  const resuming = resumeEpoch !== null && lastSeq !== null;
  let opened = false;
  let sock;
  try {
    sock = new WebSocket(wsUrl());
  } catch {
    scheduleReconnect();
    return;
  }
  ws = sock;
  historyAvailable = true; // the server may have been upgraded or restarted with history
  snapshotOnThisSocket = false;
  resumedOnThisSocket = false;
  pending = null;
  clearTimeout(pendingTimer);

  sock.addEventListener('open', () => {
    if (sock !== ws) return;
    opened = true;
    lastMessageAt = Date.now();
    if (queryInUrl) openFailuresWithQuery = 0;
  });
  sock.addEventListener('message', (e) => {
    if (sock !== ws) return;
    lastMessageAt = Date.now();
    let msg;
    try {
      msg = JSON.parse(e.data);
    } catch {
      return;
    }
    if (!msg || typeof msg !== 'object') return;
    if (resuming && !live && msg.type !== 'snapshot') {
      // Resumed: whatever comes first (replayed changes, or just a heartbeat when nothing was
      // missed) means the view is current again.
      if (!resumedOnThisSocket && msg.type !== 'change') {
        resumedOnThisSocket = true;
        pushLog(logNote('Reconnected: nothing was missed', Date.now()));
      }
      goLive();
    }
    handleMessage(msg);
  });
  sock.addEventListener('close', (e) => {
    if (sock !== ws) return;
    ws = null;
    if (!opened && queryInUrl) openFailuresWithQuery += 1;
    if (e.code === 1008) showBanner(`The server closed this dashboard's connection: ${e.reason || 'policy violation'}. Reconnecting.`);
    scheduleReconnect();
  });
}

function goLive() {
  attempt = 0;
  lastLiveAt = Date.now();
  setConn('live', 'live');
}

function handleMessage(msg) {
  switch (msg.type) {
    case 'snapshot': {
      const first = !snapshotOnThisSocket && !resumedOnThisSocket;
      const answered = pending !== null;
      if (typeof msg.query === 'string') {
        querySupport = 'yes';
        serverQuery = msg.query;
      } else if (first && queryInUrl && querySupport === 'yes') {
        serverQuery = desiredQuery; // this server is known to filter by ?query=
      } else if (first && !desiredQuery) {
        serverQuery = '';
      }
      if (typeof msg.epoch === 'string' || typeof msg.epoch === 'number') resumeEpoch = msg.epoch;
      if (answered) subscribeAnswered(msg);
      const wasEver = haveSnapshot;
      haveSnapshot = true;
      const n = applySnapshot(msg);
      snapshotOnThisSocket = true;
      markFiltered();
      const now = Date.now();
      const problemsText = `${n} problem${n === 1 ? '' : 's'}`;
      if (answered) {
        pushLog(logNote(serverQuery ? `Filter applied: ${problemsText}` : `Filter cleared: ${problemsText}`, now));
      } else if (msg.reset === true || (!first && !answered)) {
        // The server could not replay what this page missed (or it fell behind): say so.
        pushLog(logNote(`View reset: the server resent the full state (${problemsText})`, now));
        showBanner(`View reset at ${clock(now)}: the server could not replay the changes this page missed, `
          + 'so it resent the full state. The live log before this point may be incomplete.');
      } else {
        pushLog(logNote(`${wasEver ? 'Reconnected' : 'Connected'}: ${problemsText} in the snapshot`, now));
      }
      if (first) {
        goLive();
        // Feature-detect queries: ask over the socket unless this server is known to have
        // applied the ?query= it was given.
        const confirmed = typeof msg.query === 'string' || (queryInUrl && querySupport === 'yes');
        if (desiredQuery && !confirmed) sendSubscribe(desiredQuery);
      }
      break;
    }
    case 'change':
      if (!snapshotOnThisSocket && !resumedOnThisSocket) {
        resumedOnThisSocket = true; // the server is replaying what we missed: no snapshot comes
        pushLog(logNote('Reconnected: replaying the changes missed meanwhile', Date.now()));
      }
      applyChange(msg);
      break;
    case 'stats':
      handleStats(msg);
      break;
    case 'error':
      if (pending) subscribeAnswered(msg);
      else showBanner(`Server error: ${String(msg.error ?? 'unknown')}`);
      break;
    default:
      break; // unknown types are ignored: newer servers may send more
  }
}

function handleStats(msg) {
  const now = Date.now();
  recordRates(msg);
  if (typeof msg.clients === 'number') setText($('clients'), String(msg.clients));
  if (lastStats) {
    const gap = now - lastStats.at;
    statsIntervalMs = statsIntervalMs === null ? gap : statsIntervalMs * 0.8 + gap * 0.2;
    if (typeof msg.events === 'number' && typeof lastStats.events === 'number' && gap > 0) {
      const rate = Math.max(0, (msg.events - lastStats.events) * 1000 / gap);
      setText($('rate'), rate >= 100 ? String(Math.round(rate)) : rate.toFixed(1));
    }
  }
  lastStats = { at: now, events: msg.events };
  if (pending) {
    pending.stats += 1;
    if (pending.stats >= 2 && now - pending.at >= 1000) subscribeUnanswered();
  }
}

function backoffDelay(n) {
  const base = Math.min(BACKOFF_MAX_MS, BACKOFF_MIN_MS * 2 ** n);
  return base / 2 + Math.random() * base / 2; // "equal jitter": never hammer, never all at once
}

function scheduleReconnect() {
  clearTimeout(retryTimer);
  lastStats = null;
  if (!navigator.onLine) {
    setConn('offline', 'offline');
    return;
  }
  const delay = backoffDelay(attempt);
  attempt += 1;
  retryAt = Date.now() + delay;
  retryTimer = setTimeout(connect, delay);
  updateCountdown();
}

function updateCountdown() {
  if (!retryTimer) return;
  const secs = Math.max(0, Math.ceil((retryAt - Date.now()) / 1000));
  setConn('reconnecting', `reconnecting in ${secs}s`);
}

function reconnectNow() {
  const sock = ws;
  ws = null;
  if (sock) sock.close(1000, 'reconnecting');
  attempt = 0;
  connect();
}

$('retry').addEventListener('click', reconnectNow);
window.addEventListener('online', () => { if (!ws) reconnectNow(); });
window.addEventListener('offline', () => {
  if (!ws) {
    clearTimeout(retryTimer);
    retryTimer = null;
    setConn('offline', 'offline');
  }
});

// Countdown display and watchdog: a socket that went silent (sleep, dead NAT) is replaced.
setInterval(() => {
  if (retryTimer) updateCountdown();
  if (ws && live && statsIntervalMs !== null) {
    const silentFor = Date.now() - lastMessageAt;
    if (silentFor > Math.max(10_000, statsIntervalMs * 5)) {
      pushLog(logNote(`No data for ${relative(silentFor)}: reconnecting`, Date.now()));
      const sock = ws;
      ws = null;
      sock.close();
      scheduleReconnect();
    }
  }
}, 250);

// Hooks for the browser tests and for curious engineers in the console (read-only data).
window.statecast = {
  get connected() { return live; },
  get problems() { return problems.map((e) => e.event); },
  get seq() { return lastSeq; },
  get querySupport() { return querySupport; },
  get view() { return view; },
  /** Rate series: { events: [[ms, events/s]…], changes: [[ms, changes/min]…] } (copies). */
  get rates() { return { events: rates.events.map((p) => [...p]), changes: rates.changes.map((p) => [...p]) }; },
  get gridSize() { return { hosts: grid.hosts.length, services: grid.services.length, builtRows: grid.builtRows }; },
};

setView(view);

updatePauseButton();
scheduleHeader();
connect();
