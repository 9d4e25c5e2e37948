// statecast dashboard: one websocket, one in-memory model, and DOM updates per change. This file
// wires the modules together; each does one job:
//
//   js/connection.js     the websocket's states (connecting … live … refused), backoff, watchdog
//   js/model.js          pure: entries, counts, acks, silences          (tested with node --test)
//   js/order.js          pure: sorting, grouping, the table's rows        (tested with node --test)
//   js/flap.js           pure: flap damping, whether a change notifies    (tested with node --test)
//   js/filter.js         the Riemann query filter (?query=), with a hint for unquoted values
//   js/notifications.js  browser notifications and sound (opt-in, remembered)
//   js/actions.js        ack / unack / clear / silences over the HTTP API
//   js/silence-log.js    pure: the live log's sentences for a silence created, edited, deleted (node --test)
//   js/settings.js       theme and clock toggles (remembered)
//   js/views/*.js        problems, grid, details, log, chart, header, silences
//
// Event text is attacker-controlled. Everything that comes from the server is put on the page with
// textContent / setAttribute('title' | 'datetime' | 'data-*') only — never innerHTML, never a URL
// attribute. The page's Content-Security-Policy forbids inline scripts and styles as a second line.
//
// Protocol (GET /ws, JSON text frames; defined by the server's src/protocol/, listed in the README's
// "Websocket /ws", one example each in tests/fixtures/frames/, which tests/browser/model reads):
//   {"type":"snapshot","seq":S,"epoch":E,"reset":R,"events":[E…],"acks":[…],"silences":[…],"silenced":[[H,S]…]}
//   {"type":"change","seq":N,"previous_state":P,"event":E,"silenced":true?}  one change
//   {"type":"change",…,"removed":true,"cleared_by":"name"?}  E left the server's index
//   {"type":"ack",…} {"type":"unack",…} {"type":"silence",…}      operator actions (README, Operator actions;
//   {"type":"silences",…}: the whole set, from servers and history before silence deltas)
//   {"type":"stats","clients":C,"events":T,"changes":K}            periodic heartbeat
//   {"type":"error","error":"…"}                                   answer to a bad subscribe
// Client → server: {"type":"subscribe","query":Q} (a fresh snapshot, or an error frame).
// URL: /ws?query=Q filters from the start; /ws?since=SEQ&epoch=E resumes after a reconnect.

import { $, setText, setSentence, coalesce, refreshTimes } from './js/dom.js';
import { silenceNotes } from './js/silence-log.js';
import { clock, relative, fmtRate } from './js/format.js';
import { Model, keyOf, parseTime, splitKey } from './js/model.js';
import { Connection } from './js/connection.js';
import { createFilter } from './js/filter.js';
import { createNotifications } from './js/notifications.js';
import { createActions, rememberedBy } from './js/actions.js';
import { createSettings } from './js/settings.js';
import { createProblemsView, RENDER_STEP } from './js/views/problems.js';
import { createGrid } from './js/views/grid.js';
import { createDetails, createHistory, keyQuery, HISTORY_WINDOW } from './js/views/details.js';
import { createLog } from './js/views/log.js';
import { createChart } from './js/views/chart.js';
import { createHeader } from './js/views/header.js';
import { createSilences } from './js/views/silences.js';

const params = new URLSearchParams(location.search);
/** `--dashboard-token`: taken from the page's own URL (`?token=`) and passed on to /ws and the API. */
const token = params.get('token') ?? '';

function urlParam(name) {
  return new URLSearchParams(location.search).get(name) ?? '';
}
function setUrlParam(name, value) {
  const url = new URL(location.href);
  if (value) url.searchParams.set(name, value);
  else url.searchParams.delete(name);
  if (url.href !== location.href) history.replaceState(null, '', url);
}

const describe = (ev) => `${ev.host ?? '(no host)'} · ${ev.service ?? '(no service)'}`;

const model = new Model();
const actions = createActions({ token });
const historyApi = createHistory({ token });
const log = createLog();
const chart = createChart();
const notifications = createNotifications({ describe });

let selectedKey = null;
const problems = createProblemsView({
  model,
  onOpen: (key) => details.open(key),
  onAck: async (key, action) => {
    const by = $('details-by')?.value.trim() || rememberedBy();
    if (action === 'unack' && by) {
      const answer = await actions.unack(key, by);
      if (!answer.ok) showBanner(`Could not remove the acknowledgement: ${answer.error}`);
    } else details.open(key, { focusAck: action === 'ack' });
  },
  isSelected: (key) => key === selectedKey,
  urlParam,
  setUrlParam,
});
const grid = createGrid({ model, onOpen: (key) => details.open(key), haveSnapshot: () => model.haveSnapshot });
const details = createDetails({
  model,
  history: historyApi,
  actions,
  onOpened: (key) => {
    selectedKey = key;
    render();
  },
  onClose: (key) => {
    selectedKey = null;
    render.now();
    problems.rowOf(key)?.focus();
  },
  onPinned: () => render(),
});
const silences = createSilences({ model, actions });

let live = false;
let lastLiveAt = null;
const filter = createFilter({
  send: (obj) => conn.send(obj),
  isOpen: () => conn.open && (sync.snapshot || sync.resumed),
  reconnect: () => conn.retry(),
  onChange: () => markFiltered(),
});
const header = createHeader({ model, problemsView: problems, isLive: () => live, filtered: () => filter.filtered() });

const render = coalesce(() => {
  problems.render();
  header.render();
});
problems.onChange = () => render();

createSettings({
  onClock: () => {
    refreshTimes(document);
    problems.refill();
    render();
    details.render();
  },
  onTheme: () => chart.schedule(),
});

// ---------------------------------------------------------------------------------------------
// Banner (resets after a gap, refusals, server-side closes)

function showBanner(text) {
  setSentence($('banner-text'), text);
  $('banner').hidden = false;
}
$('banner-close').addEventListener('click', () => { $('banner').hidden = true; });

function markFiltered() {
  const filtered = filter.filtered();
  document.body.classList.toggle('filtered', filtered);
  setText($('problems-title'), filtered ? 'Problems (filtered)' : 'Problems');
  render();
}

// ---------------------------------------------------------------------------------------------
// Connection

/** Per socket: whether it sent a snapshot, or is resuming (replayed changes, no snapshot). */
const sync = { snapshot: false, resumed: false, resuming: false };
let resumeEpoch = null;
let loadedRates = false;

function wsUrl() {
  const url = new URL('ws', location.href);
  url.protocol = url.protocol === 'https:' ? 'wss:' : 'ws:';
  url.search = '';
  const q = filter.forUrl();
  if (q) url.searchParams.set('query', q);
  sync.resuming = resumeEpoch !== null && model.seq !== null;
  if (sync.resuming) {
    url.searchParams.set('since', String(model.seq));
    url.searchParams.set('epoch', String(resumeEpoch));
  }
  if (token) url.searchParams.set('token', token);
  return url.href;
}

const REFUSALS = {
  token: (error) => (token
    ? `The server refused this dashboard (401: ${error}). Check the ?token= in this page's address against the server's --dashboard-token.`
    : `The server refused this dashboard (401: ${error}). Open the page with ?token=… (the server's --dashboard-token).`),
  forbidden: (error) => `The server refused this dashboard (403: ${error}).`,
  origin: () => `The server refused this page's websocket (403): its origin ${location.origin} is not allowed. `
    + 'Open the dashboard at the server\'s own address, or start the server with an --allowed-origin that matches this origin.',
};

const conn = new Connection({
  url: wsUrl,
  onMessage: handleMessage,
  onState: showConnState,
  onFailedOpen: () => { if (filter.inUrl) filter.urlFailures += 1; },
  onProbe: (verdict) => {
    if (verdict.kind === 'query') filter.onUrlRejected(verdict.error);
    else if (REFUSALS[verdict.kind]) {
      conn.refusal = REFUSALS[verdict.kind](verdict.error);
      showBanner(conn.refusal);
    }
  },
});

function showConnState(state, detail) {
  const el = $('conn');
  let shown = state;
  let text = state;
  if (state === 'connecting' || state === 'syncing') {
    shown = 'connecting';
    text = conn.attempt ? 'reconnecting…' : 'connecting…';
  } else if (state === 'waiting') {
    shown = 'reconnecting';
    text = `reconnecting in ${conn.retryIn}s`;
  } else if (state === 'refused') {
    text = detail.startsWith('401') ? 'refused: token' : 'refused: origin';
  }
  // Before any snapshot the body says what the page waits for, or, refused, why it never will.
  const waiting = $('waiting');
  if (state === 'refused') {
    setSentence(waiting, `Not connected: ${conn.refusal ?? `the server refused this dashboard (${detail}).`}`);
    waiting.classList.add('refused');
  } else if (waiting.classList.contains('refused')) {
    setText(waiting, 'Waiting for the first snapshot…');
    waiting.classList.remove('refused');
  }
  if (state === 'syncing') {
    sync.snapshot = false;
    sync.resumed = false;
    filter.onSocket();
  }
  if (state === 'live') {
    lastLiveAt = Date.now();
  }
  if (state === 'waiting' && detail.startsWith('closed by the server') && el.dataset.state !== 'reconnecting') {
    showBanner(`The server ${detail.slice(3)}. Reconnecting.`);
  }
  if (state === 'waiting' && detail.startsWith('no data') && el.dataset.state === 'live') {
    log.note(`No data for ${detail.slice(12)}: reconnecting`, Date.now());
  }
  el.dataset.state = shown;
  setText($('conn-text'), text);
  $('retry').hidden = !['waiting', 'offline', 'refused'].includes(state);
  if (state !== 'waiting' || live) {
    live = state === 'live';
    document.body.classList.toggle('stale', !live && model.haveSnapshot);
    setText($('as-of'), !live && lastLiveAt ? `showing data as of ${clock(lastLiveAt)}` : '');
    render();
  }
}

function goLive() {
  conn.markLive();
}

function handleMessage(msg) {
  if (sync.resuming && !live && msg.type !== 'snapshot') {
    // Resumed: whatever comes first (replayed changes, or just a heartbeat when nothing was
    // missed) means the view is current again.
    if (!sync.resumed && msg.type !== 'change') {
      sync.resumed = true;
      log.note('Reconnected: nothing was missed', Date.now());
    }
    goLive();
  }
  switch (msg.type) {
    case 'snapshot': onSnapshot(msg); break;
    case 'change':
      if (!sync.snapshot && !sync.resumed) {
        sync.resumed = true; // the server is replaying what we missed: no snapshot comes
        log.note('Reconnected: replaying the changes missed meanwhile', Date.now());
      }
      onChange(msg);
      break;
    case 'ack': {
      const key = model.applyAck(msg);
      if (key === null) break;
      const ack = msg.ack ?? {};
      log.note(`${describe(ack)} acknowledged by ${ack.by || 'someone'}${ack.note ? `: ${ack.note}` : ''}`, Date.now());
      afterAction(key);
      break;
    }
    case 'unack': {
      const key = model.applyUnack(msg);
      if (key === null) break;
      const why = { resolved: 'it recovered', expired: 'it expired', removed: 'the service left the index', deleted: msg.by ? `removed by ${msg.by}` : 'removed' }[msg.reason] ?? 'ended';
      log.note(`${describe(msg)} acknowledgement ended: ${why}`, Date.now());
      afterAction(key);
      break;
    }
    case 'silence':
    case 'silences': {
      const before = model.silences;
      const flipped = msg.type === 'silence' ? model.applySilence(msg) : model.applySilences(msg);
      if (flipped === null) break;
      const now = Date.now();
      for (const text of silenceNotes(before, model.silences, { now, by: msg.by, change: msg.change })) log.note(text, now);
      silences.render();
      afterAction(null);
      break;
    }
    case 'stats': onStats(msg); break;
    case 'error':
      if (!filter.onError(msg)) showBanner(`Server error: ${String(msg.error ?? 'unknown')}`);
      break;
    default:
      break; // unknown types are ignored: newer servers may send more
  }
}

function afterAction(key) {
  if (key !== null) problems.markChanged(key);
  render();
  if (selectedKey && (key === null || key === selectedKey)) details.render();
}

function onSnapshot(msg) {
  const first = !sync.snapshot && !sync.resumed;
  sync.snapshot = true; // before the filter's bookkeeping, which may subscribe on this socket
  if (typeof msg.epoch === 'string' || typeof msg.epoch === 'number') resumeEpoch = msg.epoch;
  const answered = filter.onSnapshot(msg, first);
  const wasEver = model.haveSnapshot;
  const { changed, removed, problems: n } = model.applySnapshot(msg, Date.now());
  for (const key of changed) problems.markChanged(key);
  if (selectedKey && removed.includes(selectedKey)) details.render();
  if (grid.grid.built) grid.refresh();
  else if (currentView === 'grid') grid.rebuild();
  silences.render();
  markFiltered();
  render.now(); // snapshots are rare: render now rather than next frame
  if (selectedKey) details.render();
  const now = Date.now();
  const problemsText = `${n} problem${n === 1 ? '' : 's'}`;
  if (answered) {
    log.note(filter.server ? `Filter applied: ${problemsText}` : `Filter cleared: ${problemsText}`, now);
  } else if (msg.reset === true || !first) {
    // The server could not replay what this page missed (or it fell behind): say so.
    log.note(`View reset: the server resent the full state (${problemsText})`, now);
    showBanner(`View reset at ${clock(now)}: the server could not replay the changes this page missed, `
      + 'so it resent the full state. The live log before this point may be incomplete.');
  } else {
    log.note(`${wasEver ? 'Reconnected' : 'Connected'}: ${problemsText} in the snapshot`, now);
  }
  if (first) goLive();
  if (!loadedRates) {
    loadedRates = true;
    loadRates();
  }
  resolveSince();
}

function onChange(msg) {
  const now = Date.now();
  const result = model.applyChange(msg, now);
  if (!result) return;
  const ev = msg.event;
  if (result.removed) {
    if (result.key === selectedKey) details.render();
    grid.forget(ev);
    notifications.flaps.forget(result.key);
    log.note(result.clearedBy
      ? `${describe(ev)} cleared by ${result.clearedBy}`
      : `${describe(ev)} removed: expired for longer than the server keeps expired services`, now);
    render();
    return;
  }
  problems.markChanged(result.key);
  grid.update(result.entry);
  const status = model.status(result.key);
  const { kind, flapping } = notifications.onChange(result, status, now);
  log.transition(ev, result.previousState, now, kind === 'flapping' ? 'flapping' : flapping ? 'flapping' : '');
  render();
  if (result.key === selectedKey) details.addChange(msg);
}

function onStats(msg) {
  // The chart and the header's events/s are one figure, from one computation.
  const rate = chart.record(msg);
  filter.onStats();
  if (typeof msg.clients === 'number') setText($('clients'), String(msg.clients));
  if (rate !== null) setText($('rate'), fmtRate(Math.max(0, rate)));
}

/** The hour before this page connected, for the chart (absent on older servers: no chart gap). */
async function loadRates() {
  const url = new URL('api/rates', location.href);
  if (token) url.searchParams.set('token', token);
  try {
    const res = await fetch(url, { headers: { Accept: 'application/json' } });
    if (!res.ok) return;
    const body = await res.json();
    if (Array.isArray(body?.samples)) chart.loadHistory(body.samples);
  } catch {
    // no history for the chart: it fills from the live stats
  }
}

/** Serial number of the latest snapshot, so an outdated resolution pass stops. */
let resolveGeneration = 0;

/**
 * After a snapshot, asks history when each problem's current state began (a snapshot only says
 * when the service last reported). Batched, bounded, and skipped when the server has no history.
 */
async function resolveSince() {
  const generation = ++resolveGeneration;
  if (!historyApi.available || model.seq === null) return;
  const upto = model.seq;
  const keys = problems.order.slice(0, problems.limit).filter((e) => !e.sinceExact).map((e) => e.key).slice(0, 200);
  for (let i = 0; i < keys.length; i += 40) {
    const batch = keys.slice(i, i + 40);
    const query = batch.map((k) => `(${keyQuery(k)})`).join(' or ');
    const since = Math.max(0, upto - HISTORY_WINDOW);
    const { changes, complete } = await historyApi.fetch(query, since, Infinity, 3);
    if (generation !== resolveGeneration || !complete) return;
    const latest = new Map();
    for (const c of changes) if (c.seq <= upto) latest.set(keyOf(c.event), c);
    let moved = false;
    for (const [key, c] of latest) {
      const entry = model.entries.get(key);
      if (entry && entry.event.state === c.event.state) moved = model.pinSince(key, parseTime(c.event.time)) || moved;
    }
    if (moved) {
      problems.refill();
      render();
    }
  }
}

$('retry').addEventListener('click', () => conn.retry());

// ---------------------------------------------------------------------------------------------
// Sorting and grouping

for (const button of document.querySelectorAll('#problems thead th[data-sort] button')) {
  button.addEventListener('click', () => {
    problems.setSort(button.closest('th').dataset.sort);
    render();
  });
}

const groupSelect = $('group-by');
function refreshGroupOptions() {
  const current = problems.group;
  const attrs = new Set(model.attributeNames());
  if (current.startsWith('attr:')) attrs.add(current.slice(5));
  const existing = [...groupSelect.options].filter((o) => o.value.startsWith('attr:')).map((o) => o.value.slice(5));
  if (existing.join('\n') !== [...attrs].sort().join('\n')) {
    for (const o of [...groupSelect.options]) if (o.value.startsWith('attr:')) o.remove();
    for (const name of [...attrs].sort()) {
      const o = document.createElement('option');
      o.value = `attr:${name}`;
      o.textContent = `attribute ${name}`;
      groupSelect.append(o);
    }
  }
  groupSelect.value = current;
}
groupSelect.addEventListener('focus', refreshGroupOptions);
groupSelect.addEventListener('pointerdown', refreshGroupOptions);
groupSelect.addEventListener('change', () => {
  problems.setGroup(groupSelect.value);
  render();
});
refreshGroupOptions();

$('show-more').addEventListener('click', () => {
  problems.limit += RENDER_STEP * 5;
  render.now();
  resolveSince();
});

// ---------------------------------------------------------------------------------------------
// Views: Problems / Grid / Silences, as tabs, kept in the URL as ?view=

const VIEWS = ['problems', 'grid', 'silences'];
const tabs = [...document.querySelectorAll('.tabs [role="tab"]')];
let currentView = VIEWS.includes(urlParam('view')) ? urlParam('view') : 'problems';

function setView(next, { focus = false } = {}) {
  currentView = VIEWS.includes(next) ? next : 'problems';
  for (const tab of tabs) {
    const on = tab.dataset.view === currentView;
    tab.setAttribute('aria-selected', String(on));
    tab.tabIndex = on ? 0 : -1;
    if (on && focus) tab.focus();
  }
  $('problems-panel').hidden = currentView !== 'problems';
  $('grid-panel').hidden = currentView !== 'grid';
  $('silences-panel').hidden = currentView !== 'silences';
  document.body.dataset.view = currentView;
  if (currentView === 'grid' && !grid.grid.built && model.haveSnapshot) grid.rebuild();
  setUrlParam('view', currentView === 'problems' ? '' : currentView);
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
// Keyboard

document.addEventListener('keydown', (e) => {
  if (e.ctrlKey || e.metaKey || e.altKey) return;
  const t = e.target;
  const typing = t instanceof HTMLElement
    && (t.isContentEditable || t.tagName === 'INPUT' || t.tagName === 'TEXTAREA' || t.tagName === 'SELECT');
  if (typing) {
    if (e.key === 'Escape' && selectedKey && t.closest('#details')) details.close();
    return;
  }
  if (e.key === 'Escape' && selectedKey) {
    details.close();
  } else if (e.key === '/') {
    e.preventDefault();
    filter.input.focus();
    filter.input.select();
  } else if (e.key === 'p') {
    log.togglePause();
  } else if (e.key === 'g') {
    setView(currentView === 'grid' ? 'problems' : 'grid');
  }
});

// Keep "time in state" current. Only text that changed is written.
setInterval(() => {
  if (document.hidden) return;
  const now = Date.now();
  problems.tickAges(now);
  details.tick(now);
}, 1000);

// Hooks for the browser tests and for curious engineers in the console (read-only data).
window.statecast = {
  get connected() { return live; },
  get connection() { return conn.state; },
  get problems() { return problems.order.map((e) => e.event); },
  get counts() { return model.handledCounts(); },
  get seq() { return model.seq; },
  get querySupport() { return filter.support; },
  get view() { return currentView; },
  /** Rate series: { events: [[ms, events/s]…], changes: [[ms, changes/min]…] } (copies). */
  get rates() { return { events: chart.rates.events.map((p) => [...p]), changes: chart.rates.changes.map((p) => [...p]) }; },
  get gridSize() { return { hosts: grid.grid.hosts.length, services: grid.grid.services.length, builtRows: grid.grid.builtRows }; },
  /** Notifications decided so far: [{ kind, title, body, at }]. */
  get notifications() { return notifications.sent.map((n) => ({ ...n })); },
  isFlapping(host, service) { return notifications.isFlapping(JSON.stringify([host ?? null, service ?? null])); },
  get acks() { return [...model.acks.values()]; },
  get silences() { return model.silences.map((s) => ({ ...s })); },
  splitKey,
};

setView(currentView);
render.now();
conn.start();
